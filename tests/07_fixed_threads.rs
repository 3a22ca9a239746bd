//! Lesson 07: the fixed set of worker threads sharing one listener, as a real program.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::transcript::{self, Normaliser};
use support::*;

const SERVER: &str = env!("CARGO_BIN_EXE_07_fixed_threads_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_07_fixed_threads_client");
const DEFAULT_PORT: u16 = 8081;

fn normaliser(exited: &Exited) -> Normaliser {
    Normaliser::new()
        .port(exited.listening_port(), DEFAULT_PORT)
        .renumber(r"worker-(\d+)")
}

/// The worker named in a log line like `worker-3: connected ...`.
fn worker_of(line: &str) -> String {
    line.split(':').next().unwrap_or_default().to_string()
}

#[test]
fn client_transcript_four_connections_three_workers() {
    let mut server = Server::start(SERVER, &["--threads", "3", "--quiet"]);
    let port = server.port().to_string();
    let client = run(
        CLIENT,
        &["--port", &port, "--conns", "4", "--hold", "1"],
        b"",
    );
    assert!(client.status.success(), "{}", client.stderr);
    let lines: Vec<&str> = client.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", client.stdout);
    // The first three were echoed at once; the fourth only after a worker was free,
    // that is after one of the first three had held its connection for 1 s.
    let seconds: Vec<f64> = lines
        .iter()
        .map(|line| {
            let after = line.split("after ").nth(1).unwrap();
            after.trim_end_matches(" s").parse().unwrap()
        })
        .collect();
    assert!(seconds[3] >= 1.0, "{}", client.stdout);
    assert!(
        seconds[..3].iter().all(|s| *s < seconds[3]),
        "{}",
        client.stdout
    );
    server.drain();
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);

    let normal = Normaliser::new()
        .port(exited.listening_port(), DEFAULT_PORT)
        .pattern(r"after 0\.\d s", "after 0.0 s")
        .pattern(r"after [1-9]\.\d s", "after 1.0 s");
    transcript::check(
        "07_client",
        &normal.apply(&format!(
            "$ cargo run --bin 07_fixed_threads_server -- --threads 3   # terminal 1\n\
             $ cargo run --bin 07_fixed_threads_client -- --conns 4 --hold 1\n{}",
            client.stdout
        )),
    );
}

/// Three held connections are served by three different workers; a fourth waits
/// until one closes, and is then served by the worker that became free.
#[test]
fn three_workers_busy_and_a_fourth_waits() {
    let mut server = Server::start(SERVER, &["--threads", "3"]);
    let mut held = Vec::new();
    let mut workers = Vec::new();
    for index in 0..3 {
        let mut stream = connect(server.addr);
        echo::round_trip(&mut stream, format!("held {index}\n").as_bytes());
        workers.push(worker_of(&server.wait_for_line("connected")));
        held.push(stream);
    }
    let mut distinct = workers.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{workers:?}");

    let mut fourth = connect(server.addr);
    fourth.write_all(b"fourth\n").unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        fourth.read(&mut byte).is_err(),
        "the fourth was echoed with every worker busy"
    );
    assert!(!server.drain().iter().any(|line| line.contains("connected")));

    let first = held.remove(0);
    drop(first);
    fourth.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_exactly(&mut fourth, 7), b"fourth\n");
    let fourth_worker = worker_of(&server.wait_for_line("connected"));
    assert_eq!(
        fourth_worker, workers[0],
        "the freed worker takes the next connection"
    );
    // Closed one at a time, so that the log (and the book's transcript) has one order.
    server.wait_for_line("received 7 bytes");
    drop(fourth);
    server.wait_for_line("disconnected");
    for stream in held {
        drop(stream);
        server.wait_for_line("disconnected");
    }
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    transcript::check(
        "07_server",
        &normaliser(&exited).apply(&format!(
            "$ cargo run --bin 07_fixed_threads_server -- --threads 3\n{}",
            exited
                .stdout
                .replace("\nshutting down", "\n^Cshutting down")
        )),
    );
}

#[test]
fn an_idle_connection_does_not_block_others() {
    echo::idle_does_not_block(SERVER, &["--quiet"]);
}

#[test]
fn a_flood_without_reading_is_bounded() {
    echo::flood_without_reading(SERVER, &["--quiet"], None);
}

#[test]
fn four_mib_payload_echoed_intact() {
    echo::large_payload(SERVER, &["--quiet"], 4 << 20);
}

#[test]
fn resets_and_half_close() {
    echo::resets_and_half_close(SERVER, &[]);
}

#[test]
fn no_descriptor_or_thread_leak_after_100_clients() {
    echo::no_descriptor_leak(SERVER, &["--quiet"]);
}

#[test]
fn survives_a_low_descriptor_limit() {
    // More workers than descriptors: each worker waiting in accept(2) holds one
    // (see each_waiting_accept_holds_a_descriptor), so some meet EMFILE at once and
    // the 100 connections meet it too.
    echo::survives_fd_limit(SERVER, &["--quiet", "--threads", "70"]);
}

#[test]
fn sigint_wakes_every_worker_and_ends_busy_connections() {
    let mut server = Server::start(SERVER, &["--threads", "4"]);
    let mut busy = connect(server.addr);
    echo::round_trip(&mut busy, b"busy\n");
    server.wait_for_line("received");
    let threads = server.threads();
    assert!(threads >= 6, "main, signal and four workers: {threads}");
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    assert!(
        exited.stdout.contains("with 4 workers, all joined"),
        "{}",
        exited.stdout
    );
    assert!(read_to_eof(&mut busy).is_empty());
}

#[test]
fn contract_server() {
    contract::server_reports_port_in_use(SERVER, &[]);
    contract::server_reports_bad_host(SERVER);
    contract::rejects_bad_flags(SERVER);
    assert_usage_error(&run(SERVER, &["--threads", "0"], b""));
    contract::server_stops_on(SERVER, &[], SIGINT);
    contract::server_stops_on(SERVER, &["--quiet"], SIGTERM);
}

#[test]
fn contract_client() {
    contract::rejects_bad_flags(CLIENT);
    contract::client_reports_no_server(CLIENT, "07_fixed_threads_server", &[]);
}

/// Linux reserves a descriptor number for every thread blocked in accept(2), before
/// any client comes: 80 idle workers under a limit of 64 descriptors meet EMFILE with
/// nobody connected. The server goes on, and the book shows its first lines.
#[test]
fn each_waiting_accept_holds_a_descriptor() {
    let mut server = Server::start_with_fd_limit(SERVER, &["--threads", "80"], 64);
    let first_error = server.wait_for_line("Too many open files");
    assert!(first_error.starts_with("error: worker-"), "{first_error}");
    let second_error = server.wait_for_line("Too many open files");
    // Still serving: a connection is taken by one of the workers that did get a number.
    let mut client = connect(server.addr);
    echo::round_trip(&mut client, b"still served\n");
    drop(client);
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    let normal = normaliser(&exited);
    let shown: Vec<&str> = exited.stdout.lines().take(2).collect();
    transcript::check(
        "07_reserved_fds",
        &normal.apply(&format!(
            "$ ulimit -n 64\n$ cargo run --bin 07_fixed_threads_server -- --threads 80\n{}\n{first_error}\n{second_error}\n...\n",
            shown.join("\n")
        )),
    );
}

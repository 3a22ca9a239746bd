//! Lesson 06: the thread-per-connection echo server, run as a real program.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use support::transcript::{self, Normaliser};
use support::*;

const SERVER: &str = env!("CARGO_BIN_EXE_06_threaded_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_06_threaded_client");
const DEFAULT_PORT: u16 = 8080;

fn normaliser(exited: &Exited) -> Normaliser {
    Normaliser::new().port(exited.listening_port(), DEFAULT_PORT)
}

#[test]
fn held_client_and_another_served_meanwhile() {
    let mut server = Server::start(SERVER, &[]);
    let port = server.port().to_string();
    let mut holder = Interactive::start(
        CLIENT,
        &["--port", &port, "--conns", "1", "--hold", "30", "late"],
    );
    assert_eq!(holder.expect_line(), "holding 1 idle connections for 30 s");
    server.wait_for_line("connected");
    let other = run(
        CLIENT,
        &["--port", &port, "--conns", "1", "served meanwhile"],
        b"",
    );
    assert!(other.status.success(), "{}", other.stderr);
    assert_eq!(other.stdout.lines().count(), 1, "{}", other.stdout);
    server.wait_for_line("disconnected");
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    assert!(
        exited
            .stdout
            .contains("served 2 clients, all threads joined")
    );
    drop(holder);

    transcript::check(
        "06_hold",
        &normaliser(&exited).apply(&format!(
            "# terminal 2: one connection that stays idle for 30 s\n\
             $ cargo run --bin 06_threaded_client -- --conns 1 --hold 30 late\n\
             holding 1 idle connections for 30 s\n\
             \n\
             # terminal 3, meanwhile: another connection, served at once\n\
             $ cargo run --bin 06_threaded_client -- --conns 1 \"served meanwhile\"\n\
             {}\n\
             # terminal 1: the server, stopped with Ctrl-C while terminal 2 still holds\n\
             $ cargo run --bin 06_threaded_server\n\
             {}",
            other.stdout,
            exited
                .stdout
                .replace("\nshutting down", "\n^Cshutting down")
        )),
    );
}

#[test]
fn max_threads_makes_the_next_client_wait_in_the_backlog() {
    let mut server = Server::start(SERVER, &["--max-threads", "2"]);
    let mut first = connect(server.addr);
    let mut second = connect(server.addr);
    echo::round_trip(&mut first, b"one\n");
    echo::round_trip(&mut second, b"two\n");
    server.wait_for_line("conn-2");
    server.drain();
    // The third connects (the kernel queues it) and sends, but is not served...
    let mut third = connect(server.addr);
    third.write_all(b"three\n").unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = std::io::Read::read(&mut third, &mut byte);
    assert!(
        early.is_err(),
        "the third client was answered while two were live"
    );
    assert_eq!(
        server
            .drain()
            .iter()
            .filter(|l| l.starts_with("connected"))
            .count(),
        0,
        "a third connection was accepted"
    );
    // ...until one of the first two leaves.
    drop(first);
    third.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_exactly(&mut third, 6), b"three\n");
    let log = server.seen.join("\n");
    let third_in = server.wait_for_line("conn-3");
    assert!(third_in.contains("live 2"), "{third_in}\n{log}");
}

#[test]
fn two_hundred_connections_at_once() {
    echo::many_at_once(SERVER, &["--quiet"], 200);
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
    echo::survives_fd_limit(SERVER, &["--quiet"]);
}

#[test]
fn accept_errors_are_logged_at_most_once_a_second() {
    echo::accept_errors_are_rate_limited(SERVER, &["--quiet"]);
}

#[test]
fn sigint_with_busy_and_idle_connections() {
    let mut server = Server::start(SERVER, &[]);
    let mut idle = connect(server.addr);
    // A client that sends a lot and never reads: its thread ends up blocked in write.
    let mut flooder = connect(server.addr);
    let flooding = std::thread::spawn(move || {
        let chunk = vec![b'f'; 1 << 16];
        // Fails once the server cuts the connection; that is the point.
        for _ in 0..512 {
            if flooder.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    server.wait_for_line("conn-2");
    server.wait_for_line("received");
    let threads_before = server.threads();
    assert!(
        threads_before >= 5,
        "main, signal, log writer and two connection threads: {threads_before}"
    );
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    assert!(
        exited.stdout.contains("all threads joined"),
        "{}",
        exited.stdout
    );
    assert!(read_to_eof(&mut idle).is_empty());
    flooding.join().unwrap();
}

#[test]
fn contract_server() {
    contract::server_reports_port_in_use(SERVER, &[]);
    contract::server_reports_bad_host(SERVER);
    contract::rejects_bad_flags(SERVER);
    assert_usage_error(&run(SERVER, &["--max-threads", "0"], b""));
    contract::server_stops_on(SERVER, &[], SIGINT);
    contract::server_stops_on(SERVER, &["--quiet"], SIGTERM);
}

// The log must never stop the server: `06_threaded_server | head -1` closes its stdout
// after the first line; a pipe nobody reads stalls it. `--quiet` too, where the
// reset client's `error:` line is the only one after the first.

/// Traffic that makes the server log more than a pipe holds (64 KiB): with stdout
/// stalled, a write to it would block.
fn log_more_than_a_pipe_holds(addr: SocketAddr) {
    for _ in 0..3 {
        echo::busy_with_logging(addr);
    }
}

#[test]
fn serves_and_stops_with_stdout_closed() {
    contract::survives_closed_stdout(SERVER, &[], echo::busy_with_logging);
}

#[test]
fn serves_and_stops_with_stdout_closed_quiet() {
    contract::survives_closed_stdout(SERVER, &["--quiet"], echo::busy_with_logging);
}

#[test]
fn serves_and_stops_with_stdout_stalled() {
    contract::survives_stalled_stdout(SERVER, &[], log_more_than_a_pipe_holds);
}

#[test]
fn serves_and_stops_with_stdout_stalled_quiet() {
    contract::survives_stalled_stdout(SERVER, &["--quiet"], echo::busy_with_logging);
}

#[test]
fn contract_client() {
    contract::rejects_bad_flags(CLIENT);
    contract::client_reports_no_server(CLIENT, "06_threaded_server", &[]);
}

//! Lesson 05: the poll echo server and the many-connection client, run as real programs.

mod support;

use support::transcript::{self, Normaliser};
use support::*;
use workbook::log;

const SERVER: &str = env!("CARGO_BIN_EXE_05_poll_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_05_poll_client");
const DEFAULT_PORT: u16 = 8009;

#[test]
fn client_transcript() {
    let mut server = Server::start(SERVER, &[]);
    let port = server.port().to_string();
    let client = run(
        CLIENT,
        &["--port", &port, "--conns", "3", "hello", "world"],
        b"",
    );
    assert!(client.status.success(), "{}", client.stderr);
    let lines: Vec<&str> = client.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", client.stdout);
    for (index, line) in lines.iter().enumerate() {
        let word = if index < 3 { "hello" } else { "world" };
        assert!(
            line.starts_with(&format!("conn {} (127.0.0.1:", index % 3 + 1)),
            "{line}"
        );
        assert!(line.ends_with(&format!("): {word}")), "{line}");
    }
    for _ in 0..3 {
        server.wait_for_line(log::DISCONNECTED);
    }
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    assert!(
        exited.stdout.contains("served 3 clients"),
        "{}",
        exited.stdout
    );

    let normal = Normaliser::new().port(exited.listening_port(), DEFAULT_PORT);
    transcript::check(
        "05_client",
        &normal.apply(&format!(
            "$ cargo run --bin 05_poll_client -- --conns 3 hello world\n{}",
            client.stdout
        )),
    );
    transcript::check(
        "05_server",
        &normal.apply(&format!(
            "$ cargo run --bin 05_poll_server\n{}",
            exited
                .stdout
                .replace("\nshutting down", "\n^Cshutting down")
        )),
    );
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
fn held_client_does_not_block_another_client() {
    let mut server = Server::start(SERVER, &[]);
    let port = server.port().to_string();
    let mut holder = Interactive::start(CLIENT, &["--port", &port, "--hold", "30", "late"]);
    assert_eq!(holder.expect_line(), "holding 3 idle connections for 30 s");
    for _ in 0..3 {
        server.wait_for_line(log::CONNECTED);
    }
    let other = run(
        CLIENT,
        &["--port", &port, "--conns", "1", "not waiting"],
        b"",
    );
    assert!(other.status.success(), "{}", other.stderr);
    assert!(
        other.stdout.ends_with("): not waiting\n"),
        "{}",
        other.stdout
    );
    server.wait_for_line(log::DISCONNECTED);
    // Stopped while the idle connections are still open: it closes them itself.
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    assert!(exited.stdout.contains("closed 3 connections still open"));
    drop(holder);
    let normal = Normaliser::new().port(exited.listening_port(), DEFAULT_PORT);
    transcript::check(
        "05_hold",
        &normal.apply(&format!(
            "# terminal 2: three connections that stay idle\n\
             $ cargo run --bin 05_poll_client -- --hold 30 late\n\
             holding 3 idle connections for 30 s\n\
             \n\
             # terminal 3, meanwhile: served at once\n\
             $ cargo run --bin 05_poll_client -- --conns 1 \"not waiting\"\n\
             {}\n\
             # terminal 1: the server, stopped with Ctrl-C while terminal 2 still holds\n\
             $ cargo run --bin 05_poll_server\n\
             {}",
            other.stdout,
            exited
                .stdout
                .replace("\nshutting down", "\n^Cshutting down")
        )),
    );
}

#[test]
fn a_flood_without_reading_is_bounded() {
    echo::flood_without_reading(SERVER, &[], Some("not reading until the client reads"));
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
fn no_descriptor_leak_after_100_clients() {
    echo::no_descriptor_leak(SERVER, &["--quiet"]);
}

#[test]
fn survives_a_low_descriptor_limit() {
    echo::survives_fd_limit(SERVER, &["--quiet"]);
}

/// `server | head -1`: the log can no longer be written, and the server serves on
/// and stops on SIGINT with status 0.
#[test]
fn survives_closed_stdout() {
    contract::survives_closed_stdout(SERVER, &[], echo::busy_with_logging);
}

/// The same with `--quiet`, where a client's reset is the one line logged.
#[test]
fn survives_closed_stdout_quiet_with_a_reset() {
    contract::survives_closed_stdout(SERVER, &["--quiet"], echo::busy_with_logging);
}

/// stdout is a pipe nobody reads: the log backs up, the server does not.
#[test]
fn survives_stalled_stdout() {
    contract::survives_stalled_stdout(SERVER, &[], echo::busy_with_logging);
}

#[test]
fn slow_reader_memory_stays_bounded() {
    echo::slow_reader_memory_stays_bounded(SERVER, &["--quiet"]);
}

#[test]
fn contract_server() {
    contract::server_reports_port_in_use(SERVER, &[]);
    contract::server_reports_bad_host(SERVER);
    contract::rejects_bad_flags(SERVER);
    contract::server_stops_on(SERVER, &[], SIGINT);
    contract::server_stops_on(SERVER, &["--quiet"], SIGTERM);
}

#[test]
fn sigterm_with_connections_open_closes_them() {
    let mut server = Server::start(SERVER, &[]);
    let mut a = connect(server.addr);
    let mut b = connect(server.addr);
    echo::round_trip(&mut a, b"one\n");
    echo::round_trip(&mut b, b"two\n");
    server.wait_for_line(log::RECEIVED);
    let exited = server.stop(SIGTERM);
    assert_clean_shutdown(&exited);
    assert!(
        exited.stdout.contains("closed 2 connections still open"),
        "{}",
        exited.stdout
    );
    assert!(read_to_eof(&mut a).is_empty());
    assert!(read_to_eof(&mut b).is_empty());
}

#[test]
fn contract_client() {
    contract::rejects_bad_flags(CLIENT);
    contract::client_reports_no_server(CLIENT, "05_poll_server", &[]);
    let port = closed_port().to_string();
    let bad = run(CLIENT, &["--port", &port, "--conns", "0"], b"");
    assert_usage_error(&bad);
}

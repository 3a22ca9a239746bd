//! Lesson 08: the epoll event-loop echo server, level- and edge-triggered, run as a
//! real program. Every echo check runs in both modes.

mod support;

use support::transcript::{self, Normaliser};
use support::*;

const SERVER: &str = env!("CARGO_BIN_EXE_08_event_loop_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_08_event_loop_client");
const DEFAULT_PORT: u16 = 10008;

/// The server's flags in level-triggered and in edge-triggered mode.
const MODES: [&[&str]; 2] = [&[], &["--edge"]];

/// A mode's flags followed by `more`.
fn with<'a>(mode: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    mode.iter().chain(more).copied().collect()
}

#[test]
fn client_transcript_in_both_modes() {
    for (mode, name) in MODES.iter().zip(["08_level", "08_edge"]) {
        let mut server = Server::start(SERVER, mode);
        let port = server.port().to_string();
        let client = run(CLIENT, &["--port", &port, "--conns", "2", "hello"], b"");
        assert!(client.status.success(), "{}", client.stderr);
        assert_eq!(client.stdout.lines().count(), 2, "{}", client.stdout);
        server.wait_for_line("disconnected");
        server.wait_for_line("disconnected");
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(
            exited.stdout.contains("served 2 clients"),
            "{}",
            exited.stdout
        );
        let command = if mode.is_empty() {
            "$ cargo run --bin 08_event_loop_server".to_string()
        } else {
            "$ cargo run --bin 08_event_loop_server -- --edge".to_string()
        };
        // Terminal 1 starts the server (its first two lines), terminal 2 runs the
        // client, then terminal 1 shows the rest of the log and Ctrl-C.
        let log = exited
            .stdout
            .replace("\nshutting down", "\n^Cshutting down");
        let mut lines = log.splitn(3, '\n');
        let started = [lines.next(), lines.next()].map(Option::unwrap_or_default);
        let rest = lines.next().unwrap_or_default();
        let normal = Normaliser::new().port(exited.listening_port(), DEFAULT_PORT);
        transcript::check(
            name,
            &normal.apply(&format!(
                "# terminal 1\n{command}\n{}\n{}\n\n\
                 # terminal 2\n$ cargo run --bin 08_event_loop_client -- --conns 2 hello\n{}\n\
                 # terminal 1\n{rest}",
                started[0], started[1], client.stdout,
            )),
        );
    }
}

#[test]
fn two_hundred_connections_at_once() {
    for mode in MODES {
        echo::many_at_once(SERVER, &with(mode, &["--quiet"]), 200);
    }
}

#[test]
fn an_idle_connection_does_not_block_others() {
    for mode in MODES {
        echo::idle_does_not_block(SERVER, &with(mode, &["--quiet"]));
    }
}

#[test]
fn a_flood_without_reading_is_bounded() {
    for mode in MODES {
        echo::flood_without_reading(SERVER, &with(mode, &["--quiet"]), None);
    }
}

#[test]
fn four_mib_payload_echoed_intact() {
    for mode in MODES {
        echo::large_payload(SERVER, &with(mode, &["--quiet"]), 4 << 20);
    }
}

#[test]
fn resets_and_half_close() {
    for mode in MODES {
        echo::resets_and_half_close(SERVER, mode);
    }
}

#[test]
fn no_descriptor_leak_after_100_clients() {
    for mode in MODES {
        echo::no_descriptor_leak(SERVER, &with(mode, &["--quiet"]));
    }
}

#[test]
fn survives_a_low_descriptor_limit() {
    for mode in MODES {
        echo::survives_fd_limit(SERVER, &with(mode, &["--quiet"]));
    }
}

#[test]
fn sigterm_with_connections_open_closes_them() {
    for mode in MODES {
        let mut server = Server::start(SERVER, mode);
        let mut a = connect(server.addr);
        let mut b = connect(server.addr);
        echo::round_trip(&mut a, b"one\n");
        echo::round_trip(&mut b, b"two\n");
        server.wait_for_line("received");
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
}

#[test]
fn contract_server() {
    contract::server_reports_port_in_use(SERVER, &[]);
    contract::server_reports_bad_host(SERVER);
    contract::rejects_bad_flags(SERVER);
    contract::server_stops_on(SERVER, &[], SIGINT);
    contract::server_stops_on(SERVER, &["--edge", "--quiet"], SIGTERM);
}

#[test]
fn contract_client() {
    contract::rejects_bad_flags(CLIENT);
    contract::client_reports_no_server(CLIENT, "08_event_loop_server", &[]);
}

#[test]
fn a_slow_reader_does_not_grow_the_memory() {
    for mode in MODES {
        echo::slow_reader_memory_stays_bounded(SERVER, &with(mode, &["--quiet"]));
    }
}

/// More log than a pipe holds (64 KiB): one round of `echo::busy_with_logging` makes
/// this server log about 50 KB, so three rounds.
fn busy_with_logging(addr: std::net::SocketAddr) {
    for _ in 0..3 {
        echo::busy_with_logging(addr);
    }
}

#[test]
fn survives_a_closed_stdout() {
    for mode in MODES {
        contract::survives_closed_stdout(SERVER, mode, busy_with_logging);
    }
}

#[test]
fn survives_a_stalled_stdout() {
    for mode in MODES {
        contract::survives_stalled_stdout(SERVER, mode, busy_with_logging);
    }
}

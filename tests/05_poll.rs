//! Lesson 05: the poll echo server and its client, run as real programs.
//!
//! - `mod protocol`: the echo protocol (the same checks `cargo run -- check 05` runs).
//! - `mod lesson`: this server's own promises: its log, its bounds, its shutdown.
//! - `mod exercises`: the chapter's exercises, `#[ignore]`d; each fails until done
//!   (`cargo run -- exercise 05.K`).

mod support;

use std::io::Write;
use std::thread;

use support::echo::{self, round_trip};
use support::*;
use workbook::echo_connection::OUTPUT_FULL;
use workbook::log;

const SERVER: &str = env!("CARGO_BIN_EXE_05_poll_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_05_poll_client");
const DEFAULT_PORT: u16 = 8009;

mod protocol {
    //! What any echo server must do on the wire: `workbook::protocol`'s checks for
    //! lesson 05, and more connections at once than they open.

    use super::*;

    #[test]
    fn echo_protocol() {
        support::protocol::all_checks_pass(5, SERVER, &[]);
    }

    /// Ten times the connections of the shared check, all sending before any reads.
    #[test]
    fn two_hundred_connections_at_once() {
        echo::many_at_once(SERVER, &["--quiet"], 200);
    }
}

mod lesson {
    //! This server's own promises: what it logs, the bounds it keeps, how it stops.

    use super::*;

    #[test]
    fn client_transcript() {
        echo::client_and_server_transcripts("05_poll", SERVER, CLIENT, DEFAULT_PORT);
    }

    #[test]
    fn held_client_does_not_block_another_client() {
        echo::held_clients_transcript("05_poll", SERVER, CLIENT, DEFAULT_PORT);
    }

    #[test]
    fn a_flood_without_reading_is_bounded() {
        echo::flood_without_reading(SERVER, &[], Some(OUTPUT_FULL));
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
    fn keeps_its_last_line_with_a_slow_stdout() {
        contract::keeps_its_last_line_with_a_slow_stdout(SERVER, &[], echo::many_small_round_trips);
    }

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
        echo::sigterm_closes_open_connections(SERVER);
    }

    #[test]
    fn contract_client() {
        contract::rejects_bad_flags(CLIENT);
        contract::client_reports_no_server(CLIENT, "05_poll_server", &[]);
        let port = closed_port().to_string();
        let bad = run(CLIENT, &["--port", &port, "--conns", "0"], b"");
        assert_usage_error(&bad);
        // More connections than the descriptor limit allows: a usage error that says
        // so, not an abort on allocating room for them (src/echo_client.rs).
        let absurd = run(
            CLIENT,
            &["--port", &port, "--conns", "100000000000000"],
            b"",
        );
        assert_usage_error(&absurd);
        assert!(absurd.stderr.contains("hard limit"), "{}", absurd.stderr);
    }
}

mod exercises {
    //! The chapter's exercises: each test fails on the lesson as shipped and passes
    //! once the exercise is done. Run one with `cargo run -- exercise 05.K` or
    //! `cargo test --test 05_poll -- --ignored exercise_K`.

    use super::*;

    /// 05.1: `--read-size BYTES` sets how much one read may take. With one byte per
    /// read, the protocol checks still pass (poll is level-triggered). The 4 MiB
    /// check is left out (a read, a write and a poll per byte take half a minute);
    /// 256 KiB stand in for it.
    #[test]
    #[ignore]
    fn exercise_1_read_size_one() {
        use workbook::protocol::{self, Target};
        const ONE_BYTE: &[&str] = &["--quiet", "--read-size", "1"];
        let server = Server::start(SERVER, ONE_BYTE);
        let mut target = Target::new(server.addr);
        target.timeout = WAIT;
        let checks = protocol::checks(5).expect("lesson 05 has protocol checks");
        for check in checks.iter().filter(|check| check.name != "echo-large") {
            if let Err(why) = (check.run)(&target) {
                panic!(
                    "protocol check {} ({}), one byte per read:\n  {why}",
                    check.name, check.about
                );
            }
        }
        echo::large_payload(SERVER, ONE_BYTE, 256 << 10);
    }

    /// 05.2: `--send-timeout SECS` closes a connection whose echo has been waiting
    /// that long without a byte of it going out (a client that sends and never
    /// reads); the others are served meanwhile and after.
    #[test]
    #[ignore]
    fn exercise_2_send_timeout() {
        let mut server = Server::start(SERVER, &["--send-timeout", "1"]);
        let flooder = connect(server.addr);
        let me = flooder.local_addr().unwrap();
        let mut writer = flooder.try_clone().unwrap();
        // Writes until the server closes the connection (a reset or a broken pipe):
        // this thread never reads.
        writer.set_write_timeout(None).unwrap();
        let writing = thread::spawn(move || {
            let chunk = vec![b'f'; 1 << 16];
            while writer.write_all(&chunk).is_ok() {}
        });
        let mut other = connect(server.addr);
        round_trip(&mut other, b"served while the flooder floods\n");
        server.wait_for_line(&format!("{} {me} ->", log::DISCONNECTED));
        writing.join().unwrap();
        round_trip(&mut other, b"and after it is gone\n");
        drop(flooder);
    }
}

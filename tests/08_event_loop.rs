//! Lesson 08: the epoll event-loop echo server, level- and edge-triggered, run as a
//! real program; and the chapter's first version, `08_event_loop_minimal`, run to
//! show each way it breaks.
//!
//! - `mod protocol`: the echo protocol (the same checks `cargo run -- check 08` runs),
//!   in both epoll modes.
//! - `mod lesson`: this server's own promises: its log, its bounds, its shutdown.
//! - `mod minimal`: each failure of the first version that the chapter shows; a test
//!   passes when the failure is observed.
//! - `mod exercises`: the chapter's exercises, `#[ignore]`d; each fails until done
//!   (`cargo run -- exercise 08.K`).

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use support::echo::{self, eventually, round_trip};
use support::transcript::{self, Normaliser};
use support::*;
use workbook::log;

const SERVER: &str = env!("CARGO_BIN_EXE_08_event_loop_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_08_event_loop_client");
const MINIMAL: &str = env!("CARGO_BIN_EXE_08_event_loop_minimal");
const WORKBOOK: &str = env!("CARGO_BIN_EXE_workbook");
const DEFAULT_PORT: u16 = 10008;

/// The server's flags in level-triggered and in edge-triggered mode.
const MODES: [&[&str]; 2] = [&[], &["--edge"]];

/// A mode's flags followed by `more`.
fn with<'a>(mode: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    mode.iter().chain(more).copied().collect()
}

/// The system call the process's main thread is sleeping in: the first field of
/// /proc/PID/syscall (`running` when it is not in one, so `None`).
fn sleeping_in(pid: u32) -> Option<nix::libc::c_long> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    text.split_whitespace().next()?.parse().ok()
}

/// Is the server's main thread waiting in epoll_wait(2), its loop done with
/// everything that happened?
fn waiting_for_events(pid: u32) -> bool {
    let number = sleeping_in(pid);
    #[cfg(target_arch = "x86_64")]
    if number == Some(nix::libc::SYS_epoll_wait) {
        return true;
    }
    number == Some(nix::libc::SYS_epoll_pwait)
}

/// How many bytes from `client` wait unread in the server's receive queue: the
/// `rx_queue` of the server's end of that connection in /proc/net/tcp (IPv4).
fn unread_by_server(server: SocketAddr, client: SocketAddr) -> usize {
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        // local_address, rem_address, st, tx_queue:rx_queue
        .find(|fields| fields.len() > 4 && fields[1] == local && fields[2] == remote)
        .and_then(|fields| fields[4].split(':').nth(1).map(str::to_string))
        .and_then(|rx| usize::from_str_radix(&rx, 16).ok())
        .unwrap_or(0)
}

/// A server's log as terminal 1 shows it: Ctrl-C echoed as `^C` before the last line.
fn as_in_terminal(stdout: &str) -> String {
    stdout.replace(
        &format!("\n{}", log::SHUTTING_DOWN),
        &format!("\n^C{}", log::SHUTTING_DOWN),
    )
}

mod protocol {
    //! What any echo server must do on the wire: `workbook::protocol`'s checks for
    //! lesson 08, once per way the loop can run.

    use super::*;

    #[test]
    fn echo_protocol_level_triggered() {
        support::protocol::all_checks_pass(8, SERVER, &["--quiet"]);
    }

    #[test]
    fn echo_protocol_edge_triggered() {
        support::protocol::all_checks_pass(8, SERVER, &["--edge", "--quiet"]);
    }

    /// Ten times the connections of the shared check, all sending before any reads.
    #[test]
    fn two_hundred_connections_at_once() {
        for mode in MODES {
            echo::many_at_once(SERVER, &with(mode, &["--quiet"]), 200);
        }
    }
}

mod lesson {
    //! This server's own promises: what it logs, the bounds it keeps, how it stops.

    use super::*;

    #[test]
    fn client_transcript_in_both_modes() {
        for (mode, name) in MODES.iter().zip(["08_level", "08_edge"]) {
            let mut server = Server::start(SERVER, mode);
            let port = server.port().to_string();
            let client = run(CLIENT, &["--port", &port, "--conns", "2", "hello"], b"");
            assert!(client.status.success(), "{}", client.stderr);
            assert_eq!(client.stdout.lines().count(), 2, "{}", client.stdout);
            server.wait_for_line(log::DISCONNECTED);
            server.wait_for_line(log::DISCONNECTED);
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
            let log = as_in_terminal(&exited.stdout);
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

    /// A client that sends without ever reading: once its echo fills the output
    /// (OUTPUT_CAP), the server stops reading it, so its bytes wait unread in the
    /// kernel while the server sleeps in epoll_wait, and the server's memory stays
    /// put. Others are served meanwhile, and the whole flood comes back at the end.
    #[test]
    fn a_client_that_never_reads_is_not_read() {
        /// More than the server could take before its output is full: 1 MiB of
        /// output, its send buffer and the client's receive buffer (tcp_wmem and
        /// tcp_rmem at most 4 and 32 MiB here).
        const FLOOD: usize = 64 << 20;
        const MOST_GROWTH_KIB: u64 = 8 * 1024;
        for mode in MODES {
            let server = Server::start(SERVER, &with(mode, &["--quiet"]));
            let rss_start = server.rss_kib();
            let mut flooder = connect(server.addr);
            let flooder_addr = flooder.local_addr().unwrap();
            let mut writer = flooder.try_clone().unwrap();
            // No write timeout: this thread blocks once the server stops reading.
            writer.set_write_timeout(None).unwrap();
            let writing = thread::spawn(move || {
                let chunk = vec![b'f'; 1 << 16];
                let mut written = 0;
                while written < FLOOD && writer.write_all(&chunk).is_ok() {
                    written += chunk.len();
                }
                written
            });
            // Held back: the server waits for events while the client's bytes wait
            // unread (several samples in a row, not one moment between two reads).
            let (pid, mut in_a_row) = (server.pid(), 0);
            let held_back = |in_a_row: &mut usize| {
                let quiet =
                    waiting_for_events(pid) && unread_by_server(server.addr, flooder_addr) > 0;
                *in_a_row = if quiet { *in_a_row + 1 } else { 0 };
                *in_a_row >= 5
            };
            eventually(|| held_back(&mut in_a_row) || writing.is_finished());
            let what = if writing.is_finished() {
                "it took all 64 MiB"
            } else {
                "its bytes never waited unread"
            };
            assert!(
                held_back(&mut in_a_row),
                "with flags {mode:?}: the server keeps reading a client that never reads \
                 ({what}); {}",
                server.last_lines()
            );
            let grown = server.rss_kib().saturating_sub(rss_start);
            assert!(
                grown <= MOST_GROWTH_KIB,
                "with flags {mode:?}: the server grew by {grown} KiB for a client that never reads"
            );
            let mut other = connect(server.addr);
            round_trip(&mut other, b"still served\n");
            // Now the flood is read back, all of it, in order.
            let mut received = 0;
            let mut buffer = vec![0u8; 1 << 16];
            while received < FLOOD {
                let n = flooder.read(&mut buffer).unwrap();
                assert!(n > 0, "the server closed after {received} bytes");
                let want = vec![b'f'; n];
                assert_same_bytes(
                    &buffer[..n],
                    &want,
                    &format!("the flood from byte {received}"),
                );
                received += n;
            }
            assert_eq!(writing.join().unwrap(), FLOOD);
        }
    }

    #[test]
    fn a_slow_reader_does_not_grow_the_memory() {
        for mode in MODES {
            echo::slow_reader_memory_stays_bounded(SERVER, &with(mode, &["--quiet"]));
        }
    }

    #[test]
    fn a_reset_is_logged_and_the_server_goes_on() {
        for mode in MODES {
            let mut server = Server::start(SERVER, mode);
            let mut doomed = connect(server.addr);
            round_trip(&mut doomed, b"about to reset\n");
            reset(doomed);
            let line = server.wait_for_line(log::DISCONNECTED);
            assert!(line.contains("Connection reset by peer"), "{line}");
            let mut next = connect(server.addr);
            round_trip(&mut next, b"still serving\n");
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
            round_trip(&mut a, b"one\n");
            round_trip(&mut b, b"two\n");
            server.wait_for_line(log::RECEIVED);
            let exited = server.stop(SIGTERM);
            assert_clean_shutdown(&exited);
            assert!(
                exited.stdout.contains("closed 2 connections still open"),
                "{}",
                exited.stdout
            );
            assert_same_bytes(&read_to_eof(&mut a), b"", "after SIGTERM, connection a");
            assert_same_bytes(&read_to_eof(&mut b), b"", "after SIGTERM, connection b");
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

    /// More log than a pipe holds (64 KiB): `echo::busy_with_logging` logs about
    /// 150 KB on this server.
    #[test]
    fn survives_a_closed_stdout() {
        for mode in MODES {
            contract::survives_closed_stdout(SERVER, mode, echo::busy_with_logging);
        }
    }

    #[test]
    fn survives_a_stalled_stdout() {
        for mode in MODES {
            contract::survives_stalled_stdout(SERVER, mode, echo::busy_with_logging);
        }
    }
}

mod minimal {
    //! The chapter's first version, lessons/08_event_loop/minimal.rs, broken on
    //! purpose: each test makes one thing happen that the lesson's server survives,
    //! and passes when the minimal server fails as the chapter says.

    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    /// Is the process's (only) thread blocked inside a send?
    fn blocked_in_send(pid: u32) -> bool {
        let number = sleeping_in(pid);
        [nix::libc::SYS_sendto, nix::libc::SYS_write]
            .iter()
            .any(|call| Some(*call) == number)
    }

    #[test]
    fn serves_two_clients_transcript() {
        let mut server = Server::start(MINIMAL, &[]);
        let port = server.port().to_string();
        let client = run(CLIENT, &["--port", &port, "--conns", "2", "hello"], b"");
        assert!(client.status.success(), "{}", client.stderr);
        server.wait_for_line("disconnected");
        server.wait_for_line("disconnected");
        // Ctrl-C kills it (see below): what it printed is all there is.
        let exited = server.stop(SIGINT);
        let (first, rest) = exited.stdout.split_once('\n').unwrap_or_default();
        let normal = Normaliser::new().port(exited.listening_port(), DEFAULT_PORT);
        transcript::check(
            "08_minimal",
            &normal.apply(&format!(
                "# terminal 1\n$ cargo run --bin 08_event_loop_minimal\n{first}\n\n\
                 # terminal 2\n$ cargo run --bin 08_event_loop_client -- --conns 2 hello\n{}\n\
                 # terminal 1\n{rest}",
                client.stdout,
            )),
        );
    }

    /// The minimal version writes the echo with a blocking `write_all`. A client that
    /// sends and never reads fills its receive buffer and the server's send buffer;
    /// then `write_all` waits for it, and so does every other client.
    #[test]
    fn a_client_that_never_reads_freezes_every_client() {
        const FLOOD: usize = 32 << 20;
        let server = Server::start(MINIMAL, &[]);
        let mut flooder = connect(server.addr);
        let mut writer = flooder.try_clone().unwrap();
        // No write timeout: this thread blocks once the server stops reading.
        writer.set_write_timeout(None).unwrap();
        let writing = thread::spawn(move || {
            let chunk = vec![b'f'; 1 << 16];
            let mut written = 0;
            while written < FLOOD && writer.write_all(&chunk).is_ok() {
                written += chunk.len();
            }
            written
        });
        // The server's one thread sleeps in send(2), and stays there (a few samples
        // in a row, so it is not one send that happened to wait a moment).
        let pid = server.pid();
        let mut in_a_row = 0;
        let stuck = eventually(|| {
            in_a_row = if blocked_in_send(pid) {
                in_a_row + 1
            } else {
                0
            };
            in_a_row >= 20
        });
        assert!(stuck, "the minimal server never blocked in send(2)");
        // Another client now gets nothing back: the loop is not running.
        let mut other = connect(server.addr);
        other.write_all(b"anyone there?\n").unwrap();
        other
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut byte = [0u8; 1];
        match other.read(&mut byte) {
            Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock) => {}
            Err(err) if matches!(err.kind(), std::io::ErrorKind::TimedOut) => {}
            got => panic!("the other client was served while the server was stuck: {got:?}"),
        }
        assert!(blocked_in_send(pid), "the server is no longer blocked");
        // The flooder reads at last: write_all finishes, the loop runs again, and the
        // other client gets its echo.
        let reading = thread::spawn(move || {
            let mut received = 0;
            let mut buffer = vec![0u8; 1 << 16];
            while received < FLOOD {
                match flooder.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received += n,
                }
            }
            received
        });
        other.set_read_timeout(Some(WAIT)).unwrap();
        let echo = read_exactly(&mut other, b"anyone there?\n".len());
        assert_same_bytes(&echo, b"anyone there?\n", "the other client's echo");
        let written = writing.join().unwrap();
        assert_eq!(reading.join().unwrap(), written, "the flood's echo");
    }

    /// `client.read(..)?`: one client's reset (ECONNRESET) is returned from `main`,
    /// and the whole server exits.
    #[test]
    fn one_clients_reset_ends_the_server() {
        let server = Server::start(MINIMAL, &[]);
        let mut doomed = connect(server.addr);
        round_trip(&mut doomed, b"about to reset\n");
        reset(doomed);
        let exited = server.wait_for_its_end();
        assert_eq!(exited.status.code(), Some(1), "{exited:?}");
        assert!(
            exited.stderr.contains("Connection reset by peer"),
            "{}",
            exited.stderr
        );
        let normal = Normaliser::new().port(exited.listening_port(), DEFAULT_PORT);
        transcript::check(
            "08_minimal_reset",
            &normal.apply(&format!(
                "# terminal 1\n$ cargo run --bin 08_event_loop_minimal\n{}{}$ echo $?\n{}\n",
                exited.stdout,
                exited.stderr,
                exited.status.code().unwrap_or(-1)
            )),
        );
    }

    /// The same reset, found by the protocol checks: `cargo run -- check 08` against
    /// the minimal server (the chapter's check line).
    #[test]
    fn the_protocol_check_finds_the_reset() {
        let server = Server::start(MINIMAL, &[]);
        let port = server.port().to_string();
        let check = run_front_door(WORKBOOK, &["check", "08", "--port", &port], b"");
        assert_eq!(check.status.code(), Some(1), "{}", check.stderr);
        assert!(
            check.stdout.contains("FAIL echo-after-reset"),
            "{}",
            check.stdout
        );
        let exited = server.wait_for_its_end();
        // Why the check failed depends on a race: the server may still accept the
        // next connection before it reads the reset (the read then finds the
        // connection reset), or may be gone already (connection refused).
        let normal = Normaliser::new()
            .port(exited.listening_port(), DEFAULT_PORT)
            .pattern(r"(?m)^(FAIL echo-after-reset: ).*$", "$1...");
        transcript::check(
            "08_minimal_check",
            &normal.apply(&format!(
                "# terminal 2, with the minimal server in terminal 1\n\
                 $ cargo run -- check 08 --port 10008\n{}",
                check.stdout
            )),
        );
    }

    /// `listener.accept()?`: out of descriptors (EMFILE), the whole server exits.
    #[test]
    fn running_out_of_descriptors_ends_the_server() {
        let server = Server::start_with_fd_limit(MINIMAL, &[], 64);
        let mut streams = Vec::new();
        for _ in 0..100 {
            // Once the server has gone, nobody listens: connecting fails.
            match TcpStream::connect_timeout(&server.addr, WAIT) {
                Ok(stream) => streams.push(stream),
                Err(_) => break,
            }
        }
        let exited = server.wait_for_its_end();
        assert_eq!(
            exited.status.code(),
            Some(1),
            "{} connections; {exited:?}",
            streams.len()
        );
        assert!(
            exited.stderr.contains("Too many open files"),
            "{}",
            exited.stderr
        );
        let normal = Normaliser::new().port(exited.listening_port(), DEFAULT_PORT);
        transcript::check(
            "08_minimal_emfile",
            &normal.apply(&format!(
                "# terminal 1: at most 64 open descriptors\n\
                 $ (ulimit -n 64; exec target/debug/08_event_loop_minimal)\n\
                 {}\n(... a `connected` line for each descriptor left ...)\n{}$ echo $?\n{}\n",
                exited.stdout.lines().next().unwrap_or_default(),
                exited.stderr,
                exited.status.code().unwrap_or(-1)
            )),
        );
    }

    /// No handler for SIGINT: Ctrl-C kills the process where it stands. No last line,
    /// and the status is "killed by signal 2", not 0.
    #[test]
    fn ctrl_c_kills_it_without_a_last_line() {
        let mut server = Server::start(MINIMAL, &[]);
        let mut stream = connect(server.addr);
        round_trip(&mut stream, b"hello\n");
        server.wait_for_line("connected");
        let exited = server.stop(SIGINT);
        assert_eq!(exited.status.signal(), Some(SIGINT as i32), "{exited:?}");
        assert!(
            !exited.stdout.contains(log::SHUTTING_DOWN),
            "{}",
            exited.stdout
        );
        let normal = Normaliser::new().port(exited.listening_port(), DEFAULT_PORT);
        transcript::check(
            "08_minimal_ctrl_c",
            &normal.apply(&format!(
                "# terminal 1\n$ cargo run --bin 08_event_loop_minimal\n{}^C\n$ echo $?\n{}\n",
                exited.stdout,
                // What a shell reports for a process killed by signal N.
                128 + exited.status.signal().unwrap_or(0)
            )),
        );
    }

    /// `println!` panics when stdout is a closed pipe (`08_event_loop_minimal | head
    /// -1`): the next log line after the one `head` took ends the server.
    #[test]
    fn a_closed_stdout_ends_the_server() {
        let mut child = Command::new(MINIMAL)
            .args(["--port", "0"])
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the minimal server");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
        let addr: SocketAddr = first
            .trim()
            .trim_start_matches(log::LISTENING_ON)
            .trim()
            .parse()
            .unwrap_or_else(|err| panic!("bad first line {first:?}: {err}"));
        // `head -1` has its line and exits: the read end of the pipe is closed.
        drop(stdout);
        let mut stream = connect(addr);
        let _ = stream.write_all(b"hello\n");
        let pid = child.id();
        let ended = eventually(|| process_state(pid) == Some('Z'));
        if !ended {
            let _ = child.kill();
        }
        let state = process_state(pid);
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        assert!(
            ended,
            "the server is still running (state {state:?}) with its stdout closed; \
             stderr: {stderr}"
        );
        assert_eq!(status.code(), Some(101), "a panic: {stderr}");
        assert!(
            stderr.contains("failed printing to stdout: Broken pipe"),
            "{stderr}"
        );
        // The connection went with the server: end of file, or a reset.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let panic: Vec<&str> = stderr
            .lines()
            .skip_while(|line| !line.contains("panicked at"))
            .take(2)
            .collect();
        let normal = Normaliser::new()
            .port(addr.port(), DEFAULT_PORT)
            // The thread's id and the place in std differ from run to run and release.
            .pattern(
                r"(?m)thread 'main' (\(\d+\) )?panicked at .*:$",
                "thread 'main' panicked at ...:",
            );
        transcript::check(
            "08_minimal_closed_stdout",
            &normal.apply(&format!(
                "# terminal 1\n$ cargo run --bin 08_event_loop_minimal | head -1\n{}\n\
                 # (a client connects: the server prints `connected` to the closed pipe)\n{}\n",
                first.trim(),
                panic.join("\n")
            )),
        );
        drop(stream);
    }
}

mod exercises {
    //! The chapter's exercises: each test fails on the lesson as shipped and passes
    //! once the exercise is done. Run one with `cargo run -- exercise 08.K` or
    //! `cargo test --test 08_event_loop -- --ignored exercise_K`.

    use super::*;

    /// 08.1: every echo waits for EPOLLOUT, as in lesson 05. The server runs under
    /// strace, which writes each epoll_ctl(2) to a file; ten echoes, one at a time
    /// (the next only once the server waits in epoll_wait again), must cost two
    /// EPOLL_CTL_MOD each: EPOLLOUT on, EPOLLOUT off.
    #[test]
    #[ignore]
    fn exercise_1_every_echo_waits_for_epollout() {
        const ECHOES: usize = 10;
        if !strace_works_with(&["-D", "-q", "-o", "/dev/null", "-e", "trace=epoll_ctl"]) {
            return;
        }
        let trace =
            std::env::temp_dir().join(format!("08-exercise-1-{}.strace", std::process::id()));
        let trace_path = trace.to_string_lossy().into_owned();
        // -D: strace runs as a detached grandchild, so the process started (and sent
        // SIGINT) is the server itself; -o: the calls go to a file.
        let args = [
            "-D",
            "-q",
            "-o",
            &trace_path,
            "-e",
            "trace=epoll_ctl",
            SERVER,
            "--quiet",
        ];
        let server = Server::start("strace", &args);
        let pid = server.pid();
        let mut stream = connect(server.addr);
        for index in 0..ECHOES {
            round_trip(&mut stream, format!("echo {index}\n").as_bytes());
            // Sending the next at once could let the server read it before its
            // output is empty, and then its wants would not change.
            assert!(
                eventually(|| waiting_for_events(pid)),
                "the server never went back to epoll_wait"
            );
        }
        stream.shutdown(Shutdown::Write).unwrap();
        assert_same_bytes(&read_to_eof(&mut stream), b"", "after the half-close");
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        // strace writes its last line once the server is gone.
        let mut calls = String::new();
        let complete = eventually(|| {
            calls = std::fs::read_to_string(&trace).unwrap_or_default();
            calls.contains("+++ exited")
        });
        let _ = std::fs::remove_file(&trace);
        assert!(complete, "strace's trace never ended:\n{calls}");
        let changes = calls.matches("EPOLL_CTL_MOD").count();
        assert!(
            changes >= 2 * ECHOES,
            "{changes} epoll_ctl(EPOLL_CTL_MOD) calls for {ECHOES} echoes; when every echo \
             waits for EPOLLOUT there are two per echo.\nThe calls:\n{calls}"
        );
    }

    /// 08.2: `--idle-timeout SECS` closes a connection that has sent nothing for that
    /// long; one that keeps talking stays.
    #[test]
    #[ignore]
    fn exercise_2_idle_timeout() {
        for mode in MODES {
            let mut server = Server::start(SERVER, &with(mode, &["--idle-timeout", "2"]));
            let mut idle = connect(server.addr);
            let mut talker = connect(server.addr);
            // Four messages half a second apart: never idle for 2 s.
            for index in 0..4 {
                round_trip(&mut talker, format!("still here {index}\n").as_bytes());
                thread::sleep(Duration::from_millis(500));
            }
            // The silent one is closed by the server (end of file).
            assert_same_bytes(&read_to_eof(&mut idle), b"", "the idle connection");
            let line = server.wait_for_line("idle");
            assert!(line.starts_with(log::DISCONNECTED), "{line}");
            round_trip(&mut talker, b"and still served\n");
        }
    }
}

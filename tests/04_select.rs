//! Lesson 04: the select echo server and its client, run as real programs; and the
//! chapter's first version, `04_select_minimal`, run to show each way it breaks.
//!
//! - `mod protocol`: the echo protocol (the same checks `cargo run -- check 04` runs).
//! - `mod lesson`: this server's own promises: its log, its bounds, its shutdown, and
//!   what it does with descriptors select cannot watch.
//! - `mod minimal`: each failure of the first version that the chapter shows; a test
//!   passes when the failure is observed.
//! - `mod exercises`: the chapter's exercises, `#[ignore]`d; each fails until done
//!   (`cargo run -- exercise 04.K`).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use support::echo::{self, eventually, round_trip};
use support::transcript::{self, Normaliser};
use support::*;
use workbook::echo_connection::{OUTPUT_FULL, REFUSED};
use workbook::log;

const SERVER: &str = env!("CARGO_BIN_EXE_04_select_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_04_select_client");
const MINIMAL: &str = env!("CARGO_BIN_EXE_04_select_minimal");
const WORKBOOK: &str = env!("CARGO_BIN_EXE_workbook");
const DEFAULT_PORT: u16 = 10001;

/// select(2) has a bit for each descriptor below this, none above.
const FD_SETSIZE: usize = 1024;
/// Connections the FD_SETSIZE tests open: enough to pass 1024 with room to spare.
const CROWD: usize = 1100;
/// The descriptor limit the FD_SETSIZE tests give the server (`ulimit -n 2048`).
const SERVER_FD_LIMIT: u32 = 2048;

/// This test process holds over a thousand connections at once (besides what the
/// tests running beside it hold), and the server is started with `ulimit -n 2048`,
/// which needs a hard limit of at least that: raise our soft limit if it is lower
/// (many systems start with 1024), or fail saying why.
fn raise_own_fd_limit() {
    const WANT: u64 = 8192;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit(RLIMIT_NOFILE)");
    assert!(
        hard >= u64::from(SERVER_FD_LIMIT),
        "this test needs a hard limit of at least {SERVER_FD_LIMIT} open files \
         (`ulimit -Hn` says {hard}): it opens {CROWD} connections to a server started \
         with `ulimit -n {SERVER_FD_LIMIT}`. Raise the hard limit (e.g. `nofile` in \
         /etc/security/limits.conf, or LimitNOFILE for a systemd service) and run it again."
    );
    if soft < WANT {
        setrlimit(Resource::RLIMIT_NOFILE, WANT.min(hard), hard)
            .expect("setrlimit(RLIMIT_NOFILE) below the hard limit failed");
    }
}

mod protocol {
    //! What any echo server must do on the wire: `workbook::protocol`'s checks for
    //! lesson 04, and more connections at once than they open.

    use super::*;

    #[test]
    fn echo_protocol() {
        support::protocol::all_checks_pass(4, SERVER, &[]);
    }

    /// Ten times the connections of the shared check, all sending before any reads.
    #[test]
    fn two_hundred_connections_at_once() {
        echo::many_at_once(SERVER, &["--quiet"], 200);
    }
}

mod lesson {
    //! This server's own promises: what it logs, the bounds it keeps, how it stops,
    //! and the descriptors from FD_SETSIZE up.

    use super::*;
    use regex::Regex;

    #[test]
    fn client_transcript() {
        echo::client_and_server_transcripts("04_select", SERVER, CLIENT, DEFAULT_PORT);
    }

    #[test]
    fn held_client_does_not_block_another_client() {
        echo::held_clients_transcript("04_select", SERVER, CLIENT, DEFAULT_PORT);
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
        contract::client_reports_no_server(CLIENT, "04_select_server", &[]);
        let port = closed_port().to_string();
        let bad = run(CLIENT, &["--port", &port, "--conns", "0"], b"");
        assert_usage_error(&bad);
    }

    // -----------------------------------------------------------------------------
    // FD_SETSIZE: descriptors from 1024 up cannot be put in an fd_set.
    // -----------------------------------------------------------------------------

    /// What the lesson's server has open before its first client when a learner
    /// starts it from a terminal: 0, 1, 2 (stdin, stdout, stderr), 3 (the listener),
    /// 4 and 5 (the wake-up socket pair). A test run may inherit a few more
    /// descriptors from whatever started `cargo test`; transcripts are renumbered to
    /// this baseline.
    const TERMINAL_BASELINE: usize = 6;

    /// The descriptors open in the server below FD_SETSIZE, and the lowest free one
    /// from FD_SETSIZE up (the number the first refused connection will get).
    fn server_descriptors(server: &Server) -> (usize, usize) {
        let open: Vec<usize> = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .expect("cannot list /proc/PID/fd of the server")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let below = open.iter().filter(|&&fd| fd < FD_SETSIZE).count();
        let first_high = (FD_SETSIZE..)
            .find(|fd| !open.contains(fd))
            .unwrap_or(FD_SETSIZE);
        (below, first_high)
    }

    /// Reads the server's next line, failing the test (with the end of its log and
    /// its stderr, where a panic would be) if none comes within WAIT.
    fn next_server_line(server: &mut Server) -> String {
        server.next_line(WAIT).unwrap_or_else(|| {
            panic!(
                "the server printed nothing more within {WAIT:?}; {}",
                server.last_lines()
            )
        })
    }

    /// `connected ...` for each connection below FD_SETSIZE, then `refused ...` for
    /// each one from FD_SETSIZE up, in the order they connected; returns the lines.
    fn expect_connected_then_refused(
        server: &mut Server,
        watchable: usize,
        refused_fd: usize,
    ) -> Vec<String> {
        let refusal = format!(
            ": descriptor {refused_fd} is not below FD_SETSIZE (1024), select cannot watch it"
        );
        let mut lines = Vec::with_capacity(CROWD);
        for index in 0..CROWD {
            let line = next_server_line(server);
            if index < watchable {
                assert!(
                    line.starts_with(log::CONNECTED)
                        && line.ends_with(&format!("({} open)", plural(index + 1))),
                    "connection {} should have been accepted, got: {line}",
                    index + 1
                );
            } else {
                assert!(
                    line.starts_with(REFUSED) && line.ends_with(&refusal),
                    "connection {} should have been refused, got: {line}",
                    index + 1
                );
            }
            lines.push(line);
        }
        lines
    }

    fn plural(count: usize) -> String {
        if count == 1 {
            "1 connection".to_string()
        } else {
            format!("{count} connections")
        }
    }

    /// Shows counts as they would be from a terminal: a run that inherited `extra`
    /// descriptors accepted `extra` fewer connections below FD_SETSIZE.
    fn renumber(text: &str, extra: usize) -> String {
        let counted = Regex::new(r"\((\d+) connections open\)|\bconn (\d+) \(").unwrap();
        counted
            .replace_all(text, |caps: &regex::Captures| {
                if let Some(n) = caps.get(1) {
                    let n: usize = n.as_str().parse().unwrap();
                    format!("({} connections open)", n + extra)
                } else {
                    let n: usize = caps[2].parse().unwrap();
                    format!("conn {} (", n + extra)
                }
            })
            .into_owned()
    }

    /// The server refuses, with a log line, every connection whose descriptor select
    /// cannot watch (never a panic), goes on serving the others (including the one on
    /// descriptor 1023, the highest select can watch), and serves new clients once
    /// descriptors below 1024 are free again. The refused clients see the end of the
    /// connection, not a hang.
    #[test]
    fn descriptors_from_fd_setsize_up_are_refused_and_the_rest_served() {
        raise_own_fd_limit();
        let mut server = Server::start_with_fd_limit(SERVER, &[], SERVER_FD_LIMIT);
        let (below, refused_fd) = server_descriptors(&server);
        // The kernel hands out the lowest free descriptor: the first `watchable`
        // connections get the ones left below 1024, the rest 1024 (closed and reused).
        let watchable = FD_SETSIZE - below;
        let mut streams: Vec<TcpStream> = (0..CROWD).map(|_| connect(server.addr)).collect();
        expect_connected_then_refused(&mut server, watchable, refused_fd);

        // The refused ones see EOF (or a reset), not a connection left hanging.
        for (index, stream) in streams.iter_mut().enumerate().skip(watchable) {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Ok(0) => {}
                Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
                other => panic!("refused connection {} read {other:?}", index + 1),
            }
        }
        // The lowest and the highest watched descriptors are both served.
        round_trip(&mut streams[0], b"on a low descriptor\n");
        round_trip(&mut streams[watchable - 1], b"on descriptor 1023\n");

        // While every descriptor below 1024 is taken, a new client is refused too.
        let mut late = connect(server.addr);
        assert!(next_server_line(&mut server).starts_with(log::RECEIVED));
        assert!(next_server_line(&mut server).starts_with(log::RECEIVED));
        let line = next_server_line(&mut server);
        assert!(line.starts_with(REFUSED), "{line}");
        assert_same_bytes(&read_to_eof(&mut late), b"", "a client refused late");

        // Close the refused ones and the 100 highest accepted ones: a fresh client then
        // gets a descriptor below 1024 again and is served.
        streams.truncate(watchable - 100);
        for _ in 0..100 {
            let line = next_server_line(&mut server);
            assert!(line.starts_with(log::DISCONNECTED), "{line}");
        }
        let mut fresh = connect(server.addr);
        round_trip(&mut fresh, b"served once descriptors were free\n");
        round_trip(&mut streams[0], b"still served\n");

        assert!(server.is_running());
        assert!(!server.stderr_text().contains("panicked"));
        let open = watchable - 100 + 1;
        let exited = server.stop(SIGTERM);
        assert_clean_shutdown(&exited);
        let last = exited.stdout.trim_end().lines().last().unwrap_or_default();
        assert_eq!(
            last,
            format!(
                "{} (signal): served {} clients, closed {open} connections still open",
                log::SHUTTING_DOWN,
                watchable + 1
            )
        );
    }

    /// What a learner sees doing this by hand: the server refuses the connections
    /// from descriptor 1024 up, and the client's echo stops at the first refused
    /// connection. The chapter's command gives the server 5 s (`--hold 5`) to log
    /// every connection before the line goes out; the test instead sends the line on
    /// the client's stdin once the server has logged them all, which prints the same
    /// without a sleep.
    #[test]
    fn fd_setsize_transcript() {
        raise_own_fd_limit();
        let mut server = Server::start_with_fd_limit(SERVER, &[], SERVER_FD_LIMIT);
        let (below, refused_fd) = server_descriptors(&server);
        let watchable = FD_SETSIZE - below;
        let real_port = server.port();
        let port = real_port.to_string();
        let crowd = CROWD.to_string();
        let mut client = Interactive::start(CLIENT, &["--port", &port, "--conns", &crowd]);
        let lines = expect_connected_then_refused(&mut server, watchable, refused_fd);
        client.send_line("hi");
        let ended = client.finish();
        assert_eq!(ended.status.code(), Some(1), "{}", ended.stderr);
        let echoes: Vec<&str> = ended.stdout.lines().collect();
        assert_eq!(echoes.len(), watchable, "{}", ended.stderr);
        assert!(echoes.iter().all(|line| line.ends_with("): hi")));
        let error = ended.stderr.trim_end();
        assert!(
            error.starts_with("error: talking to 127.0.0.1:")
                && error.contains(&format!("conn {} (", watchable + 1))
                && error.ends_with("the server closed the connection"),
            "{error}"
        );
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);

        // Terminal 1 around the first refusal; terminal 2's last lines (`tail -n 3`).
        // Counts near the limit are shown as from a terminal (see TERMINAL_BASELINE).
        let extra = below.saturating_sub(TERMINAL_BASELINE);
        let server_part = format!(
            "# terminal 1: room for 2048 descriptors, then the server\n\
             $ ulimit -n 2048\n\
             $ cargo run --bin 04_select_server\n\
             {}\n{}\n{}\n...\n{}\n{}\n{}\n{}\n...\n",
            exited.stdout.lines().next().unwrap_or_default(),
            lines[0],
            lines[1],
            renumber(&lines[watchable - 2], extra),
            renumber(&lines[watchable - 1], extra),
            lines[watchable],
            lines[watchable + 1],
        );
        let client_part = format!(
            "# terminal 2: 1100 connections, then one line sent on each\n\
             $ ulimit -n 2048\n\
             $ cargo run --bin 04_select_client -- --conns {CROWD} --hold 5 hi 2>&1 | tail -n 3\n\
             {}\n{}\n{}\n",
            renumber(echoes[watchable - 2], extra),
            renumber(echoes[watchable - 1], extra),
            renumber(error, extra),
        );
        // One text, so that both parts show the same connection with the same port.
        const SPLIT: &str = "=== split ===\n";
        let normal = Normaliser::new().port(real_port, DEFAULT_PORT).pattern(
            &format!(r"descriptor {refused_fd} is"),
            &format!("descriptor {FD_SETSIZE} is"),
        );
        let both = normal.apply(&format!("{server_part}{SPLIT}{client_part}"));
        let (server_text, client_text) = both.split_once(SPLIT).unwrap();
        transcript::check("04_fd_setsize_server", server_text);
        transcript::check("04_fd_setsize_client", client_text);
    }
}

mod minimal {
    //! The chapter's first version, lessons/04_select/minimal.rs, broken on purpose:
    //! each test makes one thing happen that the lesson's server survives, and passes
    //! when the minimal server fails the way the chapter says. The transcripts they
    //! write are the chapter's "what breaks" runs.

    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    /// How a server ended, for a failure message: its status, the end of its log and
    /// of its stderr (never all of it: the crowd test logs a thousand lines).
    fn how_it_ended(exited: &Exited) -> String {
        let out: Vec<String> = exited.stdout.lines().map(str::to_string).collect();
        let err: Vec<String> = exited.stderr.lines().map(str::to_string).collect();
        format!(
            "status {:?}; {}{}",
            exited.status,
            tail(&out, "stdout"),
            tail(&err, "stderr")
        )
    }

    /// Is the process's one thread asleep inside a send? /proc/PID/syscall starts with
    /// the number of the system call a sleeping thread is in (`running` otherwise).
    fn blocked_in_send(pid: u32) -> bool {
        let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        let number = text.split_whitespace().next().and_then(|n| n.parse().ok());
        [nix::libc::SYS_sendto, nix::libc::SYS_write]
            .iter()
            .any(|call| Some(*call) == number)
    }

    /// The end of a panic message on stderr: the `panicked at` line (its thread id
    /// and source place made stable) and the message under it.
    fn panic_lines(stderr: &str) -> String {
        stderr
            .lines()
            .skip_while(|line| !line.contains("panicked at"))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Thread ids and places in std or nix differ from run to run and release.
    fn stable_panic(normal: Normaliser) -> Normaliser {
        normal.pattern(
            r"(?m)thread 'main' (\(\d+\) )?panicked at .*:$",
            "thread 'main' panicked at ...:",
        )
    }

    /// It works for well-behaved clients: two connections, one line each, echoed.
    /// Ctrl-C then kills it where it stands: no handler, so no last line, and the
    /// shell reports 130 (128 + SIGINT), not 0.
    #[test]
    fn serves_clients_until_ctrl_c_kills_it() {
        let mut server = Server::start(MINIMAL, &[]);
        let port = server.port().to_string();
        let client = run(CLIENT, &["--port", &port, "--conns", "2", "hello"], b"");
        assert!(client.status.success(), "{}", client.stderr);
        server.wait_for_line("disconnected");
        server.wait_for_line("disconnected");
        let exited = server.stop(SIGINT);
        assert_eq!(
            exited.status.signal(),
            Some(SIGINT as i32),
            "{}",
            how_it_ended(&exited)
        );
        assert!(
            !exited.stdout.contains(log::SHUTTING_DOWN),
            "{}",
            how_it_ended(&exited)
        );
        let normal = Normaliser::new().port(exited.listening_port(), DEFAULT_PORT);
        let (first, rest) = exited.stdout.split_once('\n').unwrap_or_default();
        transcript::check(
            "04_minimal",
            &normal.apply(&format!(
                "# terminal 1\n$ cargo run --bin 04_select_minimal\n{first}\n\n\
                 # terminal 2\n$ cargo run --bin 04_select_client -- --conns 2 hello\n{}\n\
                 # terminal 1\n{rest}^C\n$ echo $?\n{}\n",
                client.stdout,
                // What a shell reports for a process killed by signal N.
                128 + exited.status.signal().unwrap_or(0)
            )),
        );
    }

    /// `clients[index].read(..)?`: one client's reset (ECONNRESET) is returned from
    /// `main`, and the whole server exits, every other client with it.
    #[test]
    fn one_clients_reset_ends_the_server() {
        let server = Server::start(MINIMAL, &[]);
        let mut bystander = connect(server.addr);
        round_trip(&mut bystander, b"I am fine\n");
        let mut doomed = connect(server.addr);
        round_trip(&mut doomed, b"about to reset\n");
        reset(doomed);
        let exited = server.wait_for_its_end();
        assert_eq!(exited.status.code(), Some(1), "{}", how_it_ended(&exited));
        assert!(
            exited.stderr.contains("Connection reset by peer"),
            "{}",
            exited.stderr
        );
        // The bystander did nothing wrong, and its connection is gone too.
        assert_same_bytes(&read_to_eof(&mut bystander), b"", "the other client");
        let normal = Normaliser::new().port(exited.listening_port(), DEFAULT_PORT);
        transcript::check(
            "04_minimal_reset",
            &normal.apply(&format!(
                "# terminal 1\n$ cargo run --bin 04_select_minimal\n{}{}$ echo $?\n{}\n",
                exited.stdout,
                exited.stderr,
                exited.status.code().unwrap_or(-1)
            )),
        );
    }

    /// The same reset, found by the protocol checks: `cargo run -- check 04` against
    /// the minimal server passes every check until `echo-after-reset`, the last.
    #[test]
    fn the_protocol_check_finds_the_reset() {
        let server = Server::start(MINIMAL, &[]);
        let port = server.port().to_string();
        let check = run_front_door(WORKBOOK, &["check", "04", "--port", &port], b"");
        assert_eq!(check.status.code(), Some(1), "{}", check.stderr);
        assert!(
            check.stdout.contains("FAIL echo-after-reset"),
            "{}",
            check.stdout
        );
        let exited = server.wait_for_its_end();
        // Why the check failed depends on a race: the server may still accept the
        // next connection before it reads the reset (that connection is then closed
        // with it), or may be gone already (connection refused).
        let normal = Normaliser::new()
            .port(exited.listening_port(), DEFAULT_PORT)
            .pattern(r"(?m)^(FAIL echo-after-reset: ).*$", "$1...");
        transcript::check(
            "04_minimal_check",
            &normal.apply(&format!(
                "# terminal 2, with the first version in terminal 1\n\
                 $ cargo run -- check 04 --port 10001\n{}",
                check.stdout
            )),
        );
    }

    /// `write_all` on a blocking socket: a client that sends and never reads fills
    /// its receive buffer and the server's send buffer; then `write_all` waits for
    /// it, and so does every other client, until it reads.
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
        // The server's one thread sleeps in send(2), and stays there (a run of
        // samples, so it is not one send that happened to wait a moment).
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
        assert!(
            stuck,
            "the minimal server never blocked in send(2); {}",
            server.last_lines()
        );
        // Another client now gets nothing back: the loop is not running.
        let mut other = connect(server.addr);
        other.write_all(b"anyone there?\n").unwrap();
        other
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut byte = [0u8; 1];
        match other.read(&mut byte) {
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
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
        assert_eq!(exited.status.code(), Some(1), "{}", how_it_ended(&exited));
        assert!(
            exited.stderr.contains("Too many open files"),
            "{}",
            exited.stderr
        );
        let normal = Normaliser::new().port(exited.listening_port(), DEFAULT_PORT);
        transcript::check(
            "04_minimal_emfile",
            &normal.apply(&format!(
                "# terminal 1: at most 64 open descriptors\n\
                 $ ulimit -n 64\n\
                 $ cargo run --bin 04_select_minimal\n\
                 {}\n(... a `connected` line for each descriptor left ...)\n{}$ echo $?\n{}\n",
                exited.stdout.lines().next().unwrap_or_default(),
                exited.stderr,
                exited.status.code().unwrap_or(-1)
            )),
        );
    }

    /// `readable.insert(client.as_fd())`: nix's FdSet has no bit for descriptor 1024
    /// and panics. The limit is raised (`ulimit -n 2048`) so that accept can hand
    /// out 1024; the first select after that ends the server.
    #[test]
    fn descriptor_1024_panics_the_server() {
        raise_own_fd_limit();
        let server = Server::start_with_fd_limit(MINIMAL, &[], SERVER_FD_LIMIT);
        let mut streams = Vec::new();
        for _ in 0..CROWD {
            match TcpStream::connect_timeout(&server.addr, WAIT) {
                Ok(stream) => streams.push(stream),
                Err(_) => break,
            }
        }
        let exited = server.wait_for_its_end();
        assert_eq!(
            exited.status.code(),
            Some(101),
            "a panic: {}",
            exited.stderr
        );
        assert!(
            exited
                .stderr
                .contains("fd must be in the range 0..FD_SETSIZE"),
            "{}",
            exited.stderr
        );
        let normal = stable_panic(Normaliser::new().port(exited.listening_port(), DEFAULT_PORT));
        transcript::check(
            "04_minimal_fd_setsize",
            &normal.apply(&format!(
                "# terminal 1: room for 2048 descriptors\n\
                 $ ulimit -n 2048\n\
                 $ cargo run --bin 04_select_minimal\n\
                 {}\n(... a `connected` line for each client, up to descriptor 1024 ...)\n\
                 {}\n$ echo $?\n{}\n",
                exited.stdout.lines().next().unwrap_or_default(),
                panic_lines(&exited.stderr),
                exited.status.code().unwrap_or(-1)
            )),
        );
    }

    /// `println!` panics when stdout is a closed pipe (`04_select_minimal | head -1`):
    /// the first log line after the one `head` took ends the server.
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
        let addr: std::net::SocketAddr = first
            .trim()
            .trim_start_matches(log::LISTENING_ON)
            .trim()
            .parse()
            .unwrap_or_else(|err| panic!("bad first line {first:?}: {err}"));
        // `head -1` has its line and exits: the read end of the pipe is closed.
        drop(stdout);
        let stream = connect(addr);
        let pid = child.id();
        let ended = eventually(|| process_state(pid) == Some('Z'));
        if !ended {
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        assert!(
            ended,
            "the server still runs with its stdout closed; stderr: {stderr}"
        );
        assert_eq!(status.code(), Some(101), "a panic: {stderr}");
        assert!(
            stderr.contains("failed printing to stdout: Broken pipe"),
            "{stderr}"
        );
        let normal = stable_panic(Normaliser::new().port(addr.port(), DEFAULT_PORT));
        transcript::check(
            "04_minimal_closed_stdout",
            &normal.apply(&format!(
                "# terminal 1\n$ cargo run --bin 04_select_minimal | head -1\n{}\n\
                 # (a client connects: the server prints `connected` into the closed pipe)\n\
                 {}\n",
                first.trim(),
                panic_lines(&stderr)
            )),
        );
        drop(stream);
    }
}

mod exercises {
    //! The chapter's exercises: each test fails on the lesson as shipped and passes
    //! once the exercise is done. Run one with `cargo run -- exercise 04.K` or
    //! `cargo test --test 04_select -- --ignored exercise_K`.

    use super::*;

    /// 04.1: a chat. What one client sends goes to every other connection, and not
    /// back to the sender.
    #[test]
    #[ignore]
    fn exercise_1_chat() {
        let mut server = Server::start(SERVER, &[]);
        let mut a = connect(server.addr);
        let mut b = connect(server.addr);
        let mut c = connect(server.addr);
        // All three are in the room before anyone speaks.
        for _ in 0..3 {
            server.wait_for_line(log::CONNECTED);
        }
        let from_a = b"hello from a\n";
        let from_b = b"hello from b\n";
        a.write_all(from_a).unwrap();
        b.write_all(from_b).unwrap();
        // An echo server sends a its own line back; a chat sends it b's.
        assert_same_bytes(&read_exactly(&mut a, from_b.len()), from_b, "what a got");
        assert_same_bytes(&read_exactly(&mut b, from_a.len()), from_a, "what b got");
        let both = read_exactly(&mut c, from_a.len() + from_b.len());
        let a_first = [&from_a[..], &from_b[..]].concat();
        let b_first = [&from_b[..], &from_a[..]].concat();
        if both != b_first {
            assert_same_bytes(&both, &a_first, "what c got (both lines, in either order)");
        }
    }

    /// 04.2: `--idle-timeout SECS` closes a connection that has sent nothing for that
    /// long; a connection that keeps talking stays.
    #[test]
    #[ignore]
    fn exercise_2_idle_timeout() {
        let server = Server::start(SERVER, &["--quiet", "--idle-timeout", "1"]);
        let mut idle = connect(server.addr);
        let mut busy = connect(server.addr);
        let closing = thread::spawn(move || read_to_eof(&mut idle));
        // The busy one talks all the while (a round trip every 50 ms), until the idle
        // one has been closed.
        let mut rounds = 0;
        while !closing.is_finished() {
            round_trip(&mut busy, format!("round {rounds}\n").as_bytes());
            rounds += 1;
            thread::sleep(Duration::from_millis(50));
        }
        let leftover = closing.join().expect("the idle connection was not closed");
        assert_same_bytes(&leftover, b"", "the idle connection, before it closed");
        round_trip(&mut busy, b"still here after the idle one went\n");
    }

    /// 04.4: `--max-clients N` refuses a client beyond N open connections with the
    /// line `server full, try again later` before closing it; the others are served,
    /// and once one leaves there is room again.
    #[test]
    #[ignore]
    fn exercise_4_max_clients() {
        let mut server = Server::start(SERVER, &["--max-clients", "2"]);
        let mut first = connect(server.addr);
        let mut second = connect(server.addr);
        round_trip(&mut first, b"one\n");
        round_trip(&mut second, b"two\n");
        let mut third = connect(server.addr);
        assert_same_bytes(
            &read_to_eof(&mut third),
            b"server full, try again later\n",
            "the third client, refused",
        );
        round_trip(&mut first, b"still served\n");
        drop(second);
        server.wait_for_line(log::DISCONNECTED);
        let mut fourth = connect(server.addr);
        round_trip(&mut fourth, b"room again\n");
    }

    /// 04.5: urgent data. A byte sent with MSG_OOB is reported by select in the
    /// except set; the server reads it with recv(MSG_OOB) and logs
    /// `urgent byte from PEERS: "!"`.
    #[test]
    #[ignore]
    fn exercise_5_urgent_data_is_logged() {
        let mut server = Server::start(SERVER, &[]);
        let mut stream = connect(server.addr);
        stream.set_nodelay(true).unwrap();
        stream.write_all(b"ab").unwrap();
        socket2::SockRef::from(&stream)
            .send_out_of_band(b"!")
            .unwrap();
        stream.write_all(b"cd").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        // The echo ends when the server closes, after it has seen everything.
        let _echo = read_to_eof(&mut stream);
        server.wait_for_line(log::DISCONNECTED);
        let _ = server.drain();
        let urgent = server
            .seen
            .iter()
            .any(|line| line.contains("urgent") && line.contains("\"!\""));
        assert!(
            urgent,
            "no line with `urgent` and \"!\" in the log; {}",
            server.last_lines()
        );
    }
}

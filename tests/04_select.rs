//! Lesson 04: the select echo server and the many-connection client, run as real
//! programs; and what the server does with descriptors select cannot watch.

mod support;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use regex::Regex;
use support::transcript::{self, Normaliser};
use support::*;
use workbook::log;

const SERVER: &str = env!("CARGO_BIN_EXE_04_select_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_04_select_client");
const DEFAULT_PORT: u16 = 10001;

/// select(2) has a bit for each descriptor below this, none above.
const FD_SETSIZE: usize = 1024;
/// Connections the FD_SETSIZE tests open: enough to pass 1024 with room to spare.
const CROWD: usize = 1100;
/// The descriptor limit the FD_SETSIZE tests give the server (`ulimit -n 2048`).
const SERVER_FD_LIMIT: u32 = 2048;
/// What the lesson's server has open before its first client when a learner starts
/// it from a terminal: 0, 1, 2 (stdin, stdout, stderr), 3 (the listener), 4 and 5
/// (the wake-up socket pair). A test run may inherit a few more descriptors from
/// whatever started `cargo test`; transcripts are renumbered to this baseline.
const TERMINAL_BASELINE: usize = 6;

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

    let normal = Normaliser::new().port(server_port(&exited), DEFAULT_PORT);
    transcript::check(
        "04_client",
        &normal.apply(&format!(
            "$ cargo run --bin 04_select_client -- --conns 3 hello world\n{}",
            client.stdout
        )),
    );
    transcript::check(
        "04_server",
        &normal.apply(&format!(
            "$ cargo run --bin 04_select_server\n{}",
            exited
                .stdout
                .replace("\nshutting down", "\n^Cshutting down")
        )),
    );
}

fn server_port(exited: &Exited) -> u16 {
    let first = exited.stdout.lines().next().unwrap_or_default();
    first
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap()
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
    let normal = Normaliser::new().port(server_port(&exited), DEFAULT_PORT);
    transcript::check(
        "04_hold",
        &normal.apply(&format!(
            "# terminal 2: three connections that stay idle\n\
             $ cargo run --bin 04_select_client -- --hold 30 late\n\
             holding 3 idle connections for 30 s\n\
             \n\
             # terminal 3, meanwhile: served at once\n\
             $ cargo run --bin 04_select_client -- --conns 1 \"not waiting\"\n\
             {}\n\
             # terminal 1: the server, stopped with Ctrl-C while terminal 2 still holds\n\
             $ cargo run --bin 04_select_server\n\
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
    contract::client_reports_no_server(CLIENT, "04_select_server", &[]);
    let port = closed_port().to_string();
    let bad = run(CLIENT, &["--port", &port, "--conns", "0"], b"");
    assert_usage_error(&bad);
}

// ---------------------------------------------------------------------------------
// FD_SETSIZE: descriptors from 1024 up cannot be put in an fd_set.
// ---------------------------------------------------------------------------------

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

/// This test process holds over a thousand connections at once (besides what the
/// tests running beside it hold), and the server is started with `ulimit -n 2048`,
/// which needs a hard limit of at least that: raise our soft limit if it is lower
/// (many systems start with 1024), or fail saying why.
fn raise_own_fd_limit() {
    const WANT: u64 = 4096;
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

/// Reads the server's next line, failing the test if none comes within WAIT.
fn next_server_line(server: &mut Server) -> String {
    server
        .next_line(WAIT)
        .unwrap_or_else(|| panic!("the server printed nothing more within {WAIT:?}"))
}

/// `connected ...` for each connection below FD_SETSIZE, then `refused ...` for
/// each one from FD_SETSIZE up, in the order they connected; returns the lines.
fn expect_connected_then_refused(
    server: &mut Server,
    watchable: usize,
    refused_fd: usize,
) -> Vec<String> {
    let refusal =
        format!(": descriptor {refused_fd} is not below FD_SETSIZE (1024), select cannot watch it");
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
                line.starts_with("refused ") && line.ends_with(&refusal),
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
    echo::round_trip(&mut streams[0], b"on a low descriptor\n");
    echo::round_trip(&mut streams[watchable - 1], b"on descriptor 1023\n");

    // While every descriptor below 1024 is taken, a new client is refused too.
    let mut late = connect(server.addr);
    assert!(next_server_line(&mut server).starts_with(log::RECEIVED));
    assert!(next_server_line(&mut server).starts_with(log::RECEIVED));
    let line = next_server_line(&mut server);
    assert!(line.starts_with("refused "), "{line}");
    assert_eq!(read_to_eof(&mut late), b"");

    // Close the refused ones and the 100 highest accepted ones: a fresh client then
    // gets a descriptor below 1024 again and is served.
    streams.truncate(watchable - 100);
    for _ in 0..100 {
        let line = next_server_line(&mut server);
        assert!(line.starts_with(log::DISCONNECTED), "{line}");
    }
    let mut fresh = connect(server.addr);
    echo::round_trip(&mut fresh, b"served once descriptors were free\n");
    echo::round_trip(&mut streams[0], b"still served\n");

    assert!(server.is_running());
    assert!(!server.stderr_text().contains("panicked"));
    let open = watchable - 100 + 1;
    let exited = server.stop(SIGTERM);
    assert_clean_shutdown(&exited);
    let last = exited.stdout.trim_end().lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "shutting down (signal): served {} clients, closed {open} connections still open",
            watchable + 1
        )
    );
}

/// What a learner sees doing this by hand: the server refuses the connections from
/// descriptor 1024 up, and the client's echo stops at the first refused connection.
/// The chapter's command gives the server 5 s (`--hold 5`) to log every connection
/// before the line goes out; the test instead sends the line on the client's stdin
/// once the server has logged them all, which prints the same without a sleep.
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

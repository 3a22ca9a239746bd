//! Lesson 01: the timestamp server and its client, run as real programs.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use regex::Regex;
use support::transcript::{self, Normaliser};
use support::*;

const SERVER: &str = env!("CARGO_BIN_EXE_01_tcp_basics_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_01_tcp_basics_client");
const DEFAULT_PORT: u16 = 21567;

/// `[Sun Nov 22 10:00:00 2026] ` and nothing else before the echoed chunk.
fn prefix() -> Regex {
    Regex::new(r"\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] \d\d:\d\d:\d\d \d{4}\] ").unwrap()
}

#[test]
fn client_transcript() {
    let mut server = Server::start(SERVER, &[]);
    let port = server.port().to_string();
    let client = run(
        CLIENT,
        &["--port", &port, "hello", "TCP is a byte stream"],
        b"",
    );
    assert!(client.status.success(), "{}", client.stderr);
    let lines: Vec<&str> = client.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", client.stdout);
    for (line, sent) in lines.iter().zip(["hello", "TCP is a byte stream"]) {
        let rest = prefix().replace(line, "");
        assert_eq!(rest, sent, "{line}");
        // The time is the server's clock, now (local time, as Python's time.ctime()).
        assert!(line.starts_with('['), "{line}");
    }
    server.wait_for_line("disconnected");
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    assert!(exited.stdout.contains("shutting down: served 1 client"));

    let normal = normaliser_for(&exited);
    transcript::check(
        "01_client",
        &normal.apply(&format!(
            "$ cargo run --bin 01_tcp_basics_client -- hello \"TCP is a byte stream\"\n{}",
            client.stdout
        )),
    );
    // In a terminal, Ctrl-C shows as ^C just before the server's last line.
    transcript::check(
        "01_server",
        &normal.apply(&format!(
            "$ cargo run --bin 01_tcp_basics_server\n{}",
            exited
                .stdout
                .replace("\nshutting down", "\n^Cshutting down")
        )),
    );
}

#[test]
fn stdin_lines_until_an_empty_line() {
    let server = Server::start(SERVER, &["--quiet"]);
    let port = server.port().to_string();
    let client = run(CLIENT, &["--port", &port], b"one\r\ntwo\n\nnot sent\n");
    assert!(client.status.success(), "{}", client.stderr);
    let echoed: Vec<String> = client
        .stdout
        .lines()
        .map(|line| prefix().replace(line, "").into_owned())
        .collect();
    assert_eq!(echoed, ["one", "two"]);
    assert!(
        !client.stdout.contains("> "),
        "no prompt when stdin is not a terminal"
    );
}

/// The heart of the lesson: one client at a time. A second client's connect succeeds
/// (the kernel completes the handshake and queues it in the backlog), but nothing
/// answers it until the first client leaves. The test writes the book's transcript.
#[test]
fn second_client_waits_in_the_backlog() {
    let mut server = Server::start(SERVER, &[]);
    let port = server.port().to_string();

    let mut first = Interactive::start(CLIENT, &["--port", &port]);
    first.send_line("I was here first");
    let first_reply = first.expect_line();
    server.wait_for_line("received");

    let mut second = Interactive::start(CLIENT, &["--port", &port]);
    second.send_line("me too?");
    // Nothing may come back while the first client is connected. Waiting longer
    // could only make this check stricter, never make it fail on a slow machine.
    assert_eq!(second.next_line(Duration::from_millis(500)), None);
    // And the server has not even accepted it.
    let log_while_waiting = server.drain();
    assert!(
        !log_while_waiting
            .iter()
            .any(|line| line.contains("connected")),
        "{log_while_waiting:?}"
    );

    let first_done = first.finish();
    assert!(first_done.status.success(), "{}", first_done.stderr);
    let second_reply = second.expect_line();
    assert_eq!(prefix().replace(&second_reply, ""), "me too?");
    let second_done = second.finish();
    assert!(second_done.status.success(), "{}", second_done.stderr);
    server.wait_for_line("disconnected");
    server.wait_for_line("disconnected");
    let exited = server.stop(SIGTERM);
    assert_clean_shutdown(&exited);

    // The first client's disconnect comes before the second's connect in the log.
    let log: Vec<&str> = exited.stdout.lines().collect();
    let first_gone = log
        .iter()
        .position(|l| l.starts_with("disconnected"))
        .unwrap();
    let second_in = log
        .iter()
        .rposition(|l| l.starts_with("connected"))
        .unwrap();
    assert!(first_gone < second_in, "{log:#?}");

    let normal = normaliser_for(&exited);
    let story = format!(
        "# terminal 2: the first client\n\
         $ cargo run --bin 01_tcp_basics_client\n\
         > I was here first\n\
         {first_reply}\n\
         \n\
         # terminal 3: a second client, while the first is still connected\n\
         $ cargo run --bin 01_tcp_basics_client\n\
         > me too?\n\
         (no reply: connect() succeeded, but the server has not accepted us yet)\n\
         \n\
         # terminal 2: the first client ends (an empty line)\n\
         > \n\
         # terminal 3: at once, the reply arrives\n\
         {second_reply}\n\
         \n\
         # terminal 1: the server's log\n\
         $ cargo run --bin 01_tcp_basics_server\n\
         {}",
        exited
            .stdout
            .lines()
            .filter(|l| !l.starts_with("shutting"))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    );
    transcript::check("01_backlog", &normal.apply(&story));
}

fn normaliser_for(exited: &Exited) -> Normaliser {
    Normaliser::new().port(exited.listening_port(), DEFAULT_PORT)
}

#[test]
fn non_utf8_bytes_come_back_unchanged_and_are_logged_escaped() {
    let mut server = Server::start(SERVER, &[]);
    let mut conn = connect(server.addr);
    conn.write_all(b"\xff\xfe\x00bin\n").unwrap();
    let reply = read_exactly(&mut conn, 27 + 7);
    assert!(reply.ends_with(b"\xff\xfe\x00bin\n"), "{reply:?}");
    assert!(prefix().is_match(&String::from_utf8_lossy(&reply)));
    let logged = server.wait_for_line("received");
    assert!(logged.contains(r#""\xff\xfe\x00bin\n""#), "{logged}");
}

#[test]
fn a_large_payload_arrives_in_many_chunks() {
    let server = Server::start(SERVER, &["--quiet"]);
    let payload = vec![b'x'; 1 << 20];
    let mut conn = connect(server.addr);
    let mut writer = conn.try_clone().unwrap();
    let sent = payload.clone();
    // Written on another thread while we read: the server's replies fill our receive
    // buffer, and if nobody read them both sides would wait for each other forever.
    let writing = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let replies = read_to_eof(&mut conn);
    writing.join().unwrap();
    let text = String::from_utf8(replies).unwrap();
    let chunks = prefix().find_iter(&text).count();
    let echoed = prefix().replace_all(&text, "");
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed.bytes().all(|b| b == b'x'));
    // One write of 1 MiB was many reads (each at most 4096 bytes) on the server.
    assert!(chunks >= (1 << 20) / 4096, "only {chunks} chunks");
}

#[test]
fn half_close_gets_the_reply_then_eof() {
    let mut server = Server::start(SERVER, &[]);
    let mut conn = connect(server.addr);
    conn.write_all(b"last words").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let reply = String::from_utf8(read_to_eof(&mut conn)).unwrap();
    assert_eq!(prefix().replace(&reply, ""), "last words");
    server.wait_for_line("disconnected");
}

#[test]
fn resets_and_silent_clients_do_not_stop_the_server() {
    let mut server = Server::start(SERVER, &[]);
    // Connect and close at once, without a byte.
    drop(connect(server.addr));
    server.wait_for_line("disconnected");
    // Send, then reset (RST) instead of closing.
    let mut conn = connect(server.addr);
    conn.write_all(b"about to vanish\n").unwrap();
    server.wait_for_line("received");
    reset(conn);
    server.wait_for_line("disconnected");
    // Still serving.
    let port = server.port().to_string();
    let client = run(CLIENT, &["--port", &port, "still there?"], b"");
    assert!(client.status.success(), "{}", client.stderr);
    assert!(
        client.stdout.ends_with("] still there?\n"),
        "{}",
        client.stdout
    );
    assert!(server.is_running());
}

#[test]
fn sigint_while_a_client_is_connected() {
    let mut server = Server::start(SERVER, &[]);
    let conn = connect(server.addr);
    server.wait_for_line("connected");
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    drop(conn);
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
fn contract_client() {
    contract::rejects_bad_flags(CLIENT);
    contract::client_reports_no_server(CLIENT, "01_tcp_basics_server", &[]);
}

/// The lesson's protocol on a few connections, many lines each, every reply checked:
/// the server logs a `received` line for each, far more than the 64 KiB a pipe holds.
fn many_lines_on_a_few_connections(addr: SocketAddr) {
    for connection in 0..4 {
        let conn = connect(addr);
        let mut replies = BufReader::new(conn.try_clone().unwrap());
        let mut conn = conn;
        for n in 0..250 {
            let line = format!("connection {connection}, line {n}: {}\n", "x".repeat(40));
            conn.write_all(line.as_bytes()).unwrap();
            // The reply ends with our newline, however many chunks the server read.
            let mut reply = String::new();
            replies.read_line(&mut reply).unwrap();
            assert_eq!(prefix().replace_all(&reply, ""), line, "{reply:?}");
        }
    }
}

/// `01_tcp_basics_server | head -1`: a log line it cannot write must not kill it.
#[test]
fn serves_and_stops_with_stdout_closed() {
    contract::survives_closed_stdout(SERVER, &[], many_lines_on_a_few_connections);
}

/// stdout a pipe nobody reads: a full pipe must not freeze the server or Ctrl-C.
#[test]
fn serves_and_stops_with_stdout_stalled() {
    contract::survives_stalled_stdout(SERVER, &[], many_lines_on_a_few_connections);
}

/// `01_tcp_basics_client hello | head -0`: the reply cannot be printed, and the
/// client stops quietly (no panic, no error line).
#[test]
fn the_client_stops_quietly_when_stdout_is_closed() {
    let server = Server::start(SERVER, &["--quiet"]);
    let port = server.port().to_string();
    let client = run_with_closed_stdout(CLIENT, &["--port", &port, "hello", "again"], b"");
    assert!(
        client.status.success(),
        "{:?}: {}",
        client.status,
        client.stderr
    );
    assert_eq!(client.stderr, "");
}

/// The book shows these two failures; the test writes them from real runs.
#[test]
fn error_transcripts() {
    let (_holder, busy) = busy_port();
    let busy_text = busy.to_string();
    let in_use = run(SERVER, &["--port", &busy_text], b"");
    assert_error_line(&in_use, &["in use"]);
    let normal = Normaliser::new().port(busy, DEFAULT_PORT);
    transcript::check(
        "01_port_in_use",
        &normal.apply(&format!(
            "$ cargo run --bin 01_tcp_basics_server      # while another copy runs\n{}",
            in_use.stderr
        )),
    );

    let closed = closed_port();
    let closed_text = closed.to_string();
    let refused = run(CLIENT, &["--port", &closed_text, "hello"], b"");
    assert_error_line(
        &refused,
        &["refused", "cargo run --bin 01_tcp_basics_server"],
    );
    let normal = Normaliser::new().port(closed, DEFAULT_PORT);
    transcript::check(
        "01_no_server",
        &normal.apply(&format!(
            "$ cargo run --bin 01_tcp_basics_client -- hello      # no server running\n{}",
            refused.stderr
        )),
    );
}

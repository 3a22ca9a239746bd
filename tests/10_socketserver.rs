//! Lesson 10: the socketserver framework's server, in its three modes and over UDP,
//! and its client, run as real programs; raw sockets for what the client never does.
//!
//! - `mod protocol`: what any server of lesson 10's protocol must do on the wire. The
//!   shared checks (`cargo run -- check 10`) once per mode, and what they lack: UDP
//!   (`--udp`), a large binary payload, resets, a line end cut in two.
//! - `mod lesson`: this server's own log, flags, limits, modes and transcripts.
//! - `mod exercises`: the chapter's exercises, ignored until you do them:
//!   `cargo run -- exercise 10.1` or `cargo test --test 10_socketserver -- --ignored exercise_1`.

mod support;

/// The words the lesson's own log lines begin with (`replied`, `reaped pid` ...), the
/// very constants the server uses.
#[path = "../lessons/10_socketserver/log_words.rs"]
mod log_words;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;
use regex::Regex;
use support::echo::{crowd_past_fd_limit, eventually};
use support::transcript::{self, Normaliser};
use support::*;
use workbook::log;

const SERVER: &str = env!("CARGO_BIN_EXE_10_socketserver_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_10_socketserver_client");
const SERVER_BIN: &str = "10_socketserver_server";
const DEFAULT_PORT: u16 = 10010;
const MODES: [&str; 3] = ["sync", "threading", "forking"];
/// `[` + a 24-character ctime + `] `: what a UDP reply puts before the datagram.
const STAMP: usize = 27;

/// A reply line without its `\r\n`: the server's time, like `Sun Nov 22 10:00:00 2026`.
fn ctime() -> Regex {
    Regex::new(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] \d\d:\d\d:\d\d \d{4}$").unwrap()
}

fn assert_ctime(line: &str) {
    assert!(
        ctime().is_match(line),
        "expected a time in ctime form, like \"Sun Nov 22 10:00:00 2026\", got \"{}\"",
        line.escape_default()
    );
}

/// Starts the server in `mode` with `extra` flags.
fn start(mode: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--mode", mode];
    args.extend(extra);
    Server::start(SERVER, &args)
}

/// Waits for the next log line that begins with `prefix` (`connected` is also in
/// `disconnected`, so [`Server::wait_for_line`] alone would not do).
fn wait_for_start(server: &mut Server, prefix: &str) -> String {
    loop {
        let line = server.wait_for_line(prefix);
        if line.starts_with(prefix) {
            return line;
        }
    }
}

/// Reads one reply line, up to and including `\r\n`; returns it without the `\r\n`.
fn read_reply(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "the server closed the connection after \"{}\"",
                escaped(&line)
            ),
            Ok(_) => line.push(byte[0]),
            Err(err) => panic!("no reply line (so far \"{}\"): {err}", escaped(&line)),
        }
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).unwrap()
}

/// Sends `line` and `\r\n` on a fresh connection and checks that the time comes back.
fn ask_time(server: &Server, line: &str) -> TcpStream {
    let mut stream = connect(server.addr);
    stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    assert_ctime(&read_reply(&mut stream));
    stream
}

/// Half-closes and checks that the server then closes without another byte.
fn assert_closes_without_more(stream: &mut TcpStream, what: &str) {
    stream.shutdown(Shutdown::Write).unwrap();
    assert_same_bytes(&read_to_eof(stream), b"", what);
}

/// The processes whose parent is `parent`, with their state (`S`, `R`, `Z` for a
/// zombie...), from /proc/PID/stat.
fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so the
        // fields are counted from the last `)`.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            found.push((pid, state));
        }
    }
    found
}

/// Is `pid` a process running this lesson's server (not gone, not reused by another)?
fn is_our_server(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(SERVER_BIN))
        .unwrap_or(false)
}

/// Kills whatever children of a forking server are left when a test fails half-way
/// (the Server guard kills only the parent). Declare it after the server.
struct NoOrphans(u32);

impl Drop for NoOrphans {
    fn drop(&mut self) {
        for (pid, _) in children_of(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGKILL,
            );
        }
    }
}

/// The server's port shown as 10010, and child pids as 4101, 4102, ... in order of
/// first appearance (they differ on every run).
fn normalise(exited: &Exited, text: &str) -> String {
    let pid = Regex::new(r"pid (\d+)").unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let text = pid.replace_all(text, |caps: &regex::Captures| {
        let next = seen.len();
        let number = *seen.entry(caps[1].to_string()).or_insert(next);
        format!("pid {}", 4101 + number)
    });
    Normaliser::new()
        .port(exited.listening_port(), DEFAULT_PORT)
        .apply(&text)
}

/// The server's log as a terminal shows it: Ctrl-C just before the last line.
fn with_ctrl_c(stdout: &str) -> String {
    stdout.replace(
        &format!("\n{}", log::SHUTTING_DOWN),
        &format!("\n^C{}", log::SHUTTING_DOWN),
    )
}

/// The log lines that begin with `word`.
fn lines_starting<'a>(stdout: &'a str, word: &str) -> Vec<&'a str> {
    stdout.lines().filter(|l| l.starts_with(word)).collect()
}

/// Checks a UDP reply: `[<ctime>] ` and then `data`, byte for byte. `check` names
/// the UDP protocol check (or what else is being checked), for the failure message.
fn assert_udp_reply(reply: &[u8], data: &[u8], check: &str) {
    let head = String::from_utf8_lossy(&reply[..reply.len().min(STAMP)]);
    let time = head.strip_prefix('[').and_then(|h| h.strip_suffix("] "));
    assert!(
        reply.len() >= STAMP && time.is_some_and(|time| ctime().is_match(time)),
        "UDP, {check}: expected `[<ctime>] ` first, got \"{}\" ({} bytes in all)",
        escaped(&reply[..reply.len().min(60)]),
        reply.len()
    );
    assert_same_bytes(
        &reply[STAMP..],
        data,
        &format!("UDP, {check}: the datagram after the stamp"),
    );
}

/// `1 byte`, `27 bytes`: how the server's log counts.
fn show_bytes(count: usize) -> String {
    if count == 1 {
        "1 byte".to_string()
    } else {
        format!("{count} bytes")
    }
}

/// Lesson 10's wire protocol. TCP: for each `\r\n` received (even one cut in two by
/// the network), one `<ctime>\r\n`; open until the client closes. UDP (`--udp`): each
/// datagram, empty allowed, gets `[<ctime>] <datagram>` back, sent to its sender and
/// cut to the largest datagram if need be.
mod protocol {
    use super::*;

    #[test]
    fn sync_passes_the_protocol_checks() {
        support::protocol::all_checks_pass(10, SERVER, &["--mode", "sync"]);
    }

    #[test]
    fn threading_passes_the_protocol_checks() {
        support::protocol::all_checks_pass(10, SERVER, &["--mode", "threading"]);
    }

    /// (A child left behind by a failed check ends when its connection does.)
    #[test]
    fn forking_passes_the_protocol_checks() {
        support::protocol::all_checks_pass(10, SERVER, &["--mode", "forking"]);
    }

    /// A line end cut in two by the network (`\r` at the end of one read, `\n` first
    /// in the next) still counts. The server's log (`received 6 bytes`) shows that the
    /// two writes did arrive as two reads; the shared check can only hope they do.
    #[test]
    fn a_line_end_split_across_two_reads_counts_once() {
        for mode in MODES {
            let mut server = start(mode, &[]);
            let _no_orphans = NoOrphans(server.pid());
            let mut conn = connect(server.addr);
            conn.write_all(b"split\r").unwrap();
            server.wait_for_line(&format!("{} 6 bytes", log::RECEIVED));
            conn.write_all(b"\n").unwrap();
            assert_ctime(&read_reply(&mut conn));
            assert_closes_without_more(&mut conn, &format!("{mode}: after the one reply"));
        }
    }

    /// One megabyte of every byte value, with a `\r\n` every 4093 bytes: one reply per
    /// line end, whatever chunks the network made of it, and the server goes on.
    fn large_binary_payload(mode: &str) {
        let server = start(mode, &["--quiet"]);
        let _no_orphans = NoOrphans(server.pid());
        let mut payload = Vec::with_capacity((1 << 20) + 2);
        let mut line_ends = 0;
        let mut index = 0usize;
        while payload.len() < 1 << 20 {
            if index % 4093 == 4092 {
                payload.extend_from_slice(b"\r\n");
                line_ends += 1;
            } else {
                // Every value but `\r`, so that the only line ends are the ones counted.
                let byte = (index * 7 % 256) as u8;
                payload.push(if byte == b'\r' { 0x0e } else { byte });
            }
            index += 1;
        }
        let mut stream = connect(server.addr);
        let mut writer = stream.try_clone().unwrap();
        // Written on another thread while we read: the replies fill our receive buffer.
        let writing = thread::spawn(move || {
            writer.write_all(&payload).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let replies = String::from_utf8(read_to_eof(&mut stream)).unwrap();
        writing.join().unwrap();
        let lines: Vec<&str> = replies.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), line_ends, "{mode}: one reply per line end");
        lines.iter().for_each(|line| assert_ctime(line));
        ask_time(&server, "still serving");
    }

    #[test]
    fn sync_one_mib_binary_payload() {
        large_binary_payload("sync");
    }

    #[test]
    fn threading_one_mib_binary_payload() {
        large_binary_payload("threading");
    }

    #[test]
    fn forking_one_mib_binary_payload() {
        large_binary_payload("forking");
    }

    /// A silent connect-and-close, a reset mid-line with binary bytes, a half-close:
    /// the server goes on, and the half-closed client still gets its reply before the
    /// server closes.
    fn resets_and_half_close(mode: &str) {
        let mut server = start(mode, &[]);
        let _no_orphans = NoOrphans(server.pid());
        drop(connect(server.addr));
        let mut doomed = ask_time(&server, "about to vanish");
        doomed
            .write_all(b"\xff\xfe\x00 binary, no line end")
            .unwrap();
        server.wait_for_line(r#""\xff\xfe\x00 binary, no line end""#);
        reset(doomed);
        let mut half = connect(server.addr);
        half.write_all(b"last words\r\n").unwrap();
        half.shutdown(Shutdown::Write).unwrap();
        let rest = read_to_eof(&mut half);
        assert!(rest.ends_with(b"\r\n"), "{mode}: \"{}\"", escaped(&rest));
        assert_ctime(std::str::from_utf8(&rest[..rest.len() - 2]).unwrap_or(""));
        ask_time(&server, "still there?");
        assert!(server.is_running());
        assert!(
            !server.stderr_text().contains("panicked"),
            "{}",
            server.stderr_text()
        );
    }

    #[test]
    fn sync_survives_resets_and_half_close() {
        resets_and_half_close("sync");
    }

    #[test]
    fn threading_survives_resets_and_half_close() {
        resets_and_half_close("threading");
    }

    #[test]
    fn forking_survives_resets_and_half_close() {
        resets_and_half_close("forking");
    }

    // UDP (`--udp`): the shared checks (`cargo run -- check 10`) are TCP only; these
    // are the datagram side of the protocol, as checks of their own.

    /// UDP check `udp-stamp`: `hello` comes back as `[<ctime>] hello`, from the address
    /// the client sent to.
    fn udp_stamp(addr: SocketAddr) {
        let raw = udp::socket();
        let (reply, from) = udp::ask(&raw, addr, b"hello");
        assert_eq!(
            from, addr,
            "UDP, check udp-stamp: the reply comes from the server's address"
        );
        assert_udp_reply(&reply, b"hello", "check udp-stamp");
    }

    /// UDP check `udp-empty`: an empty datagram is a request too: `[<ctime>] `.
    fn udp_empty(addr: SocketAddr) {
        let (reply, _) = udp::ask(&udp::socket(), addr, b"");
        assert_udp_reply(&reply, b"", "check udp-empty");
    }

    /// UDP check `udp-binary`: every byte value, zero and invalid UTF-8 included.
    fn udp_binary(addr: SocketAddr) {
        let every_byte: Vec<u8> = (0..=255u8).rev().collect();
        let (reply, _) = udp::ask(&udp::socket(), addr, &every_byte);
        assert_udp_reply(&reply, &every_byte, "check udp-binary");
    }

    /// UDP check `udp-to-each-sender`: two senders, each gets the reply to its own
    /// datagram (a UDP server has one socket; the sender's address is the way back).
    fn udp_to_each_sender(addr: SocketAddr) {
        let (first, second) = (udp::socket(), udp::socket());
        first.send_to(b"from the first", addr).unwrap();
        second.send_to(b"from the second", addr).unwrap();
        let (reply, _) = udp::receive(&first);
        assert_udp_reply(&reply, b"from the first", "check udp-to-each-sender");
        let (reply, _) = udp::receive(&second);
        assert_udp_reply(&reply, b"from the second", "check udp-to-each-sender");
    }

    /// UDP check `udp-largest-whole`: the longest datagram whose reply fits in one
    /// datagram, 65,480 bytes (+ 27 = 65,507), comes back whole.
    fn udp_largest_whole(addr: SocketAddr) {
        let fits: Vec<u8> = (0..udp::MAX_IPV4_PAYLOAD - STAMP)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        let (reply, _) = udp::ask(&udp::socket(), addr, &fits);
        assert_udp_reply(&reply, &fits, "check udp-largest-whole");
    }

    /// UDP check `udp-too-long-is-cut`: a longer datagram (65,481 bytes, and the
    /// largest, 65,507) gets a reply cut to the largest datagram, 65,507 bytes: the
    /// stamp and the datagram's first 65,480 bytes.
    fn udp_too_long_is_cut(addr: SocketAddr) {
        let raw = udp::socket();
        for size in [udp::MAX_IPV4_PAYLOAD - STAMP + 1, udp::MAX_IPV4_PAYLOAD] {
            let long: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
            let (reply, _) = udp::ask(&raw, addr, &long);
            let check = format!("check udp-too-long-is-cut ({size} bytes sent)");
            assert_udp_reply(&reply, &long[..udp::MAX_IPV4_PAYLOAD - STAMP], &check);
        }
        let (reply, _) = udp::ask(&raw, addr, b"small ones are whole");
        assert_udp_reply(&reply, b"small ones are whole", "check udp-too-long-is-cut");
    }

    fn udp_checks_pass(mode: &str) {
        let server = start(mode, &["--udp", "--quiet"]);
        let _no_orphans = NoOrphans(server.pid());
        udp_stamp(server.addr);
        udp_empty(server.addr);
        udp_binary(server.addr);
        udp_to_each_sender(server.addr);
        udp_largest_whole(server.addr);
        udp_too_long_is_cut(server.addr);
    }

    #[test]
    fn udp_sync_passes_the_udp_checks() {
        udp_checks_pass("sync");
    }

    #[test]
    fn udp_threading_passes_the_udp_checks() {
        udp_checks_pass("threading");
    }

    #[test]
    fn udp_forking_passes_the_udp_checks() {
        udp_checks_pass("forking");
    }

    /// Over IPv6 the largest datagram is 20 bytes longer (its header is not counted in
    /// the 65,535): 65,527 bytes. Skipped where the machine has no IPv6 loopback.
    #[test]
    fn udp_reply_over_ipv6_is_cut_to_65527_bytes() {
        let Ok(raw) = UdpSocket::bind("[::1]:0") else {
            return;
        };
        raw.set_read_timeout(Some(WAIT)).unwrap();
        const MAX_IPV6_PAYLOAD: usize = 65_527;
        let server = Server::start(SERVER, &["--udp", "--host", "::1", "--quiet"]);
        let fits: Vec<u8> = vec![b'6'; MAX_IPV6_PAYLOAD - STAMP];
        let (reply, _) = udp::ask(&raw, server.addr, &fits);
        assert_udp_reply(&reply, &fits, "IPv6, the largest that fits");
        let largest: Vec<u8> = (0..MAX_IPV6_PAYLOAD)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let (reply, _) = udp::ask(&raw, server.addr, &largest);
        assert_udp_reply(
            &reply,
            &largest[..MAX_IPV6_PAYLOAD - STAMP],
            "IPv6, cut to 65,527 bytes",
        );
    }
}

/// The lesson's own tests: its log and transcripts, its flags and limits, each mode's
/// way of serving and stopping, and the contract every program of the workbook keeps.
mod lesson {
    use super::*;

    /// `10_socketserver_client | head -1` (TCP and UDP): a closed stdout ends the
    /// client quietly, status 0; it is not reported as a network error.
    #[test]
    fn the_client_stops_quietly_when_stdout_is_closed() {
        let server = Server::start(SERVER, &["--quiet"]);
        let port = server.port().to_string();
        let tcp = run_with_closed_stdout(CLIENT, &["--port", &port, "a", "b", "c"], b"");
        assert!(tcp.status.success(), "{:?}: {}", tcp.status, tcp.stderr);
        assert_eq!(tcp.stderr, "");
        let udp_server = Server::start(SERVER, &["--udp", "--quiet"]);
        let udp_port = udp_server.port().to_string();
        let udp = run_with_closed_stdout(CLIENT, &["--udp", "--port", &udp_port, "a", "b"], b"");
        assert!(udp.status.success(), "{:?}: {}", udp.status, udp.stderr);
        assert_eq!(udp.stderr, "");
    }

    // What a reply says is the protocol tests' business. Here a reply line is only a
    // sign that the server served: change the reply, and these tests still pass (but
    // for the transcripts, which show the replies: accept them with
    // `UPDATE_TRANSCRIPTS=1 cargo test --test 10_socketserver`).

    /// Sends `line` and `\r\n` on a fresh connection and waits for a reply line.
    fn ask(server: &Server, line: &str) -> TcpStream {
        let mut stream = connect(server.addr);
        stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        read_reply(&mut stream);
        stream
    }

    #[test]
    fn client_and_server_transcript() {
        let mut server = start("sync", &[]);
        let port = server.port().to_string();
        let client = run(CLIENT, &["--port", &port, "hello", "how are you"], b"");
        assert!(client.status.success(), "{}", client.stderr);
        let lines: Vec<&str> = client.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", client.stdout);
        server.wait_for_line(log::DISCONNECTED);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(
            exited
                .stdout
                .contains(&format!("{}: served 1 client\n", log::SHUTTING_DOWN))
        );
        assert!(
            exited.stdout.contains(r#": "hello\r\n""#),
            "{}",
            exited.stdout
        );

        transcript::check(
            "10_client",
            &normalise(
                &exited,
                &format!(
                    "$ cargo run --bin 10_socketserver_client -- hello \"how are you\"\n{}",
                    client.stdout
                ),
            ),
        );
        transcript::check(
            "10_server",
            &normalise(
                &exited,
                &format!(
                    "$ cargo run --bin 10_socketserver_server\n{}",
                    with_ctrl_c(&exited.stdout)
                ),
            ),
        );
    }

    #[test]
    fn stdin_lines_until_an_empty_line() {
        let server = start("sync", &["--quiet"]);
        let port = server.port().to_string();
        let client = run(CLIENT, &["--port", &port], b"one\r\ntwo\n\nnot sent\n");
        assert!(client.status.success(), "{}", client.stderr);
        let lines: Vec<&str> = client.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", client.stdout);
        assert!(
            !client.stdout.contains("> "),
            "no prompt without a terminal"
        );
    }

    /// The Python tutorial's client: `Hello` without a line end is logged and not
    /// answered; `World\r\n` is answered, once.
    fn a_chunk_waits_for_its_line_end(mode: &str) -> Exited {
        let mut server = start(mode, &[]);
        let _no_orphans = NoOrphans(server.pid());
        let mut conn = connect(server.addr);
        conn.write_all(b"Hello").unwrap();
        server.wait_for_line(&format!("{} 5 bytes from ", log::RECEIVED));
        conn.write_all(b"World\r\n").unwrap();
        read_reply(&mut conn);
        // Nothing more comes: `Hello` had no reply of its own.
        assert_closes_without_more(&mut conn, "after the one reply");
        server.wait_for_line(log::DISCONNECTED);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        let replies = lines_starting(&exited.stdout, log_words::REPLIED);
        assert_eq!(replies.len(), 1, "{}", exited.stdout);
        exited
    }

    #[test]
    fn sync_a_chunk_waits_for_its_line_end() {
        let exited = a_chunk_waits_for_its_line_end("sync");
        transcript::check(
            "10_chunks",
            &normalise(
                &exited,
                &format!(
                    "$ cargo run --bin 10_socketserver_server      # a client sends \"Hello\", then \"World\\r\\n\"\n{}",
                    with_ctrl_c(&exited.stdout)
                ),
            ),
        );
    }

    /// Threading and forking serve a second client while the first one is connected and
    /// silent.
    fn second_client_served_while_first_idles(mode: &str) {
        let mut server = start(mode, &[]);
        let _no_orphans = NoOrphans(server.pid());
        let _idle = connect(server.addr);
        wait_for_start(&mut server, log::CONNECTED);
        let port = server.port().to_string();
        let other = run(CLIENT, &["--port", &port, "served meanwhile"], b"");
        assert!(other.status.success(), "{mode}: {}", other.stderr);
        assert_eq!(other.stdout.lines().count(), 1, "{mode}: {}", other.stdout);
    }

    #[test]
    fn threading_serves_a_second_client_while_the_first_idles() {
        second_client_served_while_first_idles("threading");
    }

    #[test]
    fn forking_serves_a_second_client_while_the_first_idles() {
        second_client_served_while_first_idles("forking");
    }

    /// Sync does not: the second client's connect succeeds (the backlog), but it is not
    /// even accepted until the first leaves. The test writes the book's transcript.
    #[test]
    fn sync_makes_the_second_client_wait() {
        let mut server = start("sync", &[]);
        let port = server.port().to_string();
        let mut first = Interactive::start(CLIENT, &["--port", &port]);
        first.send_line("I was here first");
        let first_reply = first.expect_line();
        server.wait_for_line(log_words::REPLIED);

        let mut second = Interactive::start(CLIENT, &["--port", &port]);
        second.send_line("me too?");
        // Nothing may come back while the first client is connected. Waiting longer could
        // only make this check stricter, never make it fail on a slow machine.
        assert_eq!(second.next_line(Duration::from_millis(500)), None);
        let meanwhile = server.drain();
        assert!(
            !meanwhile
                .iter()
                .any(|line| line.starts_with(log::CONNECTED)),
            "{meanwhile:?}"
        );

        let first_done = first.finish();
        assert!(first_done.status.success(), "{}", first_done.stderr);
        let second_reply = second.expect_line();
        let second_done = second.finish();
        assert!(second_done.status.success(), "{}", second_done.stderr);
        server.wait_for_line(log::DISCONNECTED);
        server.wait_for_line(log::DISCONNECTED);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        let lines: Vec<&str> = exited.stdout.lines().collect();
        let first_gone = lines.iter().position(|l| l.starts_with(log::DISCONNECTED));
        let second_in = lines.iter().rposition(|l| l.starts_with(log::CONNECTED));
        assert!(first_gone < second_in, "{lines:#?}");

        let story = format!(
            "# terminal 2: the first client\n\
             $ cargo run --bin 10_socketserver_client\n\
             > I was here first\n\
             {first_reply}\n\
             \n\
             # terminal 3: a second client, while the first is still connected\n\
             $ cargo run --bin 10_socketserver_client\n\
             > me too?\n\
             (no reply: connect() succeeded, but the server has not accepted us yet)\n\
             \n\
             # terminal 2: the first client ends (an empty line)\n\
             > \n\
             # terminal 3: at once, the reply arrives\n\
             {second_reply}\n\
             \n\
             # terminal 1: the server\n\
             $ cargo run --bin 10_socketserver_server\n\
             {}",
            with_ctrl_c(&exited.stdout)
        );
        transcript::check("10_sync_waits", &normalise(&exited, &story));
    }

    /// Terminal 2 holds a connection, terminal 3 is served meanwhile, then Ctrl-C: the
    /// held request ends too. Writes the book's transcript for `mode`.
    fn hold_and_serve_meanwhile(mode: &str) -> Exited {
        let mut server = start(mode, &[]);
        let _no_orphans = NoOrphans(server.pid());
        let port = server.port().to_string();
        let mut holder = Interactive::start(CLIENT, &["--port", &port, "--hold", "30", "late"]);
        let holding = holder.expect_line();
        assert!(holding.contains("holding the connection idle for 30 s"));
        wait_for_start(&mut server, log::CONNECTED);
        let other = run(CLIENT, &["--port", &port, "served meanwhile"], b"");
        assert!(other.status.success(), "{}", other.stderr);
        server.wait_for_line(log::DISCONNECTED);
        if mode == "forking" {
            server.wait_for_line(log_words::REAPED);
        }
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        drop(holder);
        let story = format!(
            "# terminal 2: a client that stays idle for 30 s\n\
             $ cargo run --bin 10_socketserver_client -- --hold 30 late\n\
             {holding}\n\
             \n\
             # terminal 3, meanwhile: another client, served at once\n\
             $ cargo run --bin 10_socketserver_client -- \"served meanwhile\"\n\
             {}\n\
             # terminal 1: the server, stopped with Ctrl-C while terminal 2 still holds\n\
             $ cargo run --bin 10_socketserver_server -- --mode {mode}\n\
             {}",
            other.stdout,
            with_ctrl_c(&exited.stdout)
        );
        transcript::check(&format!("10_{mode}"), &normalise(&exited, &story));
        exited
    }

    #[test]
    fn threading_transcript() {
        let exited = hold_and_serve_meanwhile("threading");
        assert!(
            exited
                .stdout
                .contains(": served 2 clients, all threads joined"),
            "{}",
            exited.stdout
        );
        assert!(
            exited.stdout.contains("(thread req-1)"),
            "{}",
            exited.stdout
        );
    }

    #[test]
    fn forking_transcript() {
        let exited = hold_and_serve_meanwhile("forking");
        assert!(
            exited
                .stdout
                .contains(": served 2 clients, all children reaped"),
            "{}",
            exited.stdout
        );
        let reaped = exited
            .stdout
            .lines()
            .filter(|l| l.starts_with(log_words::REAPED) && l.contains("exit status 0"))
            .count();
        assert_eq!(reaped, 2, "{}", exited.stdout);
    }

    /// At the bound, a third client connects (the backlog) but is not served until one of
    /// the first two leaves.
    fn third_client_waits_at_the_bound(mode: &str, flag: &str) {
        let mut server = start(mode, &[flag, "2"]);
        let _no_orphans = NoOrphans(server.pid());
        let first = ask(&server, "one");
        let _second = ask(&server, "two");
        wait_for_start(&mut server, log::CONNECTED);
        wait_for_start(&mut server, log::CONNECTED);
        server.drain();
        let mut third = connect(server.addr);
        third.write_all(b"three\r\n").unwrap();
        third
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert!(
            third.read(&mut byte).is_err(),
            "{mode}: the third client was answered while two were served"
        );
        let meanwhile = server.drain();
        assert!(
            !meanwhile.iter().any(|l| l.starts_with(log::CONNECTED)),
            "{mode}: a third connection was accepted: {meanwhile:?}"
        );
        drop(first);
        third.set_read_timeout(Some(WAIT)).unwrap();
        read_reply(&mut third);
    }

    #[test]
    fn threading_max_threads_makes_the_third_client_wait() {
        third_client_waits_at_the_bound("threading", "--max-threads");
    }

    #[test]
    fn forking_max_children_makes_the_third_client_wait() {
        third_client_waits_at_the_bound("forking", "--max-children");
    }

    /// After 20 clients have come and gone, no child is left: not one zombie, not one
    /// still running. The server reaps when SIGCHLD wakes it, not only at the next accept.
    #[test]
    fn forking_leaves_no_zombies() {
        let mut server = start("forking", &[]);
        let _no_orphans = NoOrphans(server.pid());
        for index in 0..20 {
            drop(ask(&server, &format!("client {index}")));
        }
        let pid = server.pid();
        let mut zombies = Vec::new();
        let none = eventually(|| {
            zombies = children_of(pid)
                .into_iter()
                .filter(|(_, state)| *state == 'Z')
                .collect();
            zombies.is_empty()
        });
        assert!(none, "zombie children left: {zombies:?}");
        let mut children = Vec::new();
        let gone = eventually(|| {
            children = children_of(pid);
            children.is_empty()
        });
        assert!(gone, "children left: {children:?}");
        for _ in 0..20 {
            let reaped = server.wait_for_line(log_words::REAPED);
            assert!(reaped.contains(": exit status 0 ("), "{reaped}");
        }
        let exited = server.stop(SIGTERM);
        assert_clean_shutdown(&exited);
        assert!(
            exited
                .stdout
                .contains("served 20 clients, all children reaped")
        );
    }

    /// Ten clients at once are ten threads; when they leave, the server is back to its
    /// three threads (main, the signal handler's and the log's writer) and its descriptors.
    #[test]
    fn threading_threads_and_descriptors_back_to_baseline() {
        let server = start("threading", &["--quiet"]);
        let threads = server.threads();
        let fds = server.open_fds();
        let clients: Vec<TcpStream> = (0..10)
            .map(|index| ask(&server, &format!("client {index}")))
            .collect();
        assert_eq!(server.threads(), threads + 10);
        drop(clients);
        let (mut now_threads, mut now_fds) = (0, 0);
        let back = eventually(|| {
            now_threads = server.threads();
            now_fds = server.open_fds();
            now_threads == threads && now_fds == fds
        });
        assert!(
            back,
            "{now_threads} threads and {now_fds} descriptors; {threads} and {fds} before"
        );
    }

    /// Sync under `ulimit -n 16`: 100 clients queue up and are served one after the other;
    /// one connection at a time needs one descriptor at a time.
    #[test]
    fn sync_serves_a_queue_of_100_under_a_limit_of_16_descriptors() {
        let server = Server::start_with_fd_limit(
            SERVER,
            &["--mode", "sync", "--quiet", "--request-queue-size", "128"],
            16,
        );
        let mut clients: Vec<TcpStream> = (0..100)
            .map(|index| {
                let mut stream = connect(server.addr);
                stream
                    .write_all(format!("client {index}\r\n").as_bytes())
                    .unwrap();
                stream
            })
            .collect();
        for stream in clients.iter_mut() {
            read_reply(stream);
            // Closed in the order they came: the server then takes the next from the queue.
            stream.shutdown(Shutdown::Write).unwrap();
        }
        drop(clients);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(
            exited.stdout.contains("served 100 clients"),
            "{}",
            exited.stdout
        );
        assert!(!exited.stdout.contains(log::ERROR), "{}", exited.stdout);
    }

    /// Threading under `ulimit -n 64`, 100 clients at once: accept fails with EMFILE, the
    /// server logs it and goes on, and once they leave it serves a fresh client.
    #[test]
    fn threading_survives_a_low_descriptor_limit() {
        let mut server = Server::start_with_fd_limit(
            SERVER,
            &[
                "--mode",
                "threading",
                "--quiet",
                "--request-queue-size",
                "128",
            ],
            64,
        );
        crowd_past_fd_limit(&mut server);
        ask(&server, "served after the crowd left");
    }

    /// Forking under `ulimit -n 16`: 30 clients served at once. Each child has a table of
    /// its own, and the parent closes its copy of every connection: it never holds more
    /// descriptors than it started with.
    #[test]
    fn forking_parent_closes_its_copies_under_a_limit_of_16_descriptors() {
        let server = Server::start_with_fd_limit(
            SERVER,
            &[
                "--mode",
                "forking",
                "--quiet",
                "--request-queue-size",
                "128",
            ],
            16,
        );
        let _no_orphans = NoOrphans(server.pid());
        let baseline = server.open_fds();
        let clients: Vec<TcpStream> = (0..30)
            .map(|index| ask(&server, &format!("client {index}")))
            .collect();
        assert_eq!(children_of(server.pid()).len(), 30);
        // The parent closes its copy right after fork(2): by now, or a moment later.
        let mut open = 0;
        let closed = eventually(|| {
            open = server.open_fds();
            open == baseline
        });
        assert!(
            closed,
            "the parent holds {open} descriptors, {baseline} at the start"
        );
        drop(clients);
        let pid = server.pid();
        assert!(eventually(|| children_of(pid).is_empty()));
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(!exited.stdout.contains(log::ERROR), "{}", exited.stdout);
    }

    #[test]
    fn allow_rejects_other_networks_and_admits_its_own() {
        for mode in MODES {
            let mut server = start(mode, &["--allow", "10.0.0.0/8"]);
            let _no_orphans = NoOrphans(server.pid());
            let mut turned_away = connect(server.addr);
            let rejected = server.wait_for_line(log_words::REJECTED);
            assert!(
                rejected.ends_with(": not in --allow 10.0.0.0/8"),
                "{rejected}"
            );
            // Closed without a word.
            assert_same_bytes(&read_to_eof(&mut turned_away), b"", "a rejected client");
            // The client learns it on its first read.
            let port = server.port().to_string();
            let refused = run(CLIENT, &["--port", &port, "hello"], b"");
            assert_error_line(&refused, &["talking to 127.0.0.1:"]);
            assert!(
                children_of(server.pid()).is_empty(),
                "no child for a rejected client"
            );
            let exited = server.stop(SIGINT);
            assert_clean_shutdown(&exited);
            assert!(
                exited.stdout.contains("served 0 clients"),
                "{}",
                exited.stdout
            );
            if mode == "sync" {
                transcript::check(
                    "10_allow",
                    &normalise(
                        &exited,
                        &format!(
                            "$ cargo run --bin 10_socketserver_server -- --allow 10.0.0.0/8\n{}",
                            with_ctrl_c(&exited.stdout)
                        ),
                    ),
                );
            }

            let server = start(mode, &["--allow", "127.0.0.0/8,::1"]);
            let _no_orphans = NoOrphans(server.pid());
            ask(&server, "let me in");
        }
    }

    /// Is a thread of process `pid` asleep in the sendto(2) system call (what a write to a
    /// TCP socket is), that is waiting for room to write to a client that does not read?
    /// `/proc/PID/task/TID/syscall` starts with the number of the call a thread is in.
    fn blocked_in_send(pid: u32) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().any(|task| {
            let call = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let sleeping = stat
                .rfind(')')
                .is_some_and(|close| stat[close + 1..].trim_start().starts_with('S'));
            sleeping && call.split(' ').next() == Some(&nix::libc::SYS_sendto.to_string())
        })
    }

    /// A busy connection (the client sends line ends and never reads the replies, so its
    /// handler ends up blocked in write) and an idle one, then the signal: the server
    /// exits cleanly within the time allowed, and leaves nothing behind.
    fn stops_with_busy_and_idle_clients(mode: &str, signal: Signal) -> Exited {
        // Quiet: a log line per reply would make the pipe to us, not the client, the
        // bottleneck. Errors, and children that did not exit 0, are still logged.
        let server = start(mode, &["--quiet"]);
        let _no_orphans = NoOrphans(server.pid());
        let mut flooder = connect(server.addr);
        let flooding = thread::spawn(move || {
            let chunk = b"\r\n".repeat(1 << 15);
            for _ in 0..512 {
                if flooder.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        // The process serving the flooder: the server itself, or (forking) its child.
        let pid = server.pid();
        let mut serving = pid;
        if mode == "forking" {
            assert!(eventually(|| children_of(pid).len() == 1));
            serving = children_of(pid)[0].0;
        }
        assert!(
            eventually(|| blocked_in_send(serving)),
            "{mode}: the handler never blocked in write"
        );
        let mut idle = connect(server.addr);
        if mode == "forking" {
            assert!(eventually(|| children_of(pid).len() == 2));
        } else if mode == "threading" {
            // Main, the signal handler's, the log's writer, and one per connection.
            assert!(eventually(|| server.threads() == 5));
        }
        let children = children_of(pid);
        let exited = server.stop(signal);
        assert_clean_shutdown(&exited);
        flooding.join().unwrap();
        // The idle client sees the end: a clean close, or (sync, never accepted) a reset.
        let mut rest = Vec::new();
        let _ = idle.read_to_end(&mut rest);
        for (pid, _) in children {
            assert!(
                !is_our_server(pid),
                "{mode}: child {pid} outlived the server"
            );
        }
        // Blocked in write, the busy one was cut off after the grace period: its write
        // failed (sync, threading), or it was killed (forking).
        let cut = exited.stdout.contains("killed by SIGKILL") || exited.stdout.contains(log::ERROR);
        assert!(cut, "{mode}: {}", exited.stdout);
        exited
    }

    #[test]
    fn sync_stops_with_a_busy_client() {
        stops_with_busy_and_idle_clients("sync", SIGINT);
    }

    #[test]
    fn threading_stops_with_busy_and_idle_clients() {
        let exited = stops_with_busy_and_idle_clients("threading", SIGTERM);
        assert!(
            exited.stdout.contains("all threads joined"),
            "{}",
            exited.stdout
        );
    }

    #[test]
    fn forking_stops_with_busy_and_idle_children_and_leaves_none_behind() {
        let exited = stops_with_busy_and_idle_clients("forking", SIGTERM);
        // The idle child stopped reading when told (SIGTERM) and exited 0, which --quiet
        // does not log; the one blocked writing to a client that does not read was killed
        // after the grace period.
        assert!(
            exited.stdout.contains("killed by SIGKILL"),
            "{}",
            exited.stdout
        );
        assert!(
            exited.stdout.contains("all children reaped"),
            "{}",
            exited.stdout
        );
    }

    #[test]
    fn udp_transcript() {
        let mut server = Server::start(SERVER, &["--udp"]);
        let port = server.port().to_string();
        let client = run(
            CLIENT,
            &["--port", &port, "--udp", "hello", "datagrams stay whole"],
            b"",
        );
        assert!(client.status.success(), "{}", client.stderr);
        let lines: Vec<&str> = client.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", client.stdout);
        server.wait_for_line(log_words::REPLIED);
        server.wait_for_line(log_words::REPLIED);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(
            exited
                .stdout
                .contains("mode: UDP, sync: one datagram at a time")
        );
        assert!(exited.stdout.contains(": served 2 datagrams"));
        transcript::check(
            "10_udp",
            &normalise(
                &exited,
                &format!(
                    "$ cargo run --bin 10_socketserver_client -- --udp hello \"datagrams stay whole\"\n{}\n\
                     $ cargo run --bin 10_socketserver_server -- --udp      # terminal 1\n{}",
                    client.stdout,
                    with_ctrl_c(&exited.stdout)
                ),
            ),
        );
    }

    /// A datagram too long for `[<ctime>] ` in front of it (anything over 65,480 bytes over
    /// IPv4) gets a reply cut to the largest datagram (the protocol tests check its
    /// bytes); a log line says how much was left out, and the client says it was cut.
    #[test]
    fn udp_cut_reply_is_logged_and_the_client_says_so() {
        let mut server = Server::start(SERVER, &["--udp"]);
        let raw = udp::socket();
        for size in [udp::MAX_IPV4_PAYLOAD - STAMP + 1, udp::MAX_IPV4_PAYLOAD] {
            let long: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
            let (reply, _) = udp::ask(&raw, server.addr, &long);
            assert_eq!(reply.len(), udp::MAX_IPV4_PAYLOAD, "a reply cut to fit");
            let truncated = server.wait_for_line(log_words::TRUNCATED);
            let cut = size - (udp::MAX_IPV4_PAYLOAD - STAMP);
            assert!(
                truncated.contains(&format!("last {} left out", show_bytes(cut))),
                "{truncated}"
            );
        }
        // The client takes the cut reply as the answer, prints it, and says it was cut.
        let port = server.port().to_string();
        let mut line = vec![b'y'; udp::MAX_IPV4_PAYLOAD];
        line.push(b'\n');
        let client = run(CLIENT, &["--port", &port, "--udp"], &line);
        assert!(client.status.success(), "{}", client.stderr);
        assert_eq!(
            client.stdout.trim_end().len(),
            udp::MAX_IPV4_PAYLOAD,
            "the client prints the cut reply"
        );
        assert!(
            client
                .stderr
                .contains("it echoes 65480 of the 65507 bytes sent"),
            "{}",
            client.stderr
        );
        server.wait_for_line(log_words::TRUNCATED);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(!exited.stdout.contains(log::ERROR), "{}", exited.stdout);

        // For the book: the server's log of one such datagram.
        let mut server = Server::start(SERVER, &["--udp"]);
        let largest = vec![b'x'; udp::MAX_IPV4_PAYLOAD];
        let (reply, _) = udp::ask(&raw, server.addr, &largest);
        assert_eq!(reply.len(), udp::MAX_IPV4_PAYLOAD, "a reply cut to fit");
        server.wait_for_line(log_words::REPLIED);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        transcript::check(
            "10_udp_truncated",
            &normalise(
                &exited,
                &format!(
                    "$ cargo run --bin 10_socketserver_server -- --udp      # a client sends 65,507 bytes\n{}",
                    with_ctrl_c(&exited.stdout)
                ),
            ),
        );
    }

    /// Threading and forking serve datagrams too: a thread, or a child process, for each
    /// (the protocol tests check the replies in every mode). Here: nothing is left behind,
    /// and `--quiet` keeps the log to its first and last lines.
    #[test]
    fn udp_in_every_mode_leaves_nothing_behind() {
        for mode in MODES {
            let server = start(mode, &["--udp", "--quiet"]);
            let _no_orphans = NoOrphans(server.pid());
            let raw = udp::socket();
            for index in 0..5 {
                let message = format!("datagram {index}");
                udp::ask(&raw, server.addr, message.as_bytes());
            }
            let pid = server.pid();
            assert!(eventually(|| children_of(pid).is_empty()), "{mode}");
            let exited = server.stop(SIGTERM);
            assert_clean_shutdown(&exited);
            let lines: Vec<&str> = exited.stdout.lines().collect();
            assert_eq!(lines.len(), 2, "{mode}: {}", exited.stdout);
            assert!(lines[1].contains(": served 5 datagrams"));
        }
    }

    #[test]
    fn udp_allow_leaves_other_networks_unanswered() {
        let mut server = Server::start(SERVER, &["--udp", "--allow", "10.0.0.0/8"]);
        let raw = udp::socket();
        raw.send_to(b"anyone there?", server.addr).unwrap();
        let rejected = server.wait_for_line(log_words::REJECTED);
        assert!(
            rejected.ends_with(": not in --allow 10.0.0.0/8"),
            "{rejected}"
        );
        // The log line comes after the decision: no reply was sent, none will be.
        raw.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 64];
        assert!(raw.recv_from(&mut buffer).is_err());
    }

    /// A stand-in UDP server that loses the first datagram, then answers the second with
    /// a stale reply followed by the right one.
    #[test]
    fn udp_client_sends_again_and_ignores_stale_replies() {
        let fake = UdpSocket::bind("127.0.0.1:0").unwrap();
        fake.set_read_timeout(Some(WAIT)).unwrap();
        let port = fake.local_addr().unwrap().port().to_string();
        let answering = thread::spawn(move || {
            let mut buffer = [0u8; 1024];
            let (_, _) = fake.recv_from(&mut buffer).unwrap();
            let (size, from) = fake.recv_from(&mut buffer).unwrap();
            assert_eq!(&buffer[..size], b"hello");
            fake.send_to(b"[Sun Nov 22 10:00:00 2026] earlier", from)
                .unwrap();
            fake.send_to(b"[Sun Nov 22 10:00:00 2026] hello", from)
                .unwrap();
        });
        let client = run(
            CLIENT,
            &["--port", &port, "--udp", "--timeout-ms", "200", "hello"],
            b"",
        );
        answering.join().unwrap();
        assert!(client.status.success(), "{}", client.stderr);
        assert_same_bytes(
            client.stdout.as_bytes(),
            b"[Sun Nov 22 10:00:00 2026] hello\n",
            "the client's output",
        );
        assert!(
            client
                .stderr
                .contains("no reply within 200 ms (try 1 of 4); sending again"),
            "{}",
            client.stderr
        );
        assert!(
            client.stderr.contains("ignored a reply"),
            "{}",
            client.stderr
        );
    }

    /// Enough TCP traffic for the server to log more than a pipe holds (64 KiB): each
    /// round trip logs a `received` and a `replied` line, about 150 bytes; then a reset,
    /// a half-close and a fresh client, one after the other (sync serves one at a time).
    /// Every reply is waited for: the server still serves.
    fn busy_tcp(addr: SocketAddr) {
        let mut stream = connect(addr);
        for _ in 0..800 {
            stream.write_all(b"what time is it?\r\n").unwrap();
            read_reply(&mut stream);
        }
        drop(stream);
        let mut doomed = connect(addr);
        doomed.write_all(b"about to reset\r\n").unwrap();
        read_reply(&mut doomed);
        reset(doomed);
        let mut half = connect(addr);
        half.write_all(b"last words\r\n").unwrap();
        half.shutdown(Shutdown::Write).unwrap();
        let rest = String::from_utf8(read_to_eof(&mut half)).unwrap();
        assert!(rest.ends_with("\r\n"), "{rest:?}");
        let mut after = connect(addr);
        after.write_all(b"still serving\r\n").unwrap();
        read_reply(&mut after);
    }

    /// The same for UDP: 800 datagrams, each logged twice, each answered.
    fn busy_udp(addr: SocketAddr) {
        let raw = udp::socket();
        for index in 0..800 {
            let message = format!("datagram {index}");
            udp::ask(&raw, addr, message.as_bytes());
        }
    }

    #[test]
    fn sync_survives_a_closed_stdout() {
        contract::survives_closed_stdout(SERVER, &["--mode", "sync"], busy_tcp);
    }

    #[test]
    fn sync_survives_a_stalled_stdout() {
        contract::survives_stalled_stdout(SERVER, &["--mode", "sync"], busy_tcp);
    }

    #[test]
    fn threading_survives_a_closed_stdout() {
        contract::survives_closed_stdout(SERVER, &["--mode", "threading"], busy_tcp);
    }

    #[test]
    fn threading_survives_a_stalled_stdout() {
        contract::survives_stalled_stdout(SERVER, &["--mode", "threading"], busy_tcp);
    }

    /// Forking: the children log too, and a child must neither die of a closed stdout
    /// nor block on a stalled one (its client would wait for ever).
    #[test]
    fn forking_survives_a_closed_stdout() {
        contract::survives_closed_stdout(SERVER, &["--mode", "forking"], busy_tcp);
    }

    #[test]
    fn forking_survives_a_stalled_stdout() {
        contract::survives_stalled_stdout(SERVER, &["--mode", "forking"], busy_tcp);
    }

    #[test]
    fn udp_survives_a_closed_stdout() {
        contract::survives_closed_stdout(SERVER, &["--udp"], busy_udp);
    }

    #[test]
    fn udp_survives_a_stalled_stdout() {
        contract::survives_stalled_stdout(SERVER, &["--udp"], busy_udp);
    }

    #[test]
    fn udp_forking_survives_closed_and_stalled_stdout() {
        contract::survives_closed_stdout(SERVER, &["--udp", "--mode", "forking"], busy_udp);
        contract::survives_stalled_stdout(SERVER, &["--udp", "--mode", "forking"], busy_udp);
    }

    #[test]
    fn contract_server() {
        contract::server_reports_bad_host(SERVER);
        contract::rejects_bad_flags(SERVER);
        for bad in [
            &["--mode", "async"][..],
            &["--mode", "threading", "--max-threads", "0"],
            &["--max-threads", "4"],
            &["--mode", "forking", "--max-children", "0"],
            &["--mode", "threading", "--max-children", "4"],
            &["--allow", "localhost"],
            &["--allow", "10.1.2.3/8"],
            &["--allow", "10.0.0.0/33"],
            &["--request-queue-size", "-1"],
            &["--udp", "--request-queue-size", "5"],
            &["--quiet=yes"],
        ] {
            assert_usage_error(&run(SERVER, bad, b""));
        }
        for mode in MODES {
            contract::server_reports_port_in_use(SERVER, &["--mode", mode]);
            udp::server_reports_port_in_use(SERVER, &["--udp", "--mode", mode]);
            for udp in [&[][..], &["--udp"]] {
                let mut args = vec!["--mode", mode];
                args.extend(udp);
                let exited = contract::server_stops_on(SERVER, &args, SIGINT);
                assert!(exited.stdout.contains("mode: "), "{}", exited.stdout);
                args.push("--quiet");
                let quiet = contract::server_stops_on(SERVER, &args, SIGTERM);
                assert_eq!(quiet.stdout.lines().count(), 2, "{}", quiet.stdout);
            }
        }
    }

    #[test]
    fn contract_client() {
        contract::rejects_bad_flags(CLIENT);
        for bad in [
            &["--udp", "--hold", "1"][..],
            &["--hold", "-1"],
            &["--timeout-ms", "0"],
            &["--retries", "many"],
        ] {
            assert_usage_error(&run(CLIENT, bad, b""));
        }
        contract::client_reports_no_server(CLIENT, SERVER_BIN, &[]);
        contract::client_reports_no_server(CLIENT, SERVER_BIN, &["--udp"]);
    }

    /// The book shows the client's two failures when nothing runs; written from real runs.
    #[test]
    fn no_server_transcript() {
        let closed = closed_port();
        let closed_text = closed.to_string();
        let tcp = run(CLIENT, &["--port", &closed_text, "hello"], b"");
        assert_error_line(&tcp, &["refused", "cargo run --bin 10_socketserver_server"]);
        let closed_udp = udp::closed_port();
        let closed_udp_text = closed_udp.to_string();
        let over_udp = run(CLIENT, &["--port", &closed_udp_text, "--udp", "hello"], b"");
        assert_error_line(
            &over_udp,
            &["refused", "cargo run --bin 10_socketserver_server -- --udp"],
        );
        let text = format!(
            "$ cargo run --bin 10_socketserver_client -- hello      # no server running\n{}\
             $ cargo run --bin 10_socketserver_client -- --udp hello\n{}",
            tcp.stderr, over_udp.stderr
        );
        let normal = Normaliser::new()
            .port(closed, DEFAULT_PORT)
            .port(closed_udp, DEFAULT_PORT);
        transcript::check("10_no_server", &normal.apply(&text));
    }
}

/// The chapter's exercises that change the lesson: each test fails on the lesson as
/// shipped and passes once the exercise is done (reference solutions in
/// `exercises/10_socketserver/`).
mod exercises {
    use super::*;

    /// 10.1: `--handler reverse` answers each line with the line reversed.
    #[test]
    #[ignore = "exercise 10.1: cargo run -- exercise 10.1"]
    fn exercise_1_reverse_handler() {
        let server = Server::start(SERVER, &["--handler", "reverse"]);
        let mut stream = connect(server.addr);
        // Two lines in one write, then one line in two writes, and a bare `\n`.
        stream
            .write_all("hello\r\nw\u{f6}rld\r\nsplit li".as_bytes())
            .unwrap();
        stream.write_all(b"ne\r\nno cr\n").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        assert_same_bytes(
            &read_to_eof(&mut stream),
            "olleh\r\ndlr\u{f6}w\r\nenil tilps\r\nrc on\r\n".as_bytes(),
            "the reversed lines, then the close",
        );
        // The time handler is still the default.
        let server = Server::start(SERVER, &[]);
        ask_time(&server, "still the time");
    }

    /// 10.2: `--timeout SECS` (Python's `StreamRequestHandler.timeout`): a client that
    /// sends nothing for that long is cut off with an `error:` line, in every mode; the
    /// others are served.
    #[test]
    #[ignore = "exercise 10.2: cargo run -- exercise 10.2"]
    fn exercise_2_handler_timeout() {
        for mode in MODES {
            let mut server = start(mode, &["--timeout", "0.5"]);
            let _no_orphans = NoOrphans(server.pid());
            let mut silent = connect(server.addr);
            let silent_port = format!(":{} ->", silent.local_addr().unwrap().port());
            // Sync serves one client at a time: this one only once the silent one is
            // cut off. Threading and forking serve it at once.
            ask_time(&server, "I am not silent");
            assert_same_bytes(
                &read_to_eof(&mut silent),
                b"",
                &format!("{mode}: the silent client, cut off"),
            );
            loop {
                let error = server.wait_for_line(log::ERROR);
                if error.contains(&silent_port) {
                    break;
                }
            }
        }
    }

    /// 10.3: a chunk that begins with `panic` makes the handler panic: no reply, an
    /// `error: ... the handler panicked` line, and the server goes on, in every mode
    /// (forking: the child exits with status 1, and the parent says so).
    #[test]
    #[ignore = "exercise 10.3: cargo run -- exercise 10.3"]
    fn exercise_3_a_panicking_handler() {
        for mode in MODES {
            let mut server = start(mode, &[]);
            let _no_orphans = NoOrphans(server.pid());
            let mut doomed = connect(server.addr);
            doomed.write_all(b"panic\r\n").unwrap();
            assert_closes_without_more(
                &mut doomed,
                &format!("{mode}: the reply to panic\\r\\n (none: the handler panicked)"),
            );
            let error = server.wait_for_line(log::ERROR);
            assert!(error.contains("the handler panicked"), "{mode}: {error}");
            if mode == "forking" {
                let reaped = server.wait_for_line(log_words::REAPED);
                assert!(reaped.contains("exit status 1"), "{reaped}");
            }
            ask_time(&server, "still serving");
        }
    }
}

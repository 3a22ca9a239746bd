//! Lesson 02: the "I get it!" echo server with socket options, and its half-closing
//! client, run as real programs.
//!
//! - `protocol`: what any server of this lesson's protocol must do on the wire (the
//!   checks of `cargo run -- check 02`, and a few cases they lack).
//! - `lesson`: this lesson's programs: the options and their tables, TIME_WAIT, the
//!   log, the flags, and the book's transcripts.
//! - `exercises`: the chapter's exercises, `#[ignore]`d: each fails on the lesson as
//!   shipped and passes once the exercise is done
//!   (`cargo test --test 02_socket_options -- --ignored exercise_1`).

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use regex::Regex;
use support::transcript::{self, Normaliser};
use support::*;
use workbook::log;

const SERVER: &str = env!("CARGO_BIN_EXE_02_socket_options_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_02_socket_options_client");
const DEFAULT_PORT: u16 = 12345;
const I_GET_IT: &[u8] = b"\nI get it!\n";

// ---------------------------------------------------------------------------
// Helpers of this lesson's tests.

/// The reply with every `\nI get it!\n` taken out, and how many there were.
fn strip_markers(reply: &[u8]) -> (Vec<u8>, usize) {
    let mut echoed = Vec::with_capacity(reply.len());
    let mut count = 0;
    let mut rest = reply;
    while !rest.is_empty() {
        if rest.starts_with(I_GET_IT) {
            count += 1;
            rest = &rest[I_GET_IT.len()..];
        } else {
            echoed.push(rest[0]);
            rest = &rest[1..];
        }
    }
    (echoed, count)
}

/// The value column of `option` in the first table of `log` that has that row.
fn table_value(log: &str, option: &str) -> String {
    let row = log
        .lines()
        .find(|line| line.split_whitespace().next() == Some(option))
        .unwrap_or_else(|| panic!("no {option} row in:\n{log}"));
    cells(row)[2].clone()
}

/// The cells of one table row (columns are separated by two or more spaces).
fn cells(row: &str) -> Vec<String> {
    Regex::new(r"\s{2,}")
        .unwrap()
        .split(row.trim())
        .map(str::to_string)
        .collect()
}

fn sysctl(name: &str) -> String {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {path}: {err}"))
}

/// What Linux makes of `setsockopt(SO_RCVBUF or SO_SNDBUF, asked)`: capped at the
/// sysctl maximum, doubled, and at least its minimum (net/core/sock.c).
fn kernel_buffer_size(asked: u64, max_sysctl: &str) -> u64 {
    let max: u64 = sysctl(max_sysctl).trim().parse().unwrap();
    (asked.min(max) * 2).max(2048)
}

/// Re-renders every option table in `text` (a line `option  level  ...` and the rows
/// under it, at the same indent) after `fixed` has had its say on each cell, so that
/// values set by the kernel's version and sysctls rather than by the lesson read the
/// same on every machine. `fixed(option, column)` returns the value to show instead.
fn normalise_tables(text: &str, fixed: &dyn Fn(&str, &str) -> Option<String>) -> String {
    let header = Regex::new(r"^( *)option +level +").unwrap();
    let mut out = String::new();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        let Some(found) = header.captures(line) else {
            out.push_str(line);
            index += 1;
            continue;
        };
        let indent = found[1].to_string();
        let columns = cells(line);
        // Where each column starts, found left to right in the header.
        let mut starts = Vec::new();
        let mut from = 0;
        for name in &columns {
            let at = from + line[from..].find(name.as_str()).unwrap();
            starts.push(at);
            from = at + name.len();
        }
        let mut rows = vec![columns.clone()];
        index += 1;
        while index < lines.len() {
            let row = lines[index].trim_end_matches('\n');
            let is_row = row
                .strip_prefix(indent.as_str())
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()));
            if !is_row {
                break;
            }
            let mut values: Vec<String> = starts
                .iter()
                .enumerate()
                .map(|(i, &start)| {
                    let end = starts.get(i + 1).copied().unwrap_or(row.len());
                    row.get(start..end.min(row.len()))
                        .unwrap_or("")
                        .trim()
                        .to_string()
                })
                .collect();
            let option = values[0].clone();
            for (i, column) in columns.iter().enumerate().skip(2) {
                if let Some(value) = fixed(&option, column) {
                    values[i] = value;
                }
            }
            rows.push(values);
            index += 1;
        }
        for row in workbook::options::format_table(&rows).lines() {
            out.push_str(&format!("{indent}{row}\n"));
        }
    }
    out
}

/// The values of a default run that depend on the machine, shown as they were on the
/// machine that wrote the book's transcripts (Linux 6.18, default sysctls, except its
/// congestion control, bbr). Buffer sizes set by flags are left alone: they are the
/// lesson.
fn machine_defaults(option: &str, column: &str) -> Option<String> {
    let value = match (option, column) {
        ("SO_RCVBUF", "value" | "tcp" | "listening") => "131072 bytes",
        ("SO_SNDBUF", "value" | "tcp" | "listening") => "16384 bytes",
        ("SO_RCVBUF" | "SO_SNDBUF", "udp") => "212992 bytes",
        _ => return connection_values(option, column),
    };
    Some(value.to_string())
}

/// What the kernel decides for a loopback connection: its segment size, path MTU and
/// (unless SO_SNDBUF was set) the send buffer it grew at the handshake.
fn connection_values(option: &str, column: &str) -> Option<String> {
    let value = match (option, column) {
        ("SO_SNDBUF", "connection") => "3939840 bytes",
        ("TCP_MAXSEG", "connection") => "32768 bytes",
        ("IP_MTU", "connection") => "65535 bytes",
        ("TCP_CONGESTION", "tcp" | "listening" | "connection") => "bbr",
        ("SO_PASSCRED", "tcp" | "udp") => "n/a (EOPNOTSUPP)",
        _ => return None,
    };
    Some(value.to_string())
}

/// The port in a stopped server's `listening on` line.
fn exited_port(exited: &Exited) -> u16 {
    let first = exited.stdout.lines().next().unwrap_or_default();
    first
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap()
}

fn normaliser(port: u16) -> Normaliser {
    Normaliser::new().port(port, DEFAULT_PORT)
}

/// In a terminal, Ctrl-C shows as ^C just before the server's last line.
fn with_ctrl_c(text: &str) -> String {
    text.replace(
        &format!("\n{}", log::SHUTTING_DOWN),
        &format!("\n^C{}", log::SHUTTING_DOWN),
    )
}

/// Waits for a log line that starts with `word` (`connected` is also in
/// `disconnected`, so `wait_for_line` alone would not do).
fn wait_for_word(server: &mut Server, word: &str) -> String {
    loop {
        let line = server.wait_for_line(word);
        if line.starts_with(word) {
            return line;
        }
    }
}

// ---------------------------------------------------------------------------
// Why SO_REUSEADDR exists.

/// A port below the kernel's ephemeral range with nothing on it, so that no other
/// test's `--port 0` and no client's connect can be given it while this test runs.
/// `None` if the range starts too low to leave room.
fn quiet_port() -> Option<u16> {
    let range = sysctl("net.ipv4.ip_local_port_range");
    let low: u16 = range.split_whitespace().next()?.parse().ok()?;
    if low <= 10_100 {
        return None;
    }
    let span = u32::from(low - 10_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ now.subsec_nanos();
    (0..200u32)
        .map(|i| 10_000 + ((seed.wrapping_add(i.wrapping_mul(7_919))) % span) as u16)
        .filter(|&port| port != DEFAULT_PORT && tcp_states(port).is_empty())
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// The sockets on local port `port` from /proc/net/tcp, as (remote port, state); the
/// state is the kernel's number, 06 for TIME_WAIT.
fn tcp_states(port: u16) -> Vec<(u16, String)> {
    tcp_sockets(port)
        .into_iter()
        .map(|socket| (socket.remote_port, socket.state))
        .collect()
}

/// One IPv4 TCP socket of /proc/net/tcp.
struct TcpSocket {
    remote_port: u16,
    /// The kernel's number, in hex: 01 ESTABLISHED, 06 TIME_WAIT...
    state: String,
    /// The timer that runs (`tr`: 0 none, 1 retransmit, 2 keepalive...) and when it
    /// is due (`tm->when`, in hundredths of a second).
    timer: (u8, u64),
}

/// The sockets of /proc/net/tcp whose local port is `port`. (The table may hold
/// thousands of TIME_WAIT sockets of other tests: only lines with the port are parsed.)
fn tcp_sockets(port: u16) -> Vec<TcpSocket> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X} ");
    table
        .lines()
        .skip(1)
        .filter(|line| line.contains(&local))
        .filter_map(|line| {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let remote_port = u16::from_str_radix(fields.get(2)?.rsplit(':').next()?, 16).ok()?;
            let (timer, when) = fields.get(5)?.split_once(':')?;
            let socket = TcpSocket {
                remote_port,
                state: fields.get(3)?.to_string(),
                timer: (
                    u8::from_str_radix(timer, 16).ok()?,
                    u64::from_str_radix(when, 16).ok()?,
                ),
            };
            (local_port == port).then_some(socket)
        })
        .collect()
}

/// Waits (up to WAIT) until the kernel lists `port -> peer` in TIME_WAIT.
fn wait_for_time_wait(port: u16, peer: u16) {
    let deadline = Instant::now() + WAIT;
    loop {
        let states = tcp_states(port);
        if states
            .iter()
            .any(|(remote, state)| *remote == peer && state == "06")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no TIME_WAIT for 127.0.0.1:{port} -> :{peer} within {WAIT:?}: {states:?}"
        );
        // Polling the kernel's table with a deadline: there is no event to wait for.
        thread::sleep(Duration::from_millis(5));
    }
}

/// The real client with its stdin kept open: it has sent what it was given and waits
/// for more input, so it can only end when the server closes first.
struct WaitingClient {
    child: Child,
    stdin: Option<ChildStdin>,
    chunks: Receiver<Vec<u8>>,
    stdout: Vec<u8>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl WaitingClient {
    fn start(port: u16) -> WaitingClient {
        let mut child = Command::new(CLIENT)
            .args(["--port", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {CLIENT}: {err}"));
        let stdin = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (sender, chunks) = mpsc::channel();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut chunk) {
                if sender.send(chunk[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        WaitingClient {
            child,
            stdin: Some(stdin),
            chunks,
            stdout: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Types `line`: one write(2), so the client reads it in one piece.
    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("cannot write to the client's stdin");
    }

    /// Waits (up to WAIT) until the client has printed something ending in `ending`.
    fn wait_for_output(&mut self, ending: &[u8]) {
        let deadline = Instant::now() + WAIT;
        while !self.stdout.ends_with(ending) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.stdout.extend(chunk),
                Err(_) => panic!(
                    "the client did not print {:?} within {WAIT:?}; so far: {:?}",
                    String::from_utf8_lossy(ending),
                    String::from_utf8_lossy(&self.stdout)
                ),
            }
        }
    }

    /// Waits (up to WAIT) for the client to end by itself, its stdin still open.
    fn wait_for_exit(&mut self) -> Exited {
        let started = Instant::now();
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            assert!(
                started.elapsed() < WAIT,
                "the client did not exit within {WAIT:?}"
            );
            // Polling the exit status: std has no wait with a timeout.
            thread::sleep(Duration::from_millis(5));
        };
        while let Ok(chunk) = self.chunks.recv_timeout(WAIT) {
            self.stdout.extend(chunk);
        }
        drop(self.stdin.take());
        let stderr = self.stderr.take().map(|reader| reader.join());
        Exited {
            status,
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: stderr.and_then(Result::ok).unwrap_or_default(),
            took: started.elapsed(),
        }
    }
}

impl Drop for WaitingClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One connection that the server closes first, as it ends on SIGINT.
struct ClosedFirst {
    port: u16,
    client_port: u16,
    server: Exited,
    /// How many lines the server had logged when it got SIGINT.
    lines_before_signal: usize,
    client: Exited,
}

/// Only one test at a time picks a quiet port and starts its server on it.
static PICKING_A_PORT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Starts a server with `args` on a quiet port, connects the real client, which sends
/// a line and waits for more input, then stops the server with SIGINT. The kernel
/// closes the server's end first (FIN); the client reads end-of-file, reports it and
/// exits, which closes its end; the server's end is then in TIME_WAIT for 60 s.
fn server_closes_first(args: &[&str]) -> ClosedFirst {
    let mut server = {
        let _picking = PICKING_A_PORT.lock().unwrap_or_else(|e| e.into_inner());
        let port = quiet_port().unwrap_or(0).to_string();
        let mut all = args.to_vec();
        all.extend(["--port", &port]);
        Server::start(SERVER, &all)
    };
    let port = server.port();

    // A client connects and sends one line; its stdin stays open.
    let mut client = WaitingClient::start(port);
    let connected = wait_for_word(&mut server, log::CONNECTED);
    let client_port: u16 = Regex::new(r" 127\.0\.0\.1:(\d+) ->")
        .unwrap()
        .captures(&connected)
        .unwrap_or_else(|| panic!("{connected}"))[1]
        .parse()
        .unwrap();
    client.type_line("hello");
    // The whole echo is back, so the server has written it before the signal.
    client.wait_for_output(I_GET_IT);
    assert_same_bytes(
        &client.stdout,
        b"hello\n\nI get it!\n",
        "the client's output",
    );
    wait_for_word(&mut server, log::RECEIVED);
    let lines_before_signal = server.seen.len();

    // Ctrl-C while the client is connected: the server's end closes first.
    let server = server.stop(SIGINT);
    assert_clean_shutdown(&server);
    // The client, its stdin still open, can only have closed its end by reading
    // end-of-file and exiting; then the server's end is in TIME_WAIT.
    wait_for_time_wait(port, client_port);
    let client = client.wait_for_exit();
    assert_error_line(&client, &["closed the connection before"]);
    ClosedFirst {
        port,
        client_port,
        server,
        lines_before_signal,
        client,
    }
}

// ---------------------------------------------------------------------------

/// What any server of lesson 02's protocol does on the wire.
mod protocol {
    use super::*;

    /// The checks of `cargo run -- check 02`: a message, binary bytes and 256 KiB,
    /// each followed by the half-close, echoed with `\nI get it!\n` and closed.
    #[test]
    fn the_server_passes_the_protocol_checks() {
        support::protocol::all_checks_pass(2, SERVER, &[]);
    }

    #[test]
    fn half_close_gets_the_reply_then_eof() {
        let mut server = Server::start(SERVER, &[]);
        let mut conn = connect(server.addr);
        conn.write_all(b"last words").unwrap();
        // Our sending side is shut; the receiving side still works.
        conn.shutdown(Shutdown::Write).unwrap();
        let reply = read_to_eof(&mut conn);
        assert_same_bytes(&reply, b"last words\nI get it!\n", "the reply");
        let got = wait_for_word(&mut server, log::RECEIVED);
        assert!(got.contains(" 10 bytes "), "{got}");
        let gone = wait_for_word(&mut server, log::DISCONNECTED);
        assert!(!gone.contains(": "), "a clean close, not an error: {gone}");
    }

    #[test]
    fn connect_and_close_without_a_byte() {
        let mut server = Server::start(SERVER, &[]);
        let mut conn = connect(server.addr);
        conn.shutdown(Shutdown::Write).unwrap();
        // Nothing sent, so nothing echoed: the server just closes.
        assert_same_bytes(&read_to_eof(&mut conn), b"", "the reply to nothing");
        wait_for_word(&mut server, log::DISCONNECTED);
        drop(conn);
        drop(connect(server.addr));
        wait_for_word(&mut server, log::DISCONNECTED);
        assert!(server.is_running());
    }

    #[test]
    fn a_reset_does_not_stop_the_server() {
        let mut server = Server::start(SERVER, &[]);
        let mut conn = connect(server.addr);
        conn.write_all(b"about to vanish").unwrap();
        wait_for_word(&mut server, log::RECEIVED);
        reset(conn);
        wait_for_word(&mut server, log::DISCONNECTED);
        let port = server.port().to_string();
        let client = run(CLIENT, &["--port", &port, "still", "there?"], b"");
        assert!(client.status.success(), "{}", client.stderr);
        assert_same_bytes(
            client.stdout.as_bytes(),
            b"still there?\nI get it!\n",
            "the next client's output",
        );
        assert!(server.is_running());
    }

    #[test]
    fn a_large_payload_is_echoed_in_many_chunks() {
        let server = Server::start(SERVER, &["--quiet"]);
        let payload: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
        let mut conn = connect(server.addr);
        let mut writer = conn.try_clone().unwrap();
        let sent = payload.clone();
        // Written on another thread while we read: the echo fills our receive buffer, and
        // if nobody read it both sides would wait for each other forever.
        let writing = thread::spawn(move || {
            writer.write_all(&sent).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let reply = read_to_eof(&mut conn);
        writing.join().unwrap();
        let (echoed, markers) = strip_markers(&reply);
        assert_same_bytes(&echoed, &payload, "1 MiB, the markers taken out");
        // One write of 1 MiB was many reads (each at most 4096 bytes) on the server.
        assert!(markers >= 2, "only {markers} chunks");
        assert!(reply.ends_with(I_GET_IT));
    }
}

/// This lesson's programs: options, TIME_WAIT, log, flags and transcripts.
mod lesson {
    use super::*;

    // ---------------------------------------------------------------------------
    // The client and server as a learner runs them.

    #[test]
    fn client_transcript() {
        let mut server = Server::start(SERVER, &[]);
        let port = server.port().to_string();
        let client = run(CLIENT, &["--port", &port, "hello", "world"], b"");
        assert!(client.status.success(), "{}", client.stderr);
        assert_same_bytes(
            client.stdout.as_bytes(),
            b"hello world\nI get it!\n",
            "the client's output",
        );
        assert_eq!(client.stderr, "");
        wait_for_word(&mut server, log::DISCONNECTED);

        // All of stdin is one message, sent as it comes, then the half-close.
        let piped = run(CLIENT, &["--port", &port], b"one\ntwo\n");
        assert!(piped.status.success(), "{}", piped.stderr);
        let (echoed, markers) = strip_markers(piped.stdout.as_bytes());
        assert_same_bytes(
            &echoed,
            b"one\ntwo\n",
            "stdin echoed, the markers taken out",
        );
        assert!(markers >= 1, "{}", piped.stdout);
        assert!(piped.stdout.ends_with("\nI get it!\n"), "{}", piped.stdout);
        wait_for_word(&mut server, log::DISCONNECTED);

        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(
            exited
                .stdout
                .contains(&format!("{}: served 2 clients", log::SHUTTING_DOWN)),
            "{}",
            exited.stdout
        );
        // The listener's table comes right after the first line.
        let lines: Vec<&str> = exited.stdout.lines().collect();
        assert!(
            lines[0].starts_with(&format!("{} 127.0.0.1:", log::LISTENING_ON)),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "options of the listening socket:");
        assert!(lines[2].starts_with("option "), "{}", lines[2]);
        assert_eq!(table_value(&exited.stdout, "SO_REUSEADDR"), "on");
        assert_eq!(table_value(&exited.stdout, "TCP_NODELAY"), "off");
        assert!(
            exited.stdout.contains(r#": "hello world""#),
            "{}",
            exited.stdout
        );
        assert!(
            exited.stdout.contains(r#": "one\ntwo\n""#),
            "{}",
            exited.stdout
        );

        let normal = normaliser(exited_port(&exited));
        transcript::check(
            "02_client",
            &normal.apply(&format!(
                "$ cargo run --bin 02_socket_options_client -- hello world\n{}\
             $ printf 'one\\ntwo\\n' | cargo run --bin 02_socket_options_client\n{}",
                client.stdout, piped.stdout
            )),
        );
        transcript::check(
            "02_server",
            &normal.apply(&normalise_tables(
                &format!(
                    "$ cargo run --bin 02_socket_options_server\n{}",
                    with_ctrl_c(&exited.stdout)
                ),
                &machine_defaults,
            )),
        );
    }

    #[test]
    fn quiet_prints_no_tables() {
        let server = Server::start(SERVER, &["--quiet"]);
        let port = server.port().to_string();
        let client = run(CLIENT, &["--port", &port, "shh"], b"");
        assert_same_bytes(client.stdout.as_bytes(), b"shh\nI get it!\n", "the output");
        let exited = server.stop(SIGTERM);
        assert_clean_shutdown(&exited);
        let lines: Vec<&str> = exited.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", exited.stdout);
        assert!(lines[0].starts_with(log::LISTENING_ON));
        assert_eq!(lines[1], format!("{}: served 1 client", log::SHUTTING_DOWN));
    }

    // ---------------------------------------------------------------------------
    // Raw sockets: what a learner's client would not do.

    #[test]
    fn non_utf8_bytes_come_back_unchanged_and_are_logged_escaped() {
        let mut server = Server::start(SERVER, &[]);
        let mut conn = connect(server.addr);
        conn.write_all(b"\xff\xfe\x00bin").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let reply = read_to_eof(&mut conn);
        let (echoed, markers) = strip_markers(&reply);
        assert_same_bytes(
            &echoed,
            b"\xff\xfe\x00bin",
            "the echo, the markers taken out",
        );
        assert!(markers >= 1);
        assert!(reply.ends_with(I_GET_IT), "{reply:?}");
        let logged = wait_for_word(&mut server, log::RECEIVED);
        assert!(logged.contains(r#""\xff\xfe\x00bin""#), "{logged}");
    }

    #[test]
    fn the_client_sends_large_input_while_it_reads() {
        // 4 MiB through stdin: more than the socket buffers hold, so a client that sent
        // everything before reading would never finish.
        let server = Server::start(SERVER, &["--quiet"]);
        let port = server.port().to_string();
        let input: Vec<u8> = (0..4usize << 20).map(|i| b'a' + (i % 26) as u8).collect();
        let client = run(CLIENT, &["--port", &port], &input);
        assert!(client.status.success(), "{}", client.stderr);
        let (echoed, markers) = strip_markers(client.stdout.as_bytes());
        assert_same_bytes(&echoed, &input, "4 MiB of stdin, the markers taken out");
        assert!(markers >= 2, "only {markers} chunks");
    }

    // ---------------------------------------------------------------------------
    // The options take effect.

    #[test]
    fn flags_set_the_options() {
        let mut server = Server::start(
            SERVER,
            &[
                "--nodelay",
                "--keepalive",
                "--rcvbuf",
                "20000",
                "--sndbuf",
                "50000",
                "--linger",
                "5",
            ],
        );
        let table_end = server.wait_for_line("TCP_NODELAY");
        let log = server.seen.join("\n");
        assert!(table_end.ends_with(" on"), "{table_end}");
        assert_eq!(table_value(&log, "SO_KEEPALIVE"), "on");
        assert_eq!(table_value(&log, "SO_LINGER"), "on, 5 s");
        assert_eq!(table_value(&log, "SO_REUSEADDR"), "on");
        // The kernel doubles what we asked for.
        let rcvbuf = kernel_buffer_size(20000, "net.core.rmem_max");
        let sndbuf = kernel_buffer_size(50000, "net.core.wmem_max");
        assert_eq!(table_value(&log, "SO_RCVBUF"), format!("{rcvbuf} bytes"));
        assert_eq!(table_value(&log, "SO_SNDBUF"), format!("{sndbuf} bytes"));

        // A connection inherits them all: only what a connection has and a listener has
        // not is logged as different.
        let port = server.port().to_string();
        let client = run(CLIENT, &["--port", &port, "options"], b"");
        assert_same_bytes(
            client.stdout.as_bytes(),
            b"options\nI get it!\n",
            "the output",
        );
        wait_for_word(&mut server, log::DISCONNECTED);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        let after_connect = exited
            .stdout
            .split_once(&format!("\n{} ", log::CONNECTED))
            .map(|(_, rest)| rest.to_string())
            .unwrap();
        assert!(
            after_connect.contains("  options that differ from the listening socket:"),
            "{after_connect}"
        );
        let accept_conn = after_connect
            .lines()
            .find(|line| line.starts_with("  SO_ACCEPTCONN "))
            .unwrap_or_else(|| panic!("no SO_ACCEPTCONN row:\n{after_connect}"));
        assert_eq!(cells(accept_conn)[2..], ["on", "off"]);
        let differing: Vec<String> = after_connect
            .lines()
            .filter(|line| line.starts_with("  ") && !line.starts_with("  option"))
            .filter_map(|line| line.split_whitespace().next().map(str::to_string))
            .collect();
        for inherited in [
            "TCP_NODELAY",
            "SO_KEEPALIVE",
            "SO_LINGER",
            "SO_RCVBUF",
            "SO_SNDBUF",
        ] {
            assert!(
                !differing.iter().any(|name| name == inherited),
                "{inherited} should be inherited: {differing:?}"
            );
        }

        transcript::check(
            "02_flags",
            &normaliser(exited_port(&exited)).apply(&normalise_tables(
                &format!(
                    "$ cargo run --bin 02_socket_options_server -- --nodelay --keepalive \
                 --rcvbuf 20000 --sndbuf 50000 --linger 5\n{}",
                    with_ctrl_c(&exited.stdout)
                ),
                &connection_values,
            )),
        );
    }

    #[test]
    fn no_reuseaddr_turns_it_off() {
        let mut server = Server::start(SERVER, &["--no-reuseaddr"]);
        server.wait_for_line("TCP_NODELAY");
        assert_eq!(table_value(&server.seen.join("\n"), "SO_REUSEADDR"), "off");
    }

    /// `--linger 0`: close(2) resets the connection instead of closing it. The client
    /// gets the whole echo, then ECONNRESET where it waited for end of file, and no end
    /// of the connection is left in TIME_WAIT.
    #[test]
    fn linger_zero_resets_instead_of_closing() {
        let server = Server::start(SERVER, &["--linger", "0", "--quiet"]);
        let port = server.port();
        let client = run(CLIENT, &["--port", &port.to_string(), "hello"], b"");
        assert_same_bytes(
            client.stdout.as_bytes(),
            b"hello\nI get it!\n",
            "the client's output",
        );
        assert_error_line(&client, &["reading the reply", "Connection reset by peer"]);

        let mut conn = connect(server.addr);
        let client_port = conn.local_addr().unwrap().port();
        conn.write_all(b"hello").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        let ended = conn.read_to_end(&mut reply);
        assert_same_bytes(&reply, b"hello\nI get it!\n", "the reply before the reset");
        assert_eq!(
            ended.map_err(|err| err.kind()),
            Err(std::io::ErrorKind::ConnectionReset),
            "a reset, not end of file"
        );
        drop(conn);
        let server_end: Vec<_> = tcp_states(port)
            .into_iter()
            .filter(|(remote, _)| *remote == client_port)
            .collect();
        assert!(server_end.is_empty(), "server's end: {server_end:?}");
        // Only this connection's end: another test's old connection may have used the
        // same local port towards another server and sit in TIME_WAIT.
        let client_end: Vec<_> = tcp_states(client_port)
            .into_iter()
            .filter(|(remote, _)| *remote == port)
            .collect();
        assert!(client_end.is_empty(), "client's end: {client_end:?}");
    }

    #[test]
    fn list_options_shows_tcp_and_udp_side_by_side() {
        let listed = run(SERVER, &["--list-options"], b"");
        assert!(listed.status.success(), "{}", listed.stderr);
        assert_eq!(listed.stderr, "");
        let lines: Vec<&str> = listed.stdout.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["option", "level", "tcp", "udp"]
        );
        assert!(
            !listed.stdout.contains(log::LISTENING_ON),
            "it does not listen"
        );
        let row = |name: &str| {
            let line = lines
                .iter()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no {name} row:\n{}", listed.stdout));
            cells(line)
        };
        assert_eq!(row("SO_TYPE")[2..], ["Stream", "Datagram"]);
        assert_eq!(row("SO_REUSEADDR")[1..], ["SOL_SOCKET", "off", "off"]);
        let nodelay = row("TCP_NODELAY");
        assert_eq!(nodelay[1], "IPPROTO_TCP");
        assert_eq!(nodelay[2], "off");
        assert!(nodelay[3].starts_with("n/a ("), "{nodelay:?}");
        assert_eq!(row("IP_TTL")[1], "IPPROTO_IP");
        assert_eq!(lines.len(), 1 + workbook::options::known_options().len());

        transcript::check(
            "02_list_options",
            &normalise_tables(
                &format!(
                    "$ cargo run --bin 02_socket_options_server -- --list-options\n{}",
                    listed.stdout
                ),
                &machine_defaults,
            ),
        );
    }

    #[test]
    fn device_lo_works_and_a_missing_device_is_a_clear_error() {
        let mut server = Server::start(SERVER, &["--device", "lo"]);
        server.wait_for_line("TCP_NODELAY");
        assert_eq!(
            table_value(&server.seen.join("\n"), "SO_BINDTODEVICE"),
            "lo"
        );
        let port = server.port().to_string();
        let client = run(CLIENT, &["--port", &port, "via", "lo"], b"");
        assert_same_bytes(
            client.stdout.as_bytes(),
            b"via lo\nI get it!\n",
            "the output",
        );
        drop(server);

        let missing = run(SERVER, &["--device", "nosuchif0", "--port", "0"], b"");
        assert_error_line(&missing, &["SO_BINDTODEVICE", "nosuchif0", "ip link"]);
        assert_eq!(missing.stdout, "", "nothing is printed before the error");
        transcript::check(
            "02_no_device",
            &format!(
                "$ cargo run --bin 02_socket_options_server -- --device nosuchif0\n{}",
                missing.stderr
            ),
        );
    }

    #[test]
    fn bad_option_values_are_usage_errors() {
        for args in [
            &["--rcvbuf", "abc"][..],
            &["--rcvbuf", "-1"],
            &["--sndbuf", "99999999999"],
            &["--linger", "70000"],
            &["--linger", "1.5"],
            &["--device", ""],
            &["--device", "much-too-long-name"],
            &["--device", "a/b"],
            &["--rcvbuf"],
        ] {
            let exited = run(SERVER, args, b"");
            assert_usage_error(&exited);
            assert_eq!(exited.stdout, "", "{args:?}");
        }
    }

    /// The server's end of a connection closed by the server first stays in TIME_WAIT
    /// (60 s on Linux). Then bind(2) without SO_REUSEADDR fails with EADDRINUSE, and with
    /// it succeeds. The test writes the book's transcript of the whole story.
    #[test]
    fn time_wait_blocks_a_restart_without_reuseaddr() {
        let ClosedFirst {
            port,
            client_port,
            server: stopped,
            lines_before_signal,
            client: client_done,
        } = server_closes_first(&[]);
        let port_text = port.to_string();

        let refused = run(SERVER, &["--no-reuseaddr", "--port", &port_text], b"");
        assert_error_line(&refused, &[&format!("127.0.0.1:{port}"), "in use"]);
        assert_eq!(refused.stdout, "");

        // Still in TIME_WAIT (60 s), and yet with SO_REUSEADDR the bind succeeds.
        assert!(tcp_states(port).iter().any(|(_, state)| state == "06"));
        let restarted = Server::start(SERVER, &["--port", &port_text]);
        assert_eq!(restarted.port(), port);
        let restarted = restarted.stop(SIGTERM);
        assert_clean_shutdown(&restarted);

        // The story, as the terminals show it (the option tables left out), with ^C
        // where Ctrl-C was pressed: before the lines the signal made the server log.
        let log: Vec<String> = stopped
            .stdout
            .lines()
            .enumerate()
            .map(|(index, line)| {
                if index == lines_before_signal {
                    format!("^C{line}")
                } else {
                    line.to_string()
                }
            })
            .collect();
        let events: Vec<&str> = log
            .iter()
            .map(String::as_str)
            .filter(|line| {
                [
                    log::LISTENING_ON,
                    log::CONNECTED,
                    log::RECEIVED,
                    log::DISCONNECTED,
                    log::SHUTTING_DOWN,
                ]
                .iter()
                .any(|start| line.trim_start_matches("^C").starts_with(start))
            })
            .collect();
        let (listening, served) = events.split_first().unwrap();
        let story = format!(
            "# terminal 1: the server (its option tables left out here)\n\
         $ cargo run --bin 02_socket_options_server\n\
         {listening}\n\
         \n\
         # terminal 2: a client; each line typed is sent at once (here: hello, Enter)\n\
         $ cargo run --bin 02_socket_options_client\n\
         hello\n\
         {client_out}\
         \n\
         # terminal 1: the server logs the client; press Ctrl-C while it is connected\n\
         {served}\n\
         \n\
         # terminal 2: at once, the client reads end-of-file before it has half-closed\n\
         {client_err}\
         \n\
         # the server's end of that connection, 127.0.0.1:{port} -> 127.0.0.1:{client_port},\n\
         # is now in TIME_WAIT, for 60 seconds\n\
         \n\
         # terminal 1: restart at once, with SO_REUSEADDR off\n\
         $ cargo run --bin 02_socket_options_server -- --no-reuseaddr\n\
         {refused_err}\
         \n\
         # and with SO_REUSEADDR on, the default\n\
         $ cargo run --bin 02_socket_options_server\n\
         {restarted_first}\n",
            served = served.join("\n"),
            client_out = client_done.stdout,
            client_err = client_done.stderr,
            refused_err = refused.stderr,
            restarted_first = restarted.stdout.lines().next().unwrap_or_default(),
        );
        transcript::check("02_time_wait", &normaliser(port).apply(&story));
    }

    /// On Linux both sockets need SO_REUSEADDR: the new one, and the old one whose end is
    /// in TIME_WAIT (connections inherit it from their listening socket). A server that
    /// ran with --no-reuseaddr blocks even a restart that sets it.
    #[test]
    fn time_wait_of_a_server_without_reuseaddr_blocks_every_restart() {
        let closed = server_closes_first(&["--no-reuseaddr"]);
        let port = closed.port.to_string();
        for args in [&["--port", &port][..], &["--no-reuseaddr", "--port", &port]] {
            let refused = run(SERVER, args, b"");
            assert_error_line(&refused, &[&format!("127.0.0.1:{port}"), "in use"]);
        }
    }

    // ---------------------------------------------------------------------------
    // The contract every lesson keeps.

    #[test]
    fn contract_server() {
        contract::server_reports_port_in_use(SERVER, &[]);
        contract::server_reports_port_in_use(SERVER, &["--no-reuseaddr"]);
        contract::server_reports_bad_host(SERVER);
        contract::rejects_bad_flags(SERVER);
        contract::server_stops_on(SERVER, &[], SIGINT);
        contract::server_stops_on(SERVER, &["--quiet"], SIGTERM);
    }

    #[test]
    fn contract_client() {
        contract::rejects_bad_flags(CLIENT);
        contract::client_reports_no_server(CLIENT, "02_socket_options_server", &[]);
        contract::client_reports_no_server(CLIENT, "02_socket_options_server", &["hello"]);
    }

    /// The lesson's protocol, one client after another, every reply checked: the server
    /// logs each connection with its table of options, far more than a pipe holds (64 KiB).
    fn many_clients_one_after_another(addr: SocketAddr) {
        for n in 0..150 {
            let mut conn = connect(addr);
            let message = format!("client {n}: {}", "y".repeat(60));
            conn.write_all(message.as_bytes()).unwrap();
            conn.shutdown(Shutdown::Write).unwrap();
            let reply = read_to_eof(&mut conn);
            let (echoed, markers) = strip_markers(&reply);
            assert_same_bytes(
                &echoed,
                message.as_bytes(),
                "the echo, the markers taken out",
            );
            assert!(markers >= 1 && reply.ends_with(I_GET_IT), "{reply:?}");
        }
    }

    /// `02_socket_options_server | head -1`: a log line it cannot write must not kill it.
    #[test]
    fn serves_and_stops_with_stdout_closed() {
        contract::survives_closed_stdout(SERVER, &[], many_clients_one_after_another);
    }

    /// stdout a pipe nobody reads: a full pipe must not freeze the server or Ctrl-C.
    #[test]
    fn serves_and_stops_with_stdout_stalled() {
        contract::survives_stalled_stdout(SERVER, &[], many_clients_one_after_another);
    }

    /// `02_socket_options_client hello | head -0`: the reply cannot be printed, and the
    /// client stops quietly (no panic, no error line).
    #[test]
    fn the_client_stops_quietly_when_stdout_is_closed() {
        let server = Server::start(SERVER, &["--quiet"]);
        let port = server.port().to_string();
        let client = run_with_closed_stdout(CLIENT, &["--port", &port, "hello"], b"");
        assert!(
            client.status.success(),
            "{:?}: {}",
            client.status,
            client.stderr
        );
        assert_eq!(client.stderr, "");
    }

    #[test]
    fn no_server_transcript() {
        let closed = closed_port();
        let closed_text = closed.to_string();
        let refused = run(CLIENT, &["--port", &closed_text, "hello"], b"");
        assert_error_line(
            &refused,
            &["refused", "cargo run --bin 02_socket_options_server"],
        );
        transcript::check(
            "02_no_server",
            &normaliser(closed).apply(&format!(
                "$ cargo run --bin 02_socket_options_client -- hello      # no server running\n{}",
                refused.stderr
            )),
        );
    }
}

/// Polls `what` until it returns `Some`, at most [`WAIT`]. For states of the kernel
/// (a socket's, a file strace writes) that no event announces.
fn wait_until<T>(what: &str, mut look: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = look() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Fails at once, and says so, when the server has no `flag` yet: the exercise is to
/// add it (otherwise the server would exit with a usage error, and the test would
/// only see that it never listened).
fn assert_has_flag(flag: &str) {
    let help = run(SERVER, &["--help"], b"");
    assert!(
        help.stdout.contains(&format!("{flag} ")),
        "the server has no {flag} flag yet (see `cargo run --bin 02_socket_options_server -- --help`)"
    );
}

/// Sends `message`, half-closes, and reads the whole reply.
fn exchange(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut conn = connect(addr);
    conn.write_all(message).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    read_to_eof(&mut conn)
}

/// The chapter's exercises: each fails on the lesson as shipped and passes once done.
/// Run one with `cargo run -- exercise 02.1` or
/// `cargo test --test 02_socket_options -- --ignored exercise_1`.
mod exercises {
    use super::*;

    /// 02.1: each reply, the chunk and `\nI get it!\n`, leaves in one send(2), so that
    /// Nagle's algorithm has no second small write to hold back. strace shows the
    /// server's send(2) calls (sendto(2) is its system call).
    #[test]
    #[ignore]
    fn exercise_1_one_write_per_reply() {
        if !strace_works_with(&["-D", "-f", "-qq", "-o", "/dev/null"]) {
            return;
        }
        let trace = std::env::temp_dir().join(format!("02-exercise-1-{}.txt", std::process::id()));
        let trace_path = trace.to_string_lossy().into_owned();
        // -D: the process started is the server itself; strace traces it from aside.
        let server = Server::start(
            "strace",
            &[
                "-D",
                "-f",
                "-qq",
                "-s",
                "64",
                "-e",
                "trace=sendto",
                "-o",
                &trace_path,
                SERVER,
                "--quiet",
            ],
        );
        let messages = ["one", "two", "three"];
        for message in messages {
            let reply = exchange(server.addr, message.as_bytes());
            assert_same_bytes(
                &reply,
                format!("{message}\nI get it!\n").as_bytes(),
                "the reply",
            );
        }
        // Every reply has been read, so every send(2) is in the trace; strace writes
        // each line when the call returns.
        let sends: Vec<String> = wait_until("three sends of `I get it!` in the trace", || {
            let text = std::fs::read_to_string(&trace).unwrap_or_default();
            let sends: Vec<String> = text
                .lines()
                .filter(|line| line.contains("sendto("))
                .map(str::to_string)
                .collect();
            let markers = sends.iter().filter(|line| line.contains("I get it!"));
            (markers.count() >= messages.len()).then_some(sends)
        });
        let _ = std::fs::remove_file(&trace);
        for message in messages {
            let whole = format!("\"{message}\\nI get it!\\n\"");
            assert!(
                sends.iter().any(|line| line.contains(&whole)),
                "the reply to {message:?} should be one send(2) of {whole}; strace saw:\n{}",
                sends.join("\n")
            );
        }
    }

    /// 02.2: `--keepidle 5` (with `--keepintvl` and `--keepcnt`): the kernel's
    /// keepalive timer on an idle connection is due within 5 s, not 2 hours.
    #[test]
    #[ignore]
    fn exercise_2_keepalive_in_seconds() {
        for flag in ["--keepidle", "--keepintvl", "--keepcnt"] {
            assert_has_flag(flag);
        }
        let server = Server::start(
            SERVER,
            &[
                "--keepalive",
                "--keepidle",
                "5",
                "--keepintvl",
                "2",
                "--keepcnt",
                "3",
                "--quiet",
            ],
        );
        let idle = connect(server.addr);
        let client_port = idle.local_addr().unwrap().port();
        // The server's end of the connection, once it has accepted it.
        let (timer, due) = wait_until("the server's end of the connection", || {
            tcp_sockets(server.port())
                .into_iter()
                .find(|socket| socket.remote_port == client_port && socket.state == "01")
                .map(|socket| socket.timer)
        });
        assert_eq!(
            timer, 2,
            "the keepalive timer (2 in /proc/net/tcp) should run"
        );
        assert!(
            due <= 500,
            "the first probe is due in {:.2} s; with --keepidle 5 it should be at most 5 s",
            due as f64 / 100.0
        );
    }

    /// 02.3: `--send-timeout 1`: a client that sends and never reads fills the buffers
    /// until the server's send(2) waits; after a second the server gives up on it, and
    /// the next client is served.
    #[test]
    #[ignore]
    fn exercise_3_send_timeout() {
        assert_has_flag("--send-timeout");
        let mut server = Server::start(SERVER, &["--send-timeout", "1"]);
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect_timeout(&server.addr.into(), WAIT).unwrap();
        let hog = std::net::TcpStream::from(socket);
        let mut writer = hog.try_clone().unwrap();
        let flooding = thread::spawn(move || {
            // Ends with an error once the server has closed the connection.
            let _ = writer.write_all(&vec![b'x'; 16 << 20]);
        });
        let port = server.port().to_string();
        let next = run(CLIENT, &["--port", &port, "my", "turn"], b"");
        assert_same_bytes(
            next.stdout.as_bytes(),
            b"my turn\nI get it!\n",
            "the next client's output",
        );
        let gone = wait_for_word(&mut server, log::DISCONNECTED);
        assert!(
            gone.contains(": "),
            "the client that never read, ended with an error: {gone}"
        );
        drop(hog);
        flooding.join().unwrap();
    }

    /// 02.5: the server answers the first chunk and closes, without waiting for the
    /// half-close. It sends the first FIN, so its end of the connection goes into
    /// TIME_WAIT.
    #[test]
    #[ignore]
    fn exercise_5_the_server_closes_first() {
        let server = Server::start(SERVER, &["--quiet"]);
        let mut conn = connect(server.addr);
        conn.write_all(b"hello").unwrap();
        let reply = read_exactly(&mut conn, 16);
        assert_same_bytes(
            &reply,
            b"hello\nI get it!\n",
            "the reply to the first chunk",
        );
        // A second chunk: the server must not answer it any more. One read: end of
        // file (or a reset, since we sent after its close), not an echo.
        let _ = conn.write_all(b"again");
        let mut after = [0u8; 64];
        let got = conn.read(&mut after).unwrap_or(0);
        assert_same_bytes(&after[..got], b"", "what came after the first reply");

        // Another connection that never half-closes: the server closes it first.
        let mut conn = connect(server.addr);
        let client_port = conn.local_addr().unwrap().port();
        conn.write_all(b"hello").unwrap();
        let reply = read_to_eof(&mut conn);
        assert_same_bytes(
            &reply,
            b"hello\nI get it!\n",
            "the whole reply, then the close",
        );
        drop(conn);
        wait_for_time_wait(server.port(), client_port);
    }

    /// 02.6: `--reuseport`: two servers listen on one port, and the kernel spreads 20
    /// connections over both.
    #[test]
    #[ignore]
    fn exercise_6_two_listeners_share_a_port() {
        assert_has_flag("--reuseport");
        let first = Server::start(SERVER, &["--reuseport", "--quiet"]);
        let port = first.port().to_string();
        let second = Server::start(SERVER, &["--reuseport", "--quiet", "--port", &port]);
        for n in 0..20 {
            let message = format!("client {n}");
            let reply = exchange(first.addr, message.as_bytes());
            assert_same_bytes(
                &reply,
                format!("{message}\nI get it!\n").as_bytes(),
                "the reply",
            );
        }
        let served = |server: Server| {
            let exited = server.stop(SIGTERM);
            assert_clean_shutdown(&exited);
            let last = exited.stdout.lines().last().unwrap_or_default().to_string();
            last.split_whitespace()
                .nth(3)
                .and_then(|count| count.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no count in {last:?}"))
        };
        let (one, two) = (served(first), served(second));
        assert_eq!(one + two, 20, "served {one} and {two}");
        assert!(
            one > 0 && two > 0,
            "one server took every client: {one} and {two}"
        );
    }
}

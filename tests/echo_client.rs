//! The echo client that lessons 04, 05, 06 and 08 share (`src/echo_client.rs`), run
//! as the real 05 client against the real 05 server: a line far longer than the
//! socket buffers, and a stdout that is closed.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use support::*;

const SERVER: &str = env!("CARGO_BIN_EXE_05_poll_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_05_poll_client");

/// 30 MB in one line: hundreds of times what the socket buffers of both ends hold.
const LONG_LINE: usize = 30_000_000;

/// How long the client may take for the long line on every connection: a client that
/// writes the whole line before reading never finishes (Unix Network Programming's
/// batch-input deadlock), a correct one takes a second or two.
const LONG_LINE_WAIT: Duration = Duration::from_secs(60);

/// The long line: letters that do not repeat in a short period, so that a piece of
/// the echo lost, doubled or moved changes the hash.
fn long_line() -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..LONG_LINE)
        .map(|_| {
            // xorshift32: cheap, and the same every run
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            b'a' + (state % 26) as u8
        })
        .collect()
}

/// FNV-1a, 64 bits: a hash that can be fed piece by piece.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// One line of the client's output, `conn N (ADDR): <echo>`, without holding the
/// echo: its prefix, its length and its hash. None at the end of the output.
fn read_output_line(output: &mut impl BufRead) -> Option<(String, usize, u64)> {
    let mut prefix = Vec::new();
    output.read_until(b')', &mut prefix).ok()?;
    if prefix.is_empty() {
        return None;
    }
    let mut separator = [0u8; 2];
    output.read_exact(&mut separator).ok()?;
    prefix.extend_from_slice(&separator);
    let (mut length, mut hash) = (0, Fnv::new());
    loop {
        let available = output.fill_buf().ok()?;
        if available.is_empty() {
            break; // the output ended inside the line
        }
        match available.iter().position(|&byte| byte == b'\n') {
            Some(end) => {
                hash.feed(&available[..end]);
                length += end;
                output.consume(end + 1);
                break;
            }
            None => {
                let taken = available.len();
                hash.feed(available);
                length += taken;
                output.consume(taken);
            }
        }
    }
    Some((
        String::from_utf8_lossy(&prefix).into_owned(),
        length,
        hash.0,
    ))
}

/// The highest resident size a running process has had, from /proc/PID/status.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// Sends the long line on `conns` connections, checks that each connection's echo
/// is printed whole, in connection order, and that the client's memory holds the
/// line once (it read it whole from stdin), not the echoes too: 30 MB each.
fn long_line_on(server: &Server, line: &[u8], conns: usize) {
    let port = server.port().to_string();
    let conns_text = conns.to_string();
    let mut client = Command::new(CLIENT)
        .args(["--port", &port, "--conns", &conns_text])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {CLIENT}: {err}"));
    let mut input = client.stdin.take().unwrap();
    let mut with_end = line.to_vec();
    with_end.push(b'\n');
    // On a thread: the client reads its input while we read its output. The input
    // stays open (the client waits for a next line) until the echoes are checked.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&with_end);
        input
    });
    let mut stderr = client.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut output = BufReader::with_capacity(1 << 16, client.stdout.take().unwrap());
    let (lines_sender, lines) = mpsc::channel();
    thread::spawn(move || {
        while let Some(line) = read_output_line(&mut output) {
            if lines_sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    while printed.len() < conns {
        match lines.recv_timeout(LONG_LINE_WAIT) {
            Ok(line) => printed.push(line),
            Err(_) => {
                let _ = client.kill();
                let _ = client.wait();
                panic!(
                    "a {LONG_LINE}-byte line on {conns} connections: {} echoes within \
                     {LONG_LINE_WAIT:?} (does the client write the whole line before \
                     reading?); stderr:\n{}",
                    printed.len(),
                    stderr.join().unwrap()
                );
            }
        }
    }
    let peak_kib = peak_rss_kib(client.id());
    // End of input: the client closes its connections and exits; its output ends.
    drop(writer.join().unwrap());
    let extra: Vec<_> = lines.iter().collect();
    let status = client.wait().unwrap();
    let stderr = stderr.join().unwrap();
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{stderr}"
    );
    assert!(
        extra.is_empty(),
        "more output than one line per connection: {extra:?}"
    );
    let mut want = Fnv::new();
    want.feed(line);
    for (index, (prefix, length, hash)) in printed.iter().enumerate() {
        assert!(
            prefix.starts_with(&format!("conn {} (127.0.0.1:", index + 1))
                && prefix.ends_with("): "),
            "{prefix:?}"
        );
        assert_eq!(*length, line.len(), "{prefix}: echo length");
        assert_eq!(*hash, want.0, "{prefix}: the echo differs from the line");
    }
    let bound_kib = (LONG_LINE as u64 + (16 << 20)) / 1024;
    assert!(
        peak_kib < bound_kib,
        "{conns} connections: the client grew to {peak_kib} KiB for a {LONG_LINE}-byte \
         line (bound {bound_kib} KiB)"
    );
}

/// `(head -c 30000000 /dev/zero | tr '\0' a; echo) | 05_poll_client --conns 1` used
/// to hang forever: the client wrote the whole line before reading any echo, so once
/// the socket buffers were full both ends waited for each other. The client must read
/// the echo while it writes, and print it as it comes.
#[test]
fn a_line_longer_than_the_socket_buffers() {
    let server = Server::start(SERVER, &["--quiet"]);
    let line = long_line();
    long_line_on(&server, &line, 1);
    long_line_on(&server, &line, 3);
    assert_clean_shutdown(&server.stop(SIGTERM));
}

/// Nobody reads the client's output any more: it stops, quietly (no panic, no error
/// about the network, which did nothing wrong), with status 0 or 1.
#[test]
fn a_closed_stdout_ends_the_client_quietly() {
    let server = Server::start(SERVER, &["--quiet"]);
    let port = server.port().to_string();
    for args in [
        &["--port", &port, "--conns", "2", "hello", "world"][..],
        // The `holding` line is the first one printed.
        &["--port", &port, "--conns", "2", "--hold", "0.01", "hello"],
    ] {
        assert_quiet_stop(
            &run_with_closed_stdout(CLIENT, args, b""),
            &format!("{args:?}"),
        );
    }
    assert_clean_shutdown(&server.stop(SIGINT));
}

/// A server that keeps sending after the client's half-close: the client reports the
/// first read's bytes and stops, instead of reading (and keeping) all of them.
#[test]
fn bytes_after_the_half_close_are_reported_not_kept() {
    echo::client_stops_at_bytes_after_the_half_close(CLIENT);
}

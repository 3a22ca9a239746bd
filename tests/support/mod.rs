//! What every lesson's test shares: starting the real binaries, reading the
//! `listening on` line, running a client with input, stopping a server with a
//! signal, raw connections, and the book's transcripts.
//!
//! Every wait here has a timeout ([`WAIT`]); nothing sleeps to let a server start.
//! Each test file uses only part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[allow(unused_imports)]
pub use nix::sys::signal::Signal::{SIGINT, SIGTERM};

pub mod echo;
pub mod protocol;

/// Is an outside tool (curl, python3, strace...) there to test with? Outside CI a
/// missing tool makes the test say it skipped and why, and pass; under CI (`CI` set)
/// it fails the test: CI installs every tool, so a missing one is a broken CI.
pub fn tool_available(tool: &str, version_args: &[&str]) -> bool {
    let found = Command::new(tool)
        .args(version_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing, and CI must have it (.ci/run installs it)"
        );
        eprintln!("skipped: {tool} is not installed; install it to run this test");
    }
    found
}

/// The longest any single wait may take before the test fails. Generous, because
/// tests must pass on a loaded two-core machine; a passing test never waits this long.
pub const WAIT: Duration = Duration::from_secs(20);

/// How long a server may take to exit after SIGINT/SIGTERM in a test. The contract
/// says one second; the test allows more so that a loaded machine cannot fail it.
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// A running server binary, killed when dropped (so a failing test leaves nothing behind).
pub struct Server {
    child: Child,
    /// The address in `listening on IP:PORT`; 0.0.0.0:0 for a server on an AF_UNIX
    /// socket (lesson 16), whose `listening on unix:PATH` goes to `local` instead.
    pub addr: SocketAddr,
    /// `PATH` (or `@NAME`, an abstract name) of `listening on unix:...`.
    pub local: Option<String>,
    lines: Receiver<String>,
    /// Every stdout line read so far, `listening on` first.
    pub seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    /// The thread reading stderr: finished when the server (and anything it started
    /// that shares its stderr) has closed it.
    stderr_reader: Option<thread::JoinHandle<()>>,
}

/// How a process ended, with everything it printed.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Exited {
    /// The port in the `listening on IP:PORT` line a server printed first.
    pub fn listening_port(&self) -> u16 {
        let first = self.stdout.lines().next().unwrap_or_default();
        first
            .strip_prefix("listening on ")
            .and_then(|addr| addr.trim().parse::<SocketAddr>().ok())
            .map(|addr| addr.port())
            .unwrap_or_else(|| panic!("no `listening on` line first: {first:?}"))
    }
}

/// How many lines of a server's log a failure message shows.
pub const LOG_TAIL: usize = 40;

/// The last [`LOG_TAIL`] of `lines`, headed with how many came before.
pub fn tail(lines: &[String], what: &str) -> String {
    let skip = lines.len().saturating_sub(LOG_TAIL);
    let mut text = if skip > 0 {
        format!("last {LOG_TAIL} lines of {what} ({skip} earlier lines not shown):\n")
    } else {
        format!("{what}:\n")
    };
    for line in &lines[skip..] {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Bytes as a learner reads them: text stays text, everything else is escaped.
pub fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Compares what came back with what was expected, as escaped text: on a difference
/// it shows the offset of the first differing byte and a short window of both around
/// it (never two arrays of decimal numbers, never megabytes).
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = first.saturating_sub(20);
    let window = |bytes: &[u8]| {
        let to = bytes.len().min(first + 40);
        let shown = if from < to { &bytes[from..to] } else { &[][..] };
        let more = if to < bytes.len() { "..." } else { "" };
        format!("\"{}\"{more}", escaped(shown))
    };
    panic!(
        "{what}: differs at byte {first} (got {} bytes, expected {})\n  \
         got      (from byte {from}): {}\n  expected (from byte {from}): {}",
        got.len(),
        want.len(),
        window(got),
        window(want)
    );
}

/// Reads a pipe line by line on a thread of its own, sending each line to the channel.
fn lines_of<R: Read + Send + 'static>(pipe: R) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Reads a whole pipe on a thread of its own; join the handle for the text.
fn read_all_later<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Reads a whole pipe to a shared string on a thread of its own (readable while
/// the process still runs).
fn collect<R: Read + Send + 'static>(pipe: R) -> Arc<Mutex<String>> {
    collect_with_end(pipe).0
}

/// Like [`collect`], with the reader thread's handle: finished once the pipe closed.
fn collect_with_end<R: Read + Send + 'static>(
    mut pipe: R,
) -> (Arc<Mutex<String>>, thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let shared = Arc::clone(&text);
    let reader = thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            let text = String::from_utf8_lossy(&chunk[..n]);
            shared.lock().unwrap().push_str(&text);
        }
    });
    (text, reader)
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // Polling the exit status, not waiting for readiness: there is no
        // portable way to wait for a child with a timeout in std.
        thread::sleep(Duration::from_millis(5));
    }
}

impl Server {
    /// Starts `exe` with `args` and `--port 0` (unless `args` names a port) and
    /// waits for its `listening on IP:PORT` line.
    pub fn start(exe: &str, args: &[&str]) -> Server {
        let mut command = Command::new(exe);
        command.args(args);
        if !args.contains(&"--port") {
            command.args(["--port", "0"]);
        }
        Server::spawn(command, exe)
    }

    /// Like [`Server::start`], with the soft and hard limit on open descriptors set
    /// to `max_fds` (the shell's `ulimit -n`, then `exec`, so the pid is the server's).
    pub fn start_with_fd_limit(exe: &str, args: &[&str], max_fds: u32) -> Server {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {max_fds} && exec \"$0\" \"$@\""))
            .arg(exe)
            .args(args);
        if !args.contains(&"--port") {
            command.args(["--port", "0"]);
        }
        Server::spawn(command, exe)
    }

    fn spawn(mut command: Command, exe: &str) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_program(exe);
        let lines = lines_of(child.stdout.take().unwrap());
        let (stderr, stderr_reader) = collect_with_end(child.stderr.take().unwrap());
        let mut server = Server {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            local: None,
            lines,
            seen: Vec::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        let first = server.wait_for_line("listening on");
        let address = first.trim_start_matches("listening on ").trim();
        match address.strip_prefix("unix:") {
            Some(place) => server.local = Some(place.to_string()),
            None => {
                server.addr = address
                    .parse()
                    .unwrap_or_else(|err| panic!("bad address in {first:?}: {err}"))
            }
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, if one comes within `limit`.
    pub fn next_line(&mut self, limit: Duration) -> Option<String> {
        match self.lines.recv_timeout(limit) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(_) => None,
        }
    }

    /// Waits (up to [`WAIT`]) for a stdout line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no line with {needle:?} within {WAIT:?}; {}",
                    self.last_lines()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    // Its stderr may still be on its way: give its reader a moment.
                    if let Some(reader) = self.stderr_reader.take() {
                        let deadline = Instant::now() + Duration::from_secs(1);
                        while !reader.is_finished() && Instant::now() < deadline {
                            thread::sleep(Duration::from_millis(5));
                        }
                    }
                    panic!(
                        "the server closed its stdout (exited?) before printing a line with \
                         {needle:?}; {}",
                        self.last_lines()
                    )
                }
            }
        }
    }

    /// The lines printed since the last look, without waiting for more.
    pub fn drain(&mut self) -> Vec<String> {
        let fresh: Vec<String> = self.lines.try_iter().collect();
        self.seen.extend(fresh.iter().cloned());
        fresh
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("kill(2) failed");
    }

    /// Sends `signal` and waits up to [`STOP_WAIT`] for the server to exit.
    pub fn stop(mut self, signal: Signal) -> Exited {
        let started = Instant::now();
        self.signal(signal);
        let status = wait_with_timeout(&mut self.child, STOP_WAIT).unwrap_or_else(|| {
            panic!(
                "server still running {STOP_WAIT:?} after {signal:?}; {}",
                self.last_lines()
            )
        });
        let took = started.elapsed();
        // The reader thread sees EOF now that the process is gone.
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            self.seen.push(line);
        }
        Exited {
            status,
            stdout: self.seen.join("\n") + "\n",
            stderr: {
                // All of stderr: wait (bounded) for its reader to see the pipe close.
                if let Some(reader) = self.stderr_reader.take() {
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while !reader.is_finished() && Instant::now() < deadline {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                self.stderr_text()
            },
            took,
        }
    }

    /// The end of the server's log for a failure message: its last [`LOG_TAIL`]
    /// stdout lines (never the whole log, which may be megabytes) and its stderr.
    pub fn last_lines(&self) -> String {
        let stderr = self.stderr_text();
        format!(
            "{}\nstderr:\n{}",
            tail(&self.seen, "stdout"),
            if stderr.is_empty() {
                "(empty)"
            } else {
                stderr.trim_end()
            }
        )
    }

    /// What the server printed on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The server's resident memory in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// How many threads the server has (`/proc/PID/task`).
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// How many connections wait in the server's accept queue, not yet accepted: the
    /// `rx_queue` of its listening socket in `/proc/net/tcp` (IPv4 loopback servers).
    pub fn accept_queue(&self) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let local = format!("0100007F:{:04X}", self.port());
        table
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            // local_address, rem_address, st (0A = LISTEN), tx_queue:rx_queue
            .find(|fields| fields.len() > 4 && fields[1] == local && fields[3] == "0A")
            .and_then(|fields| fields[4].split(':').nth(1).map(str::to_string))
            .and_then(|rx| usize::from_str_radix(&rx, 16).ok())
            .unwrap_or(0)
    }

    /// Waits until the server has exited on its own (a zombie: gone, not yet reaped),
    /// then collects its exit status and everything it printed: for a server that
    /// is expected to die (the first versions of lessons 01, 04, 08).
    pub fn wait_for_its_end(self) -> Exited {
        let pid = self.pid();
        let ended = echo::eventually(|| process_state(pid) == Some('Z'));
        assert!(ended, "the server is still running; {}", self.last_lines());
        // A signal to a process that has already exited does nothing: `stop` only
        // reaps it and gathers what it printed (all of stderr, see `stop`).
        self.stop(SIGINT)
    }

    /// How many descriptors the server has open (`/proc/PID/fd`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a program to its end with `stdin` as its input; fails the test if it
/// takes longer than [`WAIT`].
pub fn run(exe: &str, args: &[&str], stdin: &[u8]) -> Exited {
    run_within(exe, args, stdin, WAIT)
}

/// How long the front door may take: `run` and `exercise` call `cargo build` or
/// `cargo test`, which on a loaded 2-core machine may compile for minutes.
pub const FRONT_DOOR_WAIT: Duration = Duration::from_secs(600);

/// `Command::spawn`, retried for a moment while the program file is missing. Tests
/// that go through the front door run `cargo build`, and cargo re-links every
/// program in target/debug (removes it, then links it again) even when nothing
/// changed: a program started by another test in that instant is not there yet.
pub trait SpawnProgram {
    fn spawn_program(&mut self, exe: &str) -> Child;
}

impl SpawnProgram for Command {
    fn spawn_program(&mut self, exe: &str) -> Child {
        let mut attempts = 0;
        loop {
            match self.spawn() {
                Ok(child) => return child,
                Err(err)
                    if attempts < 500
                        && matches!(
                            err.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ExecutableFileBusy
                        ) =>
                {
                    attempts += 1;
                    thread::sleep(Duration::from_millis(10));
                }
                Err(err) => panic!("cannot start {exe}: {err}"),
            }
        }
    }
}

/// Runs the front door (`workbook ARGS`) to its end, with [`FRONT_DOOR_WAIT`].
pub fn run_front_door(exe: &str, args: &[&str], stdin: &[u8]) -> Exited {
    run_within(exe, args, stdin, FRONT_DOOR_WAIT)
}

/// Runs a program to its end; fails the test if it takes longer than `wait`.
pub fn run_within(exe: &str, args: &[&str], stdin: &[u8], wait: Duration) -> Exited {
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_program(exe);
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Written on a thread: a program that does not read its input must not block us.
    thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let stdout = read_all_later(child.stdout.take().unwrap());
    let stderr = read_all_later(child.stderr.take().unwrap());
    let Some(status) = wait_with_timeout(&mut child, wait) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{exe} {args:?} did not finish within {wait:?}");
    };
    // The process is gone, so its pipes are at EOF and the readers end.
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Exited {
        status,
        stdout,
        stderr,
        took: started.elapsed(),
    }
}

/// A client kept running while the test does other things: lines go to its stdin
/// one at a time, and its stdout is read line by line.
pub struct Interactive {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Interactive {
    pub fn start(exe: &str, args: &[&str]) -> Interactive {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_program(exe);
        let stdin = child.stdin.take();
        let lines = lines_of(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Interactive {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Types one line into the program.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{line}").expect("cannot write to the client's stdin");
        stdin.flush().expect("cannot flush the client's stdin");
    }

    /// The next stdout line, if one comes within `limit`.
    pub fn next_line(&mut self, limit: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(limit).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// The next stdout line; fails the test if none comes within [`WAIT`].
    pub fn expect_line(&mut self) -> String {
        self.next_line(WAIT).unwrap_or_else(|| {
            panic!(
                "no output within {WAIT:?}; so far:\n{}\nstderr:\n{}",
                self.seen.join("\n"),
                self.stderr.lock().unwrap()
            )
        })
    }

    /// Closes stdin (end of input, Ctrl-D) and waits for the program to exit.
    pub fn finish(mut self) -> Exited {
        let started = Instant::now();
        drop(self.stdin.take());
        let status = wait_with_timeout(&mut self.child, WAIT)
            .unwrap_or_else(|| panic!("client did not exit within {WAIT:?} after end of input"));
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            self.seen.push(line);
        }
        let mut stdout = self.seen.join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        Exited {
            status,
            stdout,
            stderr: self.stderr.lock().unwrap().clone(),
            took: started.elapsed(),
        }
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw TCP connection with read and write timeouts of [`WAIT`], for the cases a
/// lesson's client would not produce.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, WAIT)
        .unwrap_or_else(|err| panic!("cannot connect to {addr}: {err}"));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// Reads until `want` bytes have come (or EOF, or the read timeout).
pub fn read_exactly(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = vec![0; want];
    let mut filled = 0;
    while filled < want {
        match stream.read(&mut got[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) => panic!("read failed after {filled} of {want} bytes: {err}"),
        }
    }
    got.truncate(filled);
    got
}

/// Reads until the peer closes (EOF); fails the test on a timeout or error.
pub fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    stream
        .read_to_end(&mut got)
        .unwrap_or_else(|err| panic!("read to EOF failed after {} bytes: {err}", got.len()));
    got
}

/// Closes a connection with a reset (RST) instead of the normal FIN: SO_LINGER on
/// with a zero timeout makes close(2) discard unsent data and abort.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// A port that is in use for as long as the returned listener lives.
pub fn busy_port() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// A loopback port with nothing listening on it (bound and closed at once: the
/// kernel will not hand it out again right away).
pub fn closed_port() -> u16 {
    let (listener, port) = busy_port();
    drop(listener);
    port
}

/// The contract's checks for a server that stopped on a signal.
pub fn assert_clean_shutdown(exited: &Exited) {
    assert!(
        exited.status.success(),
        "exit status {:?}; stderr:\n{}",
        exited.status,
        exited.stderr
    );
    let last = exited.stdout.trim_end().lines().last().unwrap_or("");
    let lines: Vec<String> = exited.stdout.lines().map(str::to_string).collect();
    assert!(
        last.starts_with("shutting down"),
        "last line should begin `shutting down`, got {last:?}; {}",
        tail(&lines, "stdout")
    );
    assert!(!exited.stderr.contains("panicked"), "{}", exited.stderr);
}

/// The contract's checks for a usage error: status 2, a message on stderr.
pub fn assert_usage_error(exited: &Exited) {
    assert_eq!(exited.status.code(), Some(2), "stderr:\n{}", exited.stderr);
    assert!(
        exited.stderr.contains("error:"),
        "stderr:\n{}",
        exited.stderr
    );
    assert!(exited.stderr.contains("usage:") || exited.stderr.contains("--help"));
    assert!(!exited.stderr.contains("panicked"), "{}", exited.stderr);
}

/// The contract's checks for a failure: status 1, one `error: ...` line naming `what`.
pub fn assert_error_line(exited: &Exited, what: &[&str]) {
    assert_eq!(exited.status.code(), Some(1), "stderr:\n{}", exited.stderr);
    let lines: Vec<&str> = exited.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "want one error line, got:\n{}",
        exited.stderr
    );
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    for needle in what {
        assert!(
            lines[0].contains(needle),
            "{needle:?} missing in {}",
            lines[0]
        );
    }
}

/// A client or tool whose stdout was closed stopped quietly: status 0 or 1, nothing
/// on stderr (no panic, no error blaming the network).
pub fn assert_quiet_stop(exited: &Exited, what: &str) {
    assert!(
        matches!(exited.status.code(), Some(0 | 1)),
        "{what}: exit status {:?}; stderr:\n{}",
        exited.status,
        exited.stderr
    );
    assert!(
        exited.stderr.is_empty(),
        "{what}: stderr:\n{}",
        exited.stderr
    );
}

pub mod transcript {
    //! Transcripts shown in the book are written by the tests from real runs.
    //!
    //! `UPDATE_TRANSCRIPTS=1 cargo test` writes them under `book/src/transcripts/`;
    //! a plain `cargo test` fails when what the programs print no longer matches the
    //! committed file. Ports, times and ephemeral addresses are normalised first so
    //! that two runs of the same programs give the same text.

    use regex::Regex;
    use std::collections::HashMap;
    use std::path::PathBuf;

    /// Turns one run's output into the stable text the book shows.
    pub struct Normaliser {
        ports: Vec<(u16, u16)>,
        patterns: Vec<(Regex, String)>,
        renumbered: Vec<Regex>,
    }

    impl Normaliser {
        /// Times in ctime form become `Sun Nov 22 10:00:00 2026`.
        pub fn new() -> Normaliser {
            let ctime = Regex::new(
                r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4}\b",
            )
            .unwrap();
            Normaliser {
                ports: Vec::new(),
                patterns: vec![(ctime, "Sun Nov 22 10:00:00 2026".into())],
                renumbered: Vec::new(),
            }
        }

        /// Shows the server's real port (from `--port 0`) as the lesson's default port,
        /// so the transcript reads like the run a learner makes.
        pub fn port(mut self, real: u16, shown: u16) -> Normaliser {
            self.ports.push((real, shown));
            self
        }

        /// Replaces every match of `pattern` (a regex) with `replacement` (`$1` allowed).
        pub fn pattern(mut self, pattern: &str, replacement: &str) -> Normaliser {
            let regex = Regex::new(pattern).unwrap();
            self.patterns.push((regex, replacement.into()));
            self
        }

        /// Renumbers what the first group of `pattern` captures (e.g. `worker-(\d+)`)
        /// as 1, 2, 3, ... in order of first appearance: for names that depend on
        /// which thread happened to win a race.
        pub fn renumber(mut self, pattern: &str) -> Normaliser {
            self.renumbered.push(Regex::new(pattern).unwrap());
            self
        }

        pub fn apply(&self, text: &str) -> String {
            let mut text = text.to_string();
            for (regex, replacement) in &self.patterns {
                text = regex.replace_all(&text, replacement.as_str()).into_owned();
            }
            for regex in &self.renumbered {
                let mut seen: Vec<String> = Vec::new();
                text = regex
                    .replace_all(&text, |caps: &regex::Captures| {
                        let whole = &caps[0];
                        let group = caps.get(1).unwrap();
                        let position = match seen.iter().position(|s| s == group.as_str()) {
                            Some(position) => position,
                            None => {
                                seen.push(group.as_str().to_string());
                                seen.len() - 1
                            }
                        };
                        let start = group.start() - caps.get(0).unwrap().start();
                        let end = group.end() - caps.get(0).unwrap().start();
                        format!("{}{}{}", &whole[..start], position + 1, &whole[end..])
                    })
                    .into_owned();
            }
            // Known ports first, then every other port in the ephemeral range (the
            // kernel's choice for a client's end) becomes 50001, 50002, ... in order
            // of first appearance.
            let address = Regex::new(r"(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):(\d{1,5})\b").unwrap();
            let mut ephemeral: HashMap<u16, u16> = HashMap::new();
            address
                .replace_all(&text, |caps: &regex::Captures| {
                    let ip = &caps[1];
                    let port: u16 = caps[2].parse().unwrap_or(0);
                    let shown = if let Some((_, shown)) =
                        self.ports.iter().find(|(real, _)| *real == port)
                    {
                        *shown
                    } else if port >= 32768 {
                        let next = 50001 + ephemeral.len() as u16;
                        *ephemeral.entry(port).or_insert(next)
                    } else {
                        port
                    };
                    format!("{ip}:{shown}")
                })
                .into_owned()
        }
    }

    fn path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("book/src/transcripts")
            .join(format!("{name}.txt"))
    }

    /// With `UPDATE_TRANSCRIPTS=1`, writes `text` to `book/src/transcripts/NAME.txt`;
    /// otherwise fails when the committed file differs from `text`.
    pub fn check(name: &str, text: &str) {
        let file = path(name);
        if std::env::var_os("UPDATE_TRANSCRIPTS").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, text).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&file).unwrap_or_else(|err| {
            panic!(
                "cannot read {}: {err}\nrun `UPDATE_TRANSCRIPTS=1 cargo test` to write it",
                file.display()
            )
        });
        if committed != text {
            panic!(
                "the transcript {} no longer matches what the programs print:\n{}\n\
                 If the change is intended, accept it with:\n  \
                 UPDATE_TRANSCRIPTS=1 cargo test --test {}\nand commit the file.",
                file.display(),
                line_diff(&committed, text),
                test_file()
            );
        }
    }

    /// The name of the running test file (`05_poll` for tests/05_poll.rs).
    fn test_file() -> String {
        let exe = std::env::current_exe().unwrap_or_default();
        let stem = exe
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("NN_topic");
        // Cargo names the test binary `05_poll-<hash>`.
        stem.rsplit_once('-')
            .map_or(stem, |(name, _)| name)
            .to_string()
    }

    /// A short line diff: `-` committed, `+` now, with one line of context, at most
    /// 30 lines shown.
    pub fn line_diff(old: &str, new: &str) -> String {
        let old: Vec<&str> = old.lines().collect();
        let new: Vec<&str> = new.lines().collect();
        // Longest common subsequence table, from the end (transcripts are short).
        let mut common = vec![vec![0usize; new.len() + 1]; old.len() + 1];
        for i in (0..old.len()).rev() {
            for j in (0..new.len()).rev() {
                common[i][j] = if old[i] == new[j] {
                    common[i + 1][j + 1] + 1
                } else {
                    common[i + 1][j].max(common[i][j + 1])
                };
            }
        }
        let mut rows: Vec<(char, &str)> = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            if i < old.len() && j < new.len() && old[i] == new[j] {
                rows.push((' ', old[i]));
                i += 1;
                j += 1;
            } else if i < old.len() && (j == new.len() || common[i + 1][j] >= common[i][j + 1]) {
                rows.push(('-', old[i]));
                i += 1;
            } else {
                rows.push(('+', new[j]));
                j += 1;
            }
        }
        let changed: Vec<usize> = (0..rows.len()).filter(|&k| rows[k].0 != ' ').collect();
        let near = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= 1);
        let mut out = String::new();
        let mut shown = 0;
        let mut gap = false;
        for (k, (mark, line)) in rows.iter().enumerate() {
            if !near(k) {
                gap = true;
                continue;
            }
            if shown == 30 {
                out.push_str("  ... (more differences)\n");
                break;
            }
            if gap && !out.is_empty() {
                out.push_str("  ...\n");
            }
            gap = false;
            out.push_str(&format!("{mark} {line}\n"));
            shown += 1;
        }
        if out.is_empty() {
            out.push_str(
                "(the lines are the same; the difference is in line endings or a final newline)\n",
            );
        }
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn line_diff_shows_changed_lines_with_context() {
            let diff = super::line_diff("a\nb\nc\nd\ne\n", "a\nb\nC\nd\ne\n");
            assert_eq!(diff, "  b\n- c\n+ C\n  d\n");
        }

        #[test]
        fn normalises_ports_and_times() {
            let n = super::Normaliser::new().port(41234, 21567);
            let text = "listening on 127.0.0.1:41234\n\
                        connection 127.0.0.1:53000 -> 127.0.0.1:41234\n\
                        [Mon Jan  5 09:08:07 2026] hi\n\
                        connection 127.0.0.1:60001 -> 127.0.0.1:41234\n\
                        closed 127.0.0.1:53000\n";
            assert_eq!(
                n.apply(text),
                "listening on 127.0.0.1:21567\n\
                 connection 127.0.0.1:50001 -> 127.0.0.1:21567\n\
                 [Sun Nov 22 10:00:00 2026] hi\n\
                 connection 127.0.0.1:50002 -> 127.0.0.1:21567\n\
                 closed 127.0.0.1:50001\n"
            );
        }
    }
}

pub mod contract {
    //! The cases of DESIGN.md's contract that every server and client keeps, one
    //! function each, so that each lesson's test states them in one line.

    use super::*;

    /// Port in use: exit status 1 and one `error:` line naming the address.
    pub fn server_reports_port_in_use(server_exe: &str, args: &[&str]) {
        let (_holder, port) = busy_port();
        let port_text = port.to_string();
        let mut all = args.to_vec();
        all.extend(["--port", &port_text]);
        let exited = run(server_exe, &all, b"");
        assert_error_line(&exited, &[&format!("127.0.0.1:{port}"), "in use"]);
    }

    /// A host that is not an address of this machine: exit 1 and an `error:` line.
    /// (192.0.2.1 is reserved for documentation; bind(2) fails without sending anything.)
    pub fn server_reports_bad_host(server_exe: &str) {
        let exited = run(server_exe, &["--host", "192.0.2.1", "--port", "0"], b"");
        assert_error_line(&exited, &["192.0.2.1", "not one of this machine's"]);
    }

    /// Unknown flags and bad values: exit status 2 with a usage message.
    pub fn rejects_bad_flags(exe: &str) {
        for args in [
            &["--no-such-flag"][..],
            &["--port", "not-a-port"],
            &["--port"],
        ] {
            assert_usage_error(&run(exe, args, b""));
        }
        let help = run(exe, &["--help"], b"");
        assert!(help.status.success(), "--help: {:?}", help.status);
        assert!(help.stdout.contains("--port PORT"), "{}", help.stdout);
    }

    /// SIGINT or SIGTERM: last line `shutting down`, exit 0, promptly.
    pub fn server_stops_on(server_exe: &str, args: &[&str], signal: Signal) -> Exited {
        let server = Server::start(server_exe, args);
        let exited = server.stop(signal);
        assert_clean_shutdown(&exited);
        exited
    }

    /// Starts the server with its stdout on a pipe, reads the `listening on` line and
    /// returns the process, its address, and the pipe's read end (still open).
    fn start_reading_first_line(
        server_exe: &str,
        args: &[&str],
    ) -> (KillOnDrop, SocketAddr, std::process::ChildStdout) {
        let mut command = Command::new(server_exe);
        command.args(args);
        if !args.contains(&"--port") {
            command.args(["--port", "0"]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn_program(server_exe);
        let mut stdout = child.stdout.take().unwrap();
        let child = KillOnDrop(Some(child));
        // Byte by byte, so that nothing after the first line is taken from the pipe.
        let (sender, receiver) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while let Ok(1) = stdout.read(&mut byte) {
                if byte[0] == b'\n' {
                    break;
                }
                line.push(byte[0]);
            }
            let _ = sender.send(String::from_utf8_lossy(&line).into_owned());
            stdout
        });
        let first = receiver
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no first line from {server_exe} within {WAIT:?}"));
        let stdout = reader.join().unwrap();
        // A server on an AF_UNIX path (lesson 16) says `listening on unix:PATH`; its test
        // gave it the path, and `serve` gets 0.0.0.0:0.
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|addr| match addr.trim().strip_prefix("unix:") {
                Some(_) => Some(SocketAddr::from(([0, 0, 0, 0], 0))),
                None => addr.trim().parse().ok(),
            })
            .unwrap_or_else(|| panic!("first line is not `listening on ...`: {first:?}"));
        (child, addr, stdout)
    }

    /// The server under a stdout test: killed if the test fails before it is stopped.
    struct KillOnDrop(Option<Child>);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(child) = self.0.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// SIGINT, then the exit status within [`STOP_WAIT`] (the test fails otherwise).
    /// SIGINT, then the exit status within [`STOP_WAIT`] (the test fails otherwise).
    fn interrupt_and_wait(mut server: KillOnDrop, how: &str) -> ExitStatus {
        let child = server.0.as_mut().expect("the server is running");
        kill(Pid::from_raw(child.id() as i32), SIGINT).unwrap();
        let status = wait_with_timeout(child, STOP_WAIT);
        if status.is_some() {
            server.0 = None;
        }
        status.unwrap_or_else(|| panic!("with {how}, the server ignored SIGINT for {STOP_WAIT:?}"))
    }

    /// stdout is read, but slowly (about 200 KB/s, a slow terminal): a busy server's
    /// log backs up in its queue. On SIGINT it must still exit 0 promptly, and the last
    /// line a reader gets must be its `shutting down` line (the backlog may be dropped,
    /// with a count, to let it through).
    pub fn keeps_its_last_line_with_a_slow_stdout(
        server_exe: &str,
        args: &[&str],
        serve: impl FnOnce(SocketAddr),
    ) {
        let (mut server, addr, mut stdout) = start_reading_first_line(server_exe, args);
        let reading = thread::spawn(move || {
            let mut text = Vec::new();
            let mut chunk = [0u8; 4096];
            // Pacing the reader is the point of the test, not a wait for readiness.
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                text.extend_from_slice(&chunk[..n]);
                thread::sleep(Duration::from_millis(20));
            }
            String::from_utf8_lossy(&text).into_owned()
        });
        serve(addr);
        let child = server.0.as_mut().expect("the server is running");
        kill(Pid::from_raw(child.id() as i32), SIGINT).unwrap();
        let status = wait_with_timeout(child, STOP_WAIT)
            .unwrap_or_else(|| panic!("with a slow stdout, SIGINT was ignored for {STOP_WAIT:?}"));
        server.0 = None;
        assert!(
            status.success(),
            "with a slow stdout, exit status {status:?}"
        );
        let text = reading.join().unwrap();
        let last = text.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(workbook::log::SHUTTING_DOWN),
            "with a slow stdout the last line should begin `shutting down`, got {last:?}"
        );
    }

    // ANCHOR: closed_stdout
    /// `server | head -1`: stdout is closed after the `listening on` line. The server
    /// must go on serving (`serve` talks to it) and stop on SIGINT with status 0:
    /// a log line it can no longer write is no reason to die.
    pub fn survives_closed_stdout(server_exe: &str, args: &[&str], serve: impl FnOnce(SocketAddr)) {
        let (server, addr, stdout) = start_reading_first_line(server_exe, args);
        drop(stdout);
        serve(addr);
        let status = interrupt_and_wait(server, "stdout closed");
        assert!(
            status.success(),
            "with stdout closed, exit status {status:?}"
        );
    }
    // ANCHOR_END: closed_stdout

    /// stdout is a pipe that nobody reads after the first line (a stalled terminal):
    /// once the pipe is full, every write to it would block. The server must go on
    /// serving (`serve` should make it log more than a pipe holds, 64 KiB) and stop on
    /// SIGINT within the contract's time.
    pub fn survives_stalled_stdout(
        server_exe: &str,
        args: &[&str],
        serve: impl FnOnce(SocketAddr),
    ) {
        let (server, addr, stdout) = start_reading_first_line(server_exe, args);
        serve(addr);
        let status = interrupt_and_wait(server, "stdout stalled");
        drop(stdout);
        assert!(
            status.success(),
            "with stdout stalled, exit status {status:?}"
        );
    }

    /// No server: exit status 1, one `error:` line with the address and the command
    /// that starts the server.
    pub fn client_reports_no_server(client_exe: &str, server_bin: &str, args: &[&str]) {
        let port = closed_port().to_string();
        let mut all = vec!["--port", &port];
        all.extend(args);
        let exited = run(client_exe, &all, b"hello\n");
        assert_error_line(
            &exited,
            &[
                &format!("127.0.0.1:{port}"),
                &format!("cargo run --bin {server_bin}"),
            ],
        );
    }
}

pub mod udp {
    //! UDP for the tests: a loopback socket whose every wait has a timeout, one
    //! request and its reply, a port held busy, and the UDP form of the contract's
    //! "port in use" case (the one above binds TCP, and a TCP port does not make the
    //! same UDP port busy).

    use super::*;
    use std::net::UdpSocket;

    /// The largest UDP payload IPv4 can carry: 65,535 minus the IP and UDP headers.
    pub const MAX_IPV4_PAYLOAD: usize = 65_507;

    /// A UDP socket on 127.0.0.1 and a free port, with a read timeout of [`WAIT`].
    pub fn socket() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        socket
    }

    /// Waits up to [`WAIT`] for the next datagram; returns it whole with its sender.
    pub fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buffer = vec![0u8; 65_536];
        let (size, from) = socket
            .recv_from(&mut buffer)
            .unwrap_or_else(|err| panic!("no datagram within {WAIT:?}: {err}"));
        buffer.truncate(size);
        (buffer, from)
    }

    /// Sends `payload` to `to` as one datagram and returns the first datagram back.
    pub fn ask(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> (Vec<u8>, SocketAddr) {
        let sent = socket
            .send_to(payload, to)
            .unwrap_or_else(|err| panic!("cannot send {} bytes to {to}: {err}", payload.len()));
        assert_eq!(sent, payload.len(), "a datagram is sent whole");
        receive(socket)
    }

    /// A UDP port on 127.0.0.1 in use for as long as the returned socket lives.
    pub fn busy_port() -> (UdpSocket, u16) {
        let socket = socket();
        let port = socket.local_addr().unwrap().port();
        (socket, port)
    }

    /// A UDP port with nothing bound to it (bound and closed at once); a datagram
    /// sent there gets an ICMP "port unreachable" back.
    pub fn closed_port() -> u16 {
        let (socket, port) = busy_port();
        drop(socket);
        port
    }

    /// Port in use, for a UDP server: exit status 1 and one `error:` line naming
    /// the address and the cause.
    pub fn server_reports_port_in_use(server_exe: &str, args: &[&str]) {
        let (_holder, port) = busy_port();
        let port_text = port.to_string();
        let mut all = args.to_vec();
        all.extend(["--port", &port_text]);
        let exited = run(server_exe, &all, b"");
        assert_error_line(&exited, &[&format!("127.0.0.1:{port}"), "in use"]);
    }
}

/// Runs a client with its stdout a pipe whose read end is already closed, as in
/// `client | head -0`: its first write to stdout fails with EPIPE. Returns how it
/// ended (stdout is empty: nobody could read it).
pub fn run_with_closed_stdout(exe: &str, args: &[&str], stdin: &[u8]) -> Exited {
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe(2) failed");
    drop(read_end);
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn_program(exe);
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let stderr = read_all_later(child.stderr.take().unwrap());
    let Some(status) = wait_with_timeout(&mut child, WAIT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{exe} {args:?} with stdout closed did not finish within {WAIT:?}");
    };
    Exited {
        status,
        stdout: String::new(),
        stderr: stderr.join().unwrap_or_default(),
        took: started.elapsed(),
    }
}

// Matching log words as whole words, and reading to a close (lessons 06 and 07).

/// Waits for a log line holding `word` as a word of its own: `connected` does not
/// match a `disconnected` line.
pub fn wait_for_word(server: &mut Server, word: &str) -> String {
    loop {
        let line = server.wait_for_line(word);
        if has_word(&line, word) {
            return line;
        }
    }
}

/// Like [`wait_for_word`], for a line that also names `about` (a client's address).
pub fn wait_for_word_about(server: &mut Server, word: &str, about: &str) -> String {
    loop {
        let line = wait_for_word(server, word);
        if line.contains(about) {
            return line;
        }
    }
}

pub fn has_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// Reads until the server closes (EOF or reset), at most `limit`; `None` if the
/// connection is still open then. What came before the close is returned.
pub fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buffer[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(err) => panic!("read failed after {} bytes: {err}", got.len()),
        }
    }
}

/// The state letter of a process (`S` sleeping, `T` stopped, `Z` exited and not yet
/// reaped...), from /proc/PID/stat, if the process is there.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (name) STATE ...`: the name may hold spaces, so look after its last `)`.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Can strace trace a program here? Outside CI a test that needs it is skipped (with
/// a note) when it cannot; under CI (`CI` set) that fails. (Lessons 02, 07 and 08
/// have copies of their own of this probe.)
pub fn strace_works() -> bool {
    strace_works_with(&["-f", "-qq", "-o", "/dev/null"])
}

/// Whether strace runs `true` here with these options (a test that needs a particular
/// option, such as `-e inject`, probes with it); skipping and failing as [`strace_works`].
pub fn strace_works_with<S: AsRef<std::ffi::OsStr>>(options: &[S]) -> bool {
    let probe = Command::new("strace").args(options).arg("true").output();
    let problem = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "strace cannot trace here ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => format!("strace is missing: {err}"),
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "{problem}; CI must install strace (and allow ptrace)"
    );
    eprintln!("skipped: {problem}; install strace to run this test");
    false
}

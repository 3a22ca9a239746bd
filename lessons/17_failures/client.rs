//! Lesson 17, the client: every error a socket program meets, made to happen, named,
//! and explained.
//!
//! `--case NAME` reproduces one failure on loopback (the client opens the peer it
//! needs itself, with the server's own misbehave code) and prints what a Rust program
//! sees (io::ErrorKind, errno), what Python would raise, and what to do; `--all`
//! prints them all as a table. Without either, it talks to lesson 17's server like a
//! careful client: every wait bounded, every failure diagnosed from that catalogue.
//!
//!   anywhere:   cargo run --bin 17_failures_client -- --all
//!   terminal 1: cargo run --bin 17_failures_server -- --misbehave slow
//!   terminal 2: cargo run --bin 17_failures_client -- hello

// ANCHOR: modules
/// The catalogue: each case, how to make it happen, and what it gives.
mod cases;
/// The server's modes, which the cases run in-process (the client needs the
/// serving, not the names the server's command line uses).
#[allow(dead_code)]
mod misbehave;
// ANCHOR_END: modules

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use cases::{CASES, Case, Outcome};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use workbook::cli::Cli;
use workbook::{exit_with_error, print_line, show};

const DEFAULT_PORT: u16 = 10017;

fn main() {
    let args = Cli::new(
        "17_failures_client",
        "Lesson 17: socket errors made to happen on loopback, named and explained.",
        DEFAULT_PORT,
    )
    .value(
        "--case",
        "NAME",
        "reproduce one failure on loopback and explain it (see --list; needs no server)",
    )
    .switch(
        "--all",
        "reproduce every failure and print the table (needs no server)",
    )
    .switch(
        "--markdown",
        "with --all: the table as Markdown, with the fixes",
    )
    .switch("--list", "list the cases")
    .value(
        "--timeout",
        "SECS",
        "talking to the server: the bound of each wait (default 2)",
    )
    .positional(
        "MESSAGE",
        "talking to the server: messages to send (default: the lines of stdin)",
    )
    .parse();
    if args.flag("--list") {
        for case in CASES {
            print_line(&format!("{:22} {}", case.name, case.what));
        }
        return;
    }
    if args.flag("--all") {
        std::process::exit(all(args.flag("--markdown")));
    }
    if let Some(name) = args.get::<String>("--case") {
        let Some(case) = cases::find(&name) else {
            args.usage_error(&format!("no case '{name}' (see --list)"));
        };
        std::process::exit(one(case));
    }
    let seconds: f64 = args.get_or("--timeout", 2.0);
    if !(0.1..=600.0).contains(&seconds) {
        args.usage_error("--timeout must be between 0.1 and 600 seconds");
    }
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));
    let wait = Duration::from_secs_f64(seconds);
    let mut stream = connect_and_greet(addr, wait).unwrap_or_else(|failure| failure.report(addr));
    // Each message as it comes (a line typed, or an argument): send it, read its echo.
    let mut failed = None;
    let read_input = args.each_message(|message| {
        exchange(&mut stream, message, wait).map_err(|failure| {
            failed = Some(failure);
            io::Error::other("the exchange failed")
        })
    });
    if let Some(failure) = failed {
        failure.report(addr);
    }
    if let Err(err) = read_input {
        exit_with_error(&format!("cannot read stdin: {err}"));
    }
}

/// Runs `case`: what it gave, and whether that is what the catalogue says.
fn observe(case: &Case) -> (Outcome, bool) {
    let outcome = (case.run)().unwrap_or_else(|err| Outcome {
        kind: "(setup failed)".into(),
        errno: cases::errno_of(&err),
        detail: format!("setting the case up failed: {err}"),
    });
    let expected = outcome.kind == case.kind && outcome.errno == case.errno;
    (outcome, expected)
}

// ANCHOR: one
/// `--case NAME`: run it and explain it.
fn one(case: &Case) -> i32 {
    let (outcome, expected) = observe(case);
    print_line(&format!("case {}: {}", case.name, case.what));
    if let Some(mode) = case.mode {
        print_line(&format!(
            "  (reproduced in-process; the server shows it with --misbehave {mode})"
        ));
    }
    for (label, value) in [
        ("syscall", case.syscall),
        ("happened", &outcome.detail),
        ("ErrorKind", &outcome.kind),
        ("errno", &outcome.errno),
        ("python", case.python_line),
        ("fix", case.fix),
    ] {
        print_line(&format!("  {label:10} {value}"));
    }
    if expected {
        0
    } else {
        print_line(&format!(
            "  UNEXPECTED: the catalogue says {} / {} on Linux",
            case.kind, case.errno
        ));
        1
    }
}
// ANCHOR_END: one

/// `--all`: every case, one row each; status 1 if any gave something unexpected.
fn all(markdown: bool) -> i32 {
    let mut rows = Vec::new();
    let mut unexpected = 0;
    for case in CASES {
        let (outcome, expected) = observe(case);
        if !expected {
            unexpected += 1;
        }
        let mark = if expected { "" } else { " (UNEXPECTED)" };
        rows.push([
            case.name.to_string(),
            case.syscall.to_string(),
            format!("{}{mark}", outcome.kind),
            outcome.errno,
            case.python.to_string(),
            case.fix.to_string(),
        ]);
    }
    if markdown {
        print_line("| case | syscall | Rust ErrorKind | errno | Python | what to do |");
        print_line("|---|---|---|---|---|---|");
        for row in &rows {
            print_line(&format!("| `{}` | {} |", row[0], row[1..].join(" | ")));
        }
    } else {
        let headers = ["case", "syscall", "ErrorKind", "errno", "Python"];
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| {
                rows.iter()
                    .map(|row| row[i].len())
                    .chain([headers[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: [&str; 5]| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{cell:width$}  ", width = widths[i]));
                }
            }
            print_line(&text);
        };
        line(headers);
        for row in &rows {
            line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
        }
    }
    if unexpected > 0 {
        print_line(&format!(
            "{unexpected} cases gave something other than the catalogue says"
        ));
        1
    } else {
        0
    }
}

// The careful client: lesson 17's protocol (a greeting, then echo), each wait bounded.

/// The steps of a conversation with the server, where a failure can happen.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    Greeting,
    Send,
    Echo,
}

impl Step {
    fn doing(self) -> &'static str {
        match self {
            Step::Connect => "connecting to",
            Step::Greeting => "waiting for the greeting from",
            Step::Send => "sending to",
            Step::Echo => "reading the echo from",
        }
    }
}

/// Where talking to the server failed, and with what.
struct Failure {
    step: Step,
    error: io::Error,
    /// Bytes of the reply that came before it failed.
    partial: Option<usize>,
}

impl Failure {
    /// One `error:` line on stderr, the catalogue's diagnosis on stdout, exit 1.
    fn report(self, addr: SocketAddr) -> ! {
        let case = diagnose(self.step, &self.error, self.partial);
        if let Some(case) = case {
            print_line(&format!(
                "diagnosis: the case `{}`: {}",
                case.name, case.what
            ));
            print_line(&format!(
                "  ErrorKind {:?}, errno {}",
                self.error.kind(),
                cases::errno_of(&self.error)
            ));
            if let Some(here) = here(case.name) {
                print_line(&format!("  here: {here}"));
            }
            print_line(&format!("  python would say: {}", case.python_line));
            print_line(&format!("  what to do: {}", case.fix));
            print_line(&format!(
                "  see it alone: cargo run --bin 17_failures_client -- --case {}",
                case.name
            ));
        }
        if self.step == Step::Connect && self.error.kind() == io::ErrorKind::TimedOut {
            // Not "nobody is there": a connect that times out got no answer at all,
            // and a server whose accept queue is full does exactly that.
            exit_with_error(&format!(
                "cannot connect to {addr}: {}: no answer to the SYN: the server's accept \
                 queue may be full (--misbehave never-accept), or a firewall drops it, \
                 or no machine has that address",
                self.error
            ));
        }
        if self.step == Step::Connect {
            exit_with_error(&workbook::connect_failed(
                addr,
                &self.error,
                "17_failures_server",
            ));
        }
        exit_with_error(&format!("{} {addr}: {}", self.step.doing(), self.error))
    }
}

/// What the case means for this client, where the catalogue's row needs a word.
fn here(case: &str) -> Option<&'static str> {
    Some(match case {
        "read-timeout" => {
            "nothing came before the deadline: the last read waited the time left and \
             failed with EAGAIN; the connection is still usable, but this client has \
             nothing else to wait for, so it gives up"
        }
        "deadline" => {
            "part of the echo came, the rest not before the deadline: TimedOut is this \
             client's own error (each read itself waited at most the time left)"
        }
        "eof" => "end of file before the echo came: for a client that expects one, an error",
        "connect-timeout" => {
            "no answer to the SYN before the timeout (connect_timeout's own TimedOut)"
        }
        _ => return None,
    })
}

// ANCHOR: diagnose
/// Which case of the catalogue a failure is, from the step and the error kind.
fn diagnose(step: Step, err: &io::Error, partial: Option<usize>) -> Option<&'static Case> {
    use io::ErrorKind::*;
    let name = match (step, err.kind()) {
        (Step::Connect, ConnectionRefused) => "refused",
        (Step::Connect, TimedOut) => "connect-timeout",
        (Step::Greeting, WouldBlock | TimedOut) => "deadlock",
        (Step::Send, WouldBlock | TimedOut) => "write-blocks",
        (Step::Echo, TimedOut) if partial.unwrap_or(0) > 0 => "deadline",
        (Step::Echo, WouldBlock | TimedOut) => "read-timeout",
        (_, ConnectionReset) => "reset",
        (_, BrokenPipe) => "broken-pipe",
        (_, UnexpectedEof) => "eof",
        _ => return None,
    };
    cases::find(name)
}
// ANCHOR_END: diagnose

fn step_failed(step: Step) -> impl Fn(io::Error) -> Failure {
    move |error| Failure {
        step,
        error,
        partial: None,
    }
}

// ANCHOR: talk
/// Connects, then waits (bounded) for the greeting.
fn connect_and_greet(addr: SocketAddr, wait: Duration) -> Result<TcpStream, Failure> {
    let mut stream = TcpStream::connect_timeout(&addr, wait).map_err(step_failed(Step::Connect))?;
    // ANCHOR: keepalive
    // A connection that stays quiet may be half-open: the peer's machine lost power,
    // or a NAT box forgot the connection, and no FIN or RST will ever come. TCP
    // keepalive finds out: after 60 s of silence (TCP_KEEPIDLE) the kernel sends a
    // probe, every 10 s (TCP_KEEPINTVL), and after 5 unanswered ones (TCP_KEEPCNT)
    // it drops the connection: a blocked read fails with ETIMEDOUT.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(5);
    socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&keepalive)
        .map_err(step_failed(Step::Connect))?;
    // ANCHOR_END: keepalive
    if let Ok(local) = stream.local_addr() {
        print_line(&format!("connected to {addr} from {local}"));
    }

    // The greeting. A server that waits for us to speak first (wait-first) leaves us
    // both waiting: the timeout is how we find out, and then we speak anyway.
    let mut greeting = Vec::new();
    match read_before(&mut stream, &mut greeting, 6, Instant::now() + wait) {
        Ok(()) => print_line(&format!("greeting: {}", show::bytes(&greeting))),
        Err(err) if is_timeout(&err) && greeting.is_empty() => {
            let why = diagnose(Step::Greeting, &err, None).map_or("", |case| case.name);
            print_line(&format!(
                "no greeting within {wait:?}: both sides are waiting (the case `{why}`); \
                 speaking first"
            ));
        }
        Err(error) => {
            return Err(Failure {
                step: Step::Greeting,
                error,
                partial: None,
            });
        }
    }

    Ok(stream)
}

/// Sends one message and reads its echo before a deadline.
fn exchange(stream: &mut TcpStream, message: &[u8], wait: Duration) -> Result<(), Failure> {
    let mut echo = Vec::new();
    send_reading(stream, message, &mut echo, wait)?;
    print_line(&format!("sent {}", show::bytes(message)));
    // One deadline for the whole echo, not one timeout per read: a server that
    // sends a byte a second would satisfy every read and never finish.
    let deadline = Instant::now() + wait;
    read_before(stream, &mut echo, message.len(), deadline).map_err(|error| {
        if !echo.is_empty() {
            print_line(&format!("partial echo: {}", show::bytes(&echo)));
        }
        Failure {
            step: Step::Echo,
            error,
            partial: Some(echo.len()),
        }
    })?;
    print_line(&format!("echo {}", show::bytes(&echo)));
    Ok(())
}

// ANCHOR: send_reading
/// Sends `message`, reading the echo into `echo` meanwhile. Writing it all first
/// would deadlock on a message bigger than the buffers: the server's echo fills our
/// receive buffer, its write blocks, it stops reading, its receive buffer fills, and
/// then our write blocks too, each waiting for the other. So poll(2) for both, and
/// send only what fits now (MSG_DONTWAIT). A send that makes no progress for `wait`
/// fails with EAGAIN: the peer does not read (no-read).
fn send_reading(
    stream: &TcpStream,
    message: &[u8],
    echo: &mut Vec<u8>,
    wait: Duration,
) -> Result<(), Failure> {
    let socket = socket2::SockRef::from(stream);
    let mut sent = 0;
    let mut chunk = [0u8; 64 * 1024];
    let mut stuck_after = Instant::now() + wait;
    while sent < message.len() {
        let mut events = PollFlags::POLLOUT;
        if echo.len() < message.len() {
            events |= PollFlags::POLLIN;
        }
        let left = stuck_after.saturating_duration_since(Instant::now());
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stream.as_fd(), events)];
        let ready = match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(_) => fds[0].revents().unwrap_or(PollFlags::empty()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(step_failed(Step::Send)(err.into())),
        };
        if ready.contains(PollFlags::POLLIN) {
            let room = (message.len() - echo.len()).min(chunk.len());
            match (&*stream).read(&mut chunk[..room]) {
                Ok(0) => {
                    return Err(Failure {
                        step: Step::Echo,
                        error: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection (end of file)",
                        ),
                        partial: Some(echo.len()),
                    });
                }
                Ok(n) => echo.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(Failure {
                        step: Step::Echo,
                        error,
                        partial: Some(echo.len()),
                    });
                }
            }
        }
        // Writable, an error to report (POLLERR, POLLHUP), or the wait is over: the
        // send says which (EAGAIN when nothing fits).
        if !ready.contains(PollFlags::POLLIN) || ready.contains(PollFlags::POLLOUT) {
            match socket.send_with_flags(&message[sent..], nix::libc::MSG_DONTWAIT) {
                Ok(n) => {
                    sent += n;
                    stuck_after = Instant::now() + wait;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err)
                    if err.kind() == io::ErrorKind::WouldBlock && Instant::now() < stuck_after => {}
                Err(err) => return Err(step_failed(Step::Send)(err)),
            }
        }
    }
    Ok(())
}
// ANCHOR_END: send_reading
// ANCHOR_END: talk

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// ANCHOR: read_before
/// Reads until `want` bytes are in `into` or `deadline` passes: WouldBlock (EAGAIN,
/// the read timeout's) if nothing came, TimedOut (this function's own) if part did;
/// end of file before that is UnexpectedEof. Before each read, the timeout is the
/// time left.
fn read_before(
    stream: &mut TcpStream,
    into: &mut Vec<u8>,
    want: usize,
    deadline: Instant,
) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    let had = into.len();
    // The read timeout's own error, kept: when nothing at all came before the
    // deadline, that EAGAIN is what happened (a read timeout, WouldBlock).
    let mut timed_out = None;
    while into.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(match timed_out {
                Some(err) if into.len() == had => err,
                // Bytes came, not all: the deadline is this program's, not the kernel's.
                _ => io::Error::new(io::ErrorKind::TimedOut, "deadline passed"),
            });
        }
        stream.set_read_timeout(Some(left))?;
        let room = (want - into.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection (end of file)",
                ));
            }
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            // SO_RCVTIMEO ran out: EAGAIN. Loop: the deadline decides.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => timed_out = Some(err),
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
// ANCHOR_END: read_before

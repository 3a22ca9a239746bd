//! The error catalogue: every failure of lesson 17, made to happen on purpose.
//!
//! Each case runs on loopback against a peer of its own: a listener this process
//! opens on port 0 (a thread serves it with the server's own `misbehave` code), a
//! port bound but not listening, or no peer at all (bind, name lookup). Nothing
//! leaves the machine, and every wait has a bound ([`WAIT`]).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::misbehave::{self, Mode};

/// The bound of every wait in a case: connect, read, write.
pub const WAIT: Duration = Duration::from_secs(1);
/// The slow peer's deadline case: longer than one byte's pause (1 s), shorter than
/// the whole reply (5 bytes, 4 s).
const DEADLINE: Duration = Duration::from_millis(2500);
/// How long an in-process peer holds its connection at most.
const PEER_HOLD: Duration = Duration::from_secs(10);
/// An address of no machine here (TEST-NET-3, RFC 5737): bind(2) refuses it.
pub const NOT_OURS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// A name no resolver knows. Under `.invalid` (RFC 6761: never registered), and its
/// first label is longer than the 63 bytes DNS allows, so glibc refuses it before
/// building a query: nothing goes to the nameserver (see the chapter).
pub const UNKNOWN_HOST: &str =
    "this-label-is-longer-than-the-sixty-three-bytes-that-dns-allows-so-no-query-is-sent.invalid";

// ANCHOR: case
/// One failure: how to make it happen, and what a program sees.
pub struct Case {
    pub name: &'static str,
    /// What happens, in a line.
    pub what: &'static str,
    /// The call that fails.
    pub syscall: &'static str,
    /// The `--misbehave` mode of the server that shows it, if one does.
    pub mode: Option<&'static str>,
    /// `io::ErrorKind` as `{:?}` prints it, and the errno (name and number), as this
    /// machine gives them; the run is compared with these.
    pub kind: &'static str,
    pub errno: &'static str,
    /// The exception Python raises for the same failure (short, for the table); for
    /// a timeout, with `settimeout`, Python's way (poll, then TimeoutError), not the
    /// same system call (see `python_line`).
    pub python: &'static str,
    /// What Python prints.
    pub python_line: &'static str,
    pub fix: &'static str,
    pub run: fn() -> io::Result<Outcome>,
}

/// What one run of a case gave.
pub struct Outcome {
    pub kind: String,
    pub errno: String,
    /// What happened, in a line (counts, the call that followed).
    pub detail: String,
}
// ANCHOR_END: case

impl Outcome {
    /// The kind and errno of `err`, as the table shows them.
    fn from_error(err: &io::Error, detail: String) -> Outcome {
        Outcome {
            kind: format!("{:?}", err.kind()),
            errno: errno_of(err),
            detail: format!("{detail}: {err}"),
        }
    }

    /// The call succeeded where the case expected it to fail.
    fn no_error(detail: String) -> Outcome {
        Outcome {
            kind: "-".into(),
            errno: "-".into(),
            detail,
        }
    }
}

/// `ECONNRESET 104`; `-` for an error that no system call returned (a timeout that
/// Rust's std or this program measured itself).
pub fn errno_of(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => format!("{:?} {code}", nix::errno::Errno::from_raw(code)),
        None => "-".into(),
    }
}

pub static CASES: &[Case] = &[
    // ANCHOR: cases
    Case {
        name: "refused",
        what: "connect to a port where nothing listens",
        syscall: "connect",
        mode: None,
        kind: "ConnectionRefused",
        errno: "ECONNREFUSED 111",
        python: "ConnectionRefusedError",
        python_line: "ConnectionRefusedError: [Errno 111] Connection refused",
        fix: "start the server, or check --host/--port; a client that starts with its \
              server retries with a pause and a limit",
        run: refused,
    },
    Case {
        name: "connect-timeout",
        what: "connect to a server whose accept queue is full (--misbehave never-accept)",
        syscall: "connect",
        mode: Some("never-accept"),
        kind: "TimedOut",
        errno: "-",
        python: "TimeoutError",
        python_line: "TimeoutError: timed out",
        fix: "connect_timeout (settimeout in Python): without it, Linux resends the SYN \
              for about 2 minutes (tcp_syn_retries) before ETIMEDOUT",
        run: connect_timeout,
    },
    Case {
        name: "nonblocking-connect",
        what: "a non-blocking connect: EINPROGRESS, poll for writable, then SO_ERROR",
        syscall: "connect, poll, getsockopt",
        mode: None,
        kind: "InProgress",
        errno: "EINPROGRESS 115, then SO_ERROR ECONNREFUSED 111",
        python: "BlockingIOError",
        python_line: "connect_ex() returns 115; getsockopt(SOL_SOCKET, SO_ERROR) then 111",
        fix: "EINPROGRESS is not a failure: wait until writable, then SO_ERROR says how \
              the connect ended (0 = connected)",
        run: nonblocking_connect,
    },
    Case {
        name: "read-timeout",
        what: "read from a peer that never answers (--misbehave silent)",
        syscall: "read",
        mode: Some("silent"),
        kind: "WouldBlock",
        errno: "EAGAIN 11",
        python: "TimeoutError (settimeout)",
        python_line: "TimeoutError: timed out (with settimeout; SO_RCVTIMEO set with \
                      setsockopt, as here, gives BlockingIOError: [Errno 11])",
        fix: "set_read_timeout; the timeout is EAGAIN (WouldBlock), not TimedOut: check \
              both kinds; the connection is still usable",
        run: read_timeout,
    },
    Case {
        name: "reset",
        what: "read from a peer that closed with SO_LINGER 0 (--misbehave reset)",
        syscall: "read",
        mode: Some("reset"),
        kind: "ConnectionReset",
        errno: "ECONNRESET 104",
        python: "ConnectionResetError",
        python_line: "ConnectionResetError: [Errno 104] Connection reset by peer",
        fix: "the connection is gone and unsent data with it: close it; reconnect only \
              if the request can safely be repeated",
        run: reset,
    },
    Case {
        name: "eof",
        what: "read from a peer that closed normally (--misbehave close)",
        syscall: "read",
        mode: Some("close"),
        kind: "- (Ok(0))",
        errno: "-",
        python: "recv() returns b''",
        python_line: "b''",
        fix: "not an error: 0 bytes is end of file, the peer sent everything; stop reading",
        run: eof,
    },
    Case {
        name: "broken-pipe",
        what: "write twice to a peer that has closed (--misbehave close)",
        syscall: "write",
        mode: Some("close"),
        kind: "BrokenPipe",
        errno: "EPIPE 32",
        python: "BrokenPipeError",
        python_line: "BrokenPipeError: [Errno 32] Broken pipe",
        fix: "the peer is gone: close. Rust's std sends with MSG_NOSIGNAL and Python \
              ignores SIGPIPE, so write returns EPIPE; a C program dies of SIGPIPE \
              unless it does one of the two",
        run: broken_pipe,
    },
    Case {
        name: "write-blocks",
        what: "write to a peer that never reads (--misbehave no-read)",
        syscall: "write",
        mode: Some("no-read"),
        kind: "WouldBlock",
        errno: "EAGAIN 11",
        python: "TimeoutError (settimeout)",
        python_line: "TimeoutError: timed out (with settimeout; SO_SNDTIMEO set with \
                      setsockopt gives BlockingIOError; without a timeout, sendall() \
                      waits for ever)",
        fix: "set_write_timeout, or a non-blocking socket with an output buffer \
              (lesson 05): a peer that stops reading must not stop you",
        run: write_blocks,
    },
    Case {
        name: "address-in-use",
        what: "bind a port another socket listens on",
        syscall: "bind",
        mode: None,
        kind: "AddrInUse",
        errno: "EADDRINUSE 98",
        python: "OSError",
        python_line: "OSError: [Errno 98] Address already in use",
        fix: "stop the other program or choose another port (--port 0: any free one); \
              SO_REUSEADDR only helps against TIME_WAIT (lesson 02)",
        run: address_in_use,
    },
    Case {
        name: "address-not-available",
        what: "bind 203.0.113.1, an address this machine does not have",
        syscall: "bind",
        mode: None,
        kind: "AddrNotAvailable",
        errno: "EADDRNOTAVAIL 99",
        python: "OSError",
        python_line: "OSError: [Errno 99] Cannot assign requested address",
        fix: "bind an address of this machine (ip addr), 127.0.0.1, or 0.0.0.0 for all; \
              bind sends nothing",
        run: address_not_available,
    },
    Case {
        name: "unknown-host",
        what: "look up a name no resolver knows (under .invalid)",
        syscall: "getaddrinfo",
        mode: None,
        kind: "Uncategorized",
        errno: "EAI_NONAME -2 (not an errno)",
        python: "socket.gaierror (bytes name)",
        python_line: "socket.gaierror: [Errno -2] Name or service not known (for this \
                      name as bytes; as a str, the idna codec refuses its 83-byte label \
                      first: UnicodeError)",
        fix: "check the name; std keeps getaddrinfo's code only in the message, so match \
              the lookup step, not the ErrorKind; EAI_AGAIN (-3) is worth a retry",
        run: unknown_host,
    },
    Case {
        name: "deadlock",
        what: "both wait: the client for a greeting, the server for the client (--misbehave wait-first)",
        syscall: "read",
        mode: Some("wait-first"),
        kind: "WouldBlock",
        errno: "EAGAIN 11",
        python: "TimeoutError (settimeout)",
        python_line: "TimeoutError: timed out (with settimeout; without a timeout: both \
                      wait for ever)",
        fix: "the protocol must say who speaks first; a read timeout turns the silent \
              hang into an error you can report",
        run: deadlock,
    },
    Case {
        name: "deadline",
        what: "a reply that trickles in (--misbehave slow): each read is quick, the whole is not",
        syscall: "read",
        mode: Some("slow"),
        kind: "TimedOut",
        errno: "-",
        python: "TimeoutError",
        python_line: "TimeoutError: timed out (settimeout(remaining) before each recv)",
        fix: "a deadline for the whole exchange: before each read, set the timeout to \
              the time left; a per-read timeout never fires while bytes keep coming",
        run: deadline,
    },
    // ANCHOR_END: cases
];

pub fn find(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|case| case.name == name)
}

// The peers.

/// A loopback port bound but not listening: a connect to it is refused (RST), and
/// holding the socket keeps anyone else from taking the port meanwhile.
fn closed_port() -> io::Result<(Socket, SocketAddr)> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    let addr = local_addr(&socket)?;
    Ok((socket, addr))
}

fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))
}

// ANCHOR: peer
/// A listener on a free loopback port whose first connection is served, on a thread
/// of its own, exactly as `17_failures_server --misbehave MODE` serves it.
fn peer(mode: Mode) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    if mode == Mode::NoRead {
        socket2::SockRef::from(&listener).set_recv_buffer_size(4096)?;
    }
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let _ = misbehave::serve(mode, &stream, PEER_HOLD, &|| false, &|_| {});
        }
    });
    Ok(addr)
}
// ANCHOR_END: peer

/// A connection to `addr` with read and write timeouts of [`WAIT`].
fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, WAIT)?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    Ok(stream)
}

// The cases, each a few calls.

// ANCHOR: refused
fn refused() -> io::Result<Outcome> {
    let (_bound, addr) = closed_port()?;
    Ok(match TcpStream::connect_timeout(&addr, WAIT) {
        Ok(_) => Outcome::no_error(format!("connect to {addr} succeeded")),
        Err(err) => Outcome::from_error(&err, format!("connect to {addr}")),
    })
}
// ANCHOR_END: refused

// ANCHOR: connect_timeout
fn connect_timeout() -> io::Result<Outcome> {
    // never-accept, in-process: listen(1) and no accept. Two connects complete into
    // the queue (Linux takes backlog + 1); the third one's SYN is dropped.
    let listener = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    listener.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    listener.listen(1)?;
    let addr = local_addr(&listener)?;
    let queued = [connect(addr)?, connect(addr)?];
    let started = Instant::now();
    let outcome = match TcpStream::connect_timeout(&addr, WAIT) {
        Ok(_) => Outcome::no_error(format!(
            "a third connect to {addr} succeeded (the queue was not full)"
        )),
        Err(err) => Outcome::from_error(
            &err,
            format!(
                "{} queued, the third connect gave up after {:.1} s",
                queued.len(),
                started.elapsed().as_secs_f64()
            ),
        ),
    };
    Ok(outcome)
}
// ANCHOR_END: connect_timeout

// ANCHOR: nonblocking_connect
fn nonblocking_connect() -> io::Result<Outcome> {
    let (_bound, addr) = closed_port()?;
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    // connect(2) on a non-blocking socket returns at once: EINPROGRESS, the SYN is
    // on its way. (Python's connect_ex returns this number instead of raising.)
    let started = match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => return Ok(Outcome::no_error("connected at once".into())),
        Err(err) => err,
    };
    if started.raw_os_error() != Some(nix::libc::EINPROGRESS) {
        return Ok(Outcome::from_error(&started, "connect".into()));
    }
    // Writable means the handshake is over, one way or the other ...
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
    let ready = poll(&mut fds, PollTimeout::from(1000u16))?;
    // ... and SO_ERROR says which way: 0, or the errno a blocking connect would have
    // returned. Reading it also clears it.
    let so_error = match socket.take_error()? {
        Some(err) => errno_of(&err),
        None => "0".into(),
    };
    Ok(Outcome {
        kind: format!("{:?}", started.kind()),
        errno: format!("{}, then SO_ERROR {so_error}", errno_of(&started)),
        detail: format!(
            "connect: {started}; poll: {}; SO_ERROR: {so_error}",
            if ready > 0 {
                "writable"
            } else {
                "nothing within 1 s"
            }
        ),
    })
}
// ANCHOR_END: nonblocking_connect

// ANCHOR: read_timeout
fn read_timeout() -> io::Result<Outcome> {
    let mut stream = connect(peer(Mode::Silent)?)?;
    stream.write_all(b"hello")?;
    let mut buffer = [0u8; 64];
    // SO_RCVTIMEO: read(2) waits at most WAIT, then fails with EAGAIN.
    Ok(match stream.read(&mut buffer) {
        Ok(n) => Outcome::no_error(format!("read returned {n} bytes")),
        Err(err) => Outcome::from_error(&err, format!("read, after {:?}", WAIT)),
    })
}
// ANCHOR_END: read_timeout

// ANCHOR: reset
fn reset() -> io::Result<Outcome> {
    // connect_timeout is a non-blocking connect and a poll: the RST can arrive
    // before it returns, and then the connect itself fails with ECONNRESET.
    let mut stream = match connect(peer(Mode::Reset)?) {
        Ok(stream) => stream,
        Err(err) => return Ok(Outcome::from_error(&err, "connect".into())),
    };
    let mut buffer = [0u8; 64];
    Ok(match stream.read(&mut buffer) {
        Ok(n) => Outcome::no_error(format!("read returned {n} bytes")),
        Err(err) => Outcome::from_error(&err, "read".into()),
    })
}
// ANCHOR_END: reset

fn eof() -> io::Result<Outcome> {
    let mut stream = connect(peer(Mode::Close)?)?;
    let mut buffer = [0u8; 64];
    Ok(match stream.read(&mut buffer) {
        Ok(0) => Outcome {
            kind: "- (Ok(0))".into(),
            errno: "-".into(),
            detail: "read returned Ok(0): end of file".into(),
        },
        Ok(n) => Outcome::no_error(format!("read returned {n} bytes")),
        Err(err) => Outcome::from_error(&err, "read".into()),
    })
}

// ANCHOR: broken_pipe
fn broken_pipe() -> io::Result<Outcome> {
    let mut stream = connect(peer(Mode::Close)?)?;
    let mut buffer = [0u8; 64];
    // The peer's FIN: it will send no more. It may still read, for all TCP knows.
    let eof = stream.read(&mut buffer)?;
    // So the first write succeeds: the bytes go out, and the peer's kernel, which
    // has no socket for them any more, answers with RST ...
    let first = stream.write(b"hello");
    // ... which poll(2) reports as POLLHUP/POLLERR (asked for nothing, it reports
    // only those) ...
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::from(1000u16))?;
    // ... and the second write fails with EPIPE. In C this write would also raise
    // SIGPIPE, whose default action ends the process. Rust's std passes MSG_NOSIGNAL
    // to every send(2) on a socket (strace shows it), so no signal is raised at all
    // and the error comes back as a value.
    Ok(match stream.write(b"hello") {
        Ok(n) => Outcome::no_error(format!("the second write sent {n} bytes")),
        Err(err) => Outcome::from_error(
            &err,
            format!(
                "read: {eof} bytes (EOF); first write: {}; second write",
                match first {
                    Ok(n) => format!("{n} bytes"),
                    Err(err) => err.to_string(),
                }
            ),
        ),
    })
}
// ANCHOR_END: broken_pipe

// ANCHOR: write_blocks
fn write_blocks() -> io::Result<Outcome> {
    let mut stream = connect(peer(Mode::NoRead)?)?;
    // A small send buffer too: the two buffers between us fill after a few KiB.
    socket2::SockRef::from(&stream).set_send_buffer_size(4096)?;
    let chunk = [b'x'; 16 * 1024];
    let mut sent = 0usize;
    // The last write that returned less than it was given, and how long it took: with
    // SO_SNDTIMEO, a write that has sent part of its data when the time runs out
    // returns that part (a short write); only one that sent nothing fails.
    let mut short = None;
    // Bounded in data and in time: a peer that reads after all would be noticed.
    let started = Instant::now();
    while sent < 64 * 1024 * 1024 && started.elapsed() < 10 * WAIT {
        let began = Instant::now();
        match stream.write(&chunk) {
            Ok(n) => {
                sent += n;
                if n < chunk.len() {
                    short = Some((n, began.elapsed()));
                }
            }
            Err(err) => {
                let before = match short {
                    Some((n, took)) => format!(
                        " (the last write was short: {n} bytes, after waiting {:.1} s)",
                        took.as_secs_f64()
                    ),
                    None => String::new(),
                };
                return Ok(Outcome::from_error(
                    &err,
                    format!(
                        "{sent} bytes written{before}, then a write that sent nothing \
                         waited {:.1} s",
                        began.elapsed().as_secs_f64()
                    ),
                ));
            }
        }
    }
    Ok(Outcome::no_error(format!(
        "{sent} bytes written in {:.1} s, no write failed",
        started.elapsed().as_secs_f64()
    )))
}
// ANCHOR_END: write_blocks

// ANCHOR: address_in_use
fn address_in_use() -> io::Result<Outcome> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let second = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR does not let two sockets listen on one port (SO_REUSEPORT would).
    second.set_reuse_address(true)?;
    Ok(match second.bind(&addr.into()) {
        Ok(()) => Outcome::no_error(format!("the second bind of {addr} succeeded")),
        Err(err) => Outcome::from_error(&err, format!("bind {addr}")),
    })
}
// ANCHOR_END: address_in_use

fn address_not_available() -> io::Result<Outcome> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    let addr = SocketAddr::new(IpAddr::V4(NOT_OURS), 0);
    // bind(2) only checks the address against this machine's own: no packet is sent.
    Ok(match socket.bind(&addr.into()) {
        Ok(()) => Outcome::no_error(format!("bind {addr} succeeded: this machine has it")),
        Err(err) => Outcome::from_error(&err, format!("bind {addr}")),
    })
}

// ANCHOR: unknown_host
fn unknown_host() -> io::Result<Outcome> {
    // What a Rust program calls: getaddrinfo(3) inside. Its error has no errno and a
    // kind std does not name publicly (Uncategorized): only the message tells.
    let err = match (UNKNOWN_HOST, 80).to_socket_addrs() {
        Ok(mut addrs) => {
            return Ok(Outcome::no_error(format!(
                "the name resolved to {:?}",
                addrs.next()
            )));
        }
        Err(err) => err,
    };
    Ok(Outcome {
        kind: format!("{:?}", err.kind()),
        errno: gai_code(UNKNOWN_HOST),
        detail: format!("getaddrinfo: {err}"),
    })
}

/// The code getaddrinfo(3) itself returns for `name`, which std keeps to itself:
/// `EAI_NONAME -2`. (The one unsafe call of the workbook's lessons: nix has no
/// getaddrinfo; the pointers are libc's and freed at once.)
fn gai_code(name: &str) -> String {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return "-".into();
    };
    let mut found: *mut nix::libc::addrinfo = std::ptr::null_mut();
    // SAFETY: c_name is a valid C string, hints may be null, and `found` is only
    // freed when getaddrinfo returned 0 (and so set it).
    let code = unsafe {
        let code = nix::libc::getaddrinfo(
            c_name.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            &mut found,
        );
        if code == 0 {
            nix::libc::freeaddrinfo(found);
        }
        code
    };
    let known = [
        (nix::libc::EAI_NONAME, "EAI_NONAME"),
        (nix::libc::EAI_AGAIN, "EAI_AGAIN"),
        (nix::libc::EAI_FAIL, "EAI_FAIL"),
        (nix::libc::EAI_SYSTEM, "EAI_SYSTEM"),
    ];
    match known.iter().find(|(value, _)| *value == code) {
        Some((_, name)) => format!("{name} {code} (not an errno)"),
        None if code == 0 => "0 (found)".into(),
        None => format!("getaddrinfo code {code}"),
    }
}
// ANCHOR_END: unknown_host

// ANCHOR: deadlock
fn deadlock() -> io::Result<Outcome> {
    let mut stream = connect(peer(Mode::WaitFirst)?)?;
    let mut greeting = [0u8; 64];
    // The client waits for the server to speak; the server waits for the client.
    // Without the read timeout, both would wait until one of them is killed.
    let err = match stream.read(&mut greeting) {
        Ok(n) => return Ok(Outcome::no_error(format!("a greeting of {n} bytes came"))),
        Err(err) => err,
    };
    // The way out: speak first. The server answers at once.
    stream.write_all(b"hello")?;
    let mut echo = [0u8; 5];
    let answered = stream.read_exact(&mut echo).is_ok() && &echo == b"hello";
    Ok(Outcome::from_error(
        &err,
        format!(
            "no greeting within {WAIT:?} (then the client spoke first: {})",
            if answered {
                "the echo came back"
            } else {
                "still no answer"
            }
        ),
    ))
}
// ANCHOR_END: deadlock

// ANCHOR: deadline
fn deadline() -> io::Result<Outcome> {
    let mut stream = connect(peer(Mode::Slow)?)?;
    stream.write_all(b"hello")?;
    let deadline = Instant::now() + DEADLINE;
    let mut reply = Vec::new();
    let mut byte = [0u8; 16];
    while reply.len() < 5 {
        // The time left, before every read: that is what makes it a deadline.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&byte[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => return Ok(Outcome::from_error(&err, "read".into())),
        }
    }
    if reply.len() == 5 {
        return Ok(Outcome::no_error("the whole reply came in time".into()));
    }
    let err = io::Error::new(io::ErrorKind::TimedOut, "deadline passed");
    Ok(Outcome::from_error(
        &err,
        format!(
            "{} of 5 bytes within {DEADLINE:?}, one byte a second",
            reply.len()
        ),
    ))
}
// ANCHOR_END: deadline

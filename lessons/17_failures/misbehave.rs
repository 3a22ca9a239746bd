//! The ways lesson 17's server misbehaves, one function per `--misbehave` mode.
//!
//! The server runs them on real connections; the client runs the very same functions
//! on listeners of its own (in-process, on loopback) to reproduce each failure
//! without a server to start. Every mode is bounded in time: a connection is held at
//! most `hold`, then closed, so that nothing a learner runs waits for ever.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// What the well-behaved server (no `--misbehave`) sends first, before echoing.
pub const GREETING: &[u8] = b"ready\n";

// ANCHOR: modes
/// How the server treats a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// No `--misbehave`: greets with `ready\n`, then echoes; the connection is
    /// closed after `hold`, like every other.
    WellBehaved,
    /// listen(2) with a backlog of 1 and never accept(2): two connections complete in
    /// the kernel's queue, the SYNs of the next are dropped (their connect waits).
    NeverAccept,
    /// SO_LINGER 0, then close(2) right after accept: the client gets a RST.
    Reset,
    /// close(2) right after accept: the client reads end of file.
    Close,
    /// Reads (and logs) what comes, never answers.
    Silent,
    /// Echoes, one byte per second.
    Slow,
    /// Never reads: the client's writes fill both buffers, then block.
    NoRead,
    /// Echoes, but never speaks first: a client waiting for a greeting waits for ever.
    WaitFirst,
}
// ANCHOR_END: modes

/// Every `--misbehave` mode, by name (the well-behaved default has none).
pub const MODES: &[(&str, Mode)] = &[
    ("never-accept", Mode::NeverAccept),
    ("reset", Mode::Reset),
    ("close", Mode::Close),
    ("silent", Mode::Silent),
    ("slow", Mode::Slow),
    ("no-read", Mode::NoRead),
    ("wait-first", Mode::WaitFirst),
];

impl Mode {
    pub fn from_name(name: &str) -> Option<Mode> {
        MODES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, mode)| *mode)
    }

    pub fn name(self) -> &'static str {
        MODES
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("well-behaved", |(name, _)| name)
    }

    /// What the mode does, for the log's second line.
    pub fn about(self) -> &'static str {
        match self {
            Mode::WellBehaved => {
                "greets each client with \"ready\\n\", then echoes (--misbehave MODE to misbehave)"
            }
            Mode::NeverAccept => {
                "listen backlog 1, accept() never called: 2 connections complete in the \
                 kernel's queue, later SYNs are dropped and those clients' connect() waits"
            }
            Mode::Reset => "SO_LINGER 0 and close() right after accept(): each client gets a RST",
            Mode::Close => "close() right after accept(): each client reads end of file",
            Mode::Silent => "reads and logs what comes, never answers",
            Mode::Slow => "echoes one byte per second",
            Mode::NoRead => {
                "never reads (receive buffer 4 KiB): a client's writes fill both buffers, then block"
            }
            Mode::WaitFirst => {
                "sends nothing until the client speaks, then echoes: a client that waits \
                 for a greeting waits while the server waits for it"
            }
        }
    }
}

// ANCHOR: serve
/// Serves one accepted connection as `mode` says, for at most `hold`. `note` gets a
/// line for each thing worth logging (the server logs it; the client's in-process
/// peers drop it); `stopping` says whether Ctrl-C came (the server asks its live
/// connections; the in-process peers never stop). Returns when the connection is
/// over.
pub fn serve(
    mode: Mode,
    stream: &TcpStream,
    hold: Duration,
    stopping: &dyn Fn() -> bool,
    note: &dyn Fn(String),
) -> io::Result<()> {
    let deadline = Instant::now() + hold;
    // A client that sends and never reads must not hold an echo's write for ever
    // either: SO_SNDTIMEO bounds each write by `hold` too.
    stream.set_write_timeout(Some(hold))?;
    match mode {
        // never-accept has no connection to serve: the server's loop never accepts.
        Mode::NeverAccept => Ok(()),
        Mode::Reset => {
            // SO_LINGER with a zero timeout: close(2) throws away anything unsent and
            // sends RST instead of FIN. The client's next read or write fails with
            // ECONNRESET.
            socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO))?;
            note("reset: SO_LINGER 0, close(): RST sent".into());
            Ok(())
        }
        Mode::Close => {
            note("close: close() at once: FIN sent".into());
            Ok(())
        }
        Mode::Silent => {
            let mut buffer = [0u8; 4096];
            while let Some(n) = read_before(stream, &mut buffer, deadline)? {
                note(format!("silent: read {n} bytes, answering nothing"));
            }
            Ok(())
        }
        Mode::Slow => slow_echo(stream, deadline, Duration::from_secs(1), stopping, note),
        Mode::NoRead => {
            note("no-read: not reading".into());
            wait_for_end(stream, deadline)
        }
        Mode::WaitFirst => {
            note("wait-first: waiting for the client to speak first".into());
            echo(stream, deadline, note)
        }
        Mode::WellBehaved => {
            (&*stream).write_all(GREETING)?;
            echo(stream, deadline, note)
        }
    }
}
// ANCHOR_END: serve

/// Reads once, waiting at most until `deadline`; `None` at end of file or when the
/// deadline passed (SO_RCVTIMEO: the read fails with EAGAIN).
fn read_before(
    stream: &TcpStream,
    buffer: &mut [u8],
    deadline: Instant,
) -> io::Result<Option<usize>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        match (&*stream).read(buffer) {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(Some(n)),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
}

// ANCHOR: slow
/// Echoes what comes, one byte per `pace`, until end of file or `deadline`.
///
/// One byte per `pace` whatever arrives: the pause is a deadline for the next
/// byte, which no data ends early. It reads only when everything read is echoed, so
/// at most one buffer waits here; what the client sends meanwhile waits in the
/// kernel, and when that is full TCP's flow control blocks the client's writes. End
/// of file ends the input, not the reply: a client that half-closes (shutdown
/// SHUT_WR) still gets its whole echo. Ctrl-C (`stopping`) ends it at once.
fn slow_echo(
    stream: &TcpStream,
    deadline: Instant,
    pace: Duration,
    stopping: &dyn Fn() -> bool,
    note: &dyn Fn(String),
) -> io::Result<()> {
    let mut buffer = [0u8; 4096];
    // Once the peer's FIN is seen, POLLRDHUP stays set: stop asking for it.
    let mut peer_finished = false;
    // When the next byte may go: one `pace` after the last one, across reads too.
    let mut next = Instant::now();
    while let Some(n) = read_before(stream, &mut buffer, deadline)? {
        note(format!("echoing {n} bytes"));
        for byte in &buffer[..n] {
            if pause(stream, next.min(deadline), &mut peer_finished, stopping)?
                || Instant::now() >= deadline
            {
                return Ok(());
            }
            (&*stream).write_all(&[*byte])?;
            next = Instant::now() + pace;
        }
    }
    Ok(())
}

/// Waits until `until` without reading; true if the server is stopping. The wait is
/// poll(2), not a sleep, so that Ctrl-C ends it: POLLRDHUP comes with our own
/// shutdown(SHUT_RD) (or the peer's FIN: then keep echoing), POLLHUP with the
/// SHUT_RDWR that cuts off whoever is left after the grace period.
fn pause(
    stream: &TcpStream,
    until: Instant,
    peer_finished: &mut bool,
    stopping: &dyn Fn() -> bool,
) -> io::Result<bool> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(stopping());
        }
        let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let events = if *peer_finished {
            // Asked for nothing, poll reports only POLLHUP and POLLERR.
            PollFlags::empty()
        } else {
            PollFlags::from_bits_retain(nix::libc::POLLRDHUP)
        };
        let mut fds = [PollFd::new(stream.as_fd(), events)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) if stopping() => return Ok(true),
            Ok(_) => {
                let seen = fds[0].revents().unwrap_or(PollFlags::empty());
                if seen.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    // A reset: the next write says so.
                    return Ok(false);
                }
                *peer_finished = true;
            }
            Err(err) => return Err(err.into()),
        }
    }
}
// ANCHOR_END: slow

/// Echoes what comes until end of file or `deadline`.
fn echo(stream: &TcpStream, deadline: Instant, note: &dyn Fn(String)) -> io::Result<()> {
    let mut buffer = [0u8; 4096];
    while let Some(n) = read_before(stream, &mut buffer, deadline)? {
        note(format!("echoing {n} bytes"));
        (&*stream).write_all(&buffer[..n])?;
    }
    Ok(())
}

/// Waits, without reading, until the peer closes or resets, our side is shut down
/// (Ctrl-C), or `deadline`: poll(2) for POLLRDHUP only, so the data that arrives
/// (POLLIN) does not wake it.
fn wait_for_end(stream: &TcpStream, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        // POLLRDHUP (Linux): the peer's FIN, or our own shutdown(SHUT_RD). nix has no
        // name for it, so it is built from libc's value.
        let rdhup = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
        let mut fds = [PollFd::new(stream.as_fd(), rdhup)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) => {}
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

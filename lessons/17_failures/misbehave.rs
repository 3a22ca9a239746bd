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
/// peers drop it). Returns when the connection is over.
pub fn serve(
    mode: Mode,
    stream: &TcpStream,
    hold: Duration,
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
        Mode::Slow => echo(stream, deadline, Some(Duration::from_secs(1)), note),
        Mode::NoRead => {
            note("no-read: not reading".into());
            wait_for_end(stream, deadline)
        }
        Mode::WaitFirst => {
            note("wait-first: waiting for the client to speak first".into());
            echo(stream, deadline, None, note)
        }
        Mode::WellBehaved => {
            (&*stream).write_all(GREETING)?;
            echo(stream, deadline, None, note)
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
/// Echoes what comes until end of file or `deadline`; with `pace`, one byte per
/// `pace`. The pause is a read with a timeout, not a sleep: shutdown(2) on Ctrl-C
/// ends that read at once, where a sleeping thread would hold the server up.
fn echo(
    stream: &TcpStream,
    deadline: Instant,
    pace: Option<Duration>,
    note: &dyn Fn(String),
) -> io::Result<()> {
    let mut buffer = [0u8; 4096];
    while let Some(n) = read_before(stream, &mut buffer, deadline)? {
        note(format!("echoing {n} bytes"));
        let Some(pace) = pace else {
            (&*stream).write_all(&buffer[..n])?;
            continue;
        };
        let mut pending: Vec<u8> = buffer[..n].to_vec();
        while !pending.is_empty() {
            (&*stream).write_all(&pending[..1])?;
            pending.remove(0);
            let pause = deadline.min(Instant::now() + pace);
            match read_before(stream, &mut buffer, pause)? {
                Some(more) => pending.extend_from_slice(&buffer[..more]),
                // End of file (or Ctrl-C) stops; the pause simply running out goes on.
                None if Instant::now() < pause => return Ok(()),
                None if Instant::now() >= deadline => return Ok(()),
                None => {}
            }
        }
    }
    Ok(())
}
// ANCHOR_END: slow

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

//! Lesson 17's server: well-behaved by default (`ready\n`, then echo), or one way of
//! misbehaving per `--misbehave MODE`. A check of a misbehaving server checks that it
//! misbehaves as the mode promises (a reset is a reset, silence is silence), so the
//! checks come per mode: `checks(17)` for the default, [`for_mode`] for the others
//! (`cargo run -- check 17 --misbehave reset`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{Check, Target, connect, expect_reply, quoted, send};

/// The well-behaved server's first bytes.
const GREETING: &[u8] = b"ready\n";

/// The longest a check waits to be sure that nothing comes (silence is the promise).
fn quiet_wait(target: &Target) -> Duration {
    target.timeout.min(Duration::from_secs(2))
}

pub(crate) static WELL_BEHAVED: &[Check] = &[
    Check {
        name: "greeting",
        about: "a new connection is greeted with `ready\\n` before the client says anything",
        run: greeting,
    },
    Check {
        name: "echo-after-greeting",
        about: "after the greeting, a message and all 256 byte values come back unchanged",
        run: echo_after_greeting,
    },
];

/// The modes, by the server's `--misbehave` name, with their checks.
pub(crate) static MODES: &[(&str, &[Check])] = &[
    (
        "never-accept",
        &[Check {
            name: "never-accept",
            about: "within 3 connects one times out (the accept queue is full), and nothing is ever sent",
            run: never_accept,
        }],
    ),
    (
        "reset",
        &[Check {
            name: "reset",
            about: "a read on a new connection fails with ECONNRESET",
            run: reset,
        }],
    ),
    (
        "close",
        &[Check {
            name: "close",
            about: "a read on a new connection returns end of file (0 bytes), no reset",
            run: close,
        }],
    ),
    (
        "silent",
        &[Check {
            name: "silent",
            about: "a message gets no answer, and the connection stays open",
            run: silent,
        }],
    ),
    (
        "slow",
        &[Check {
            name: "slow",
            about: "a message comes back unchanged, in pieces (one byte a second)",
            run: slow,
        }],
    ),
    (
        "no-read",
        &[Check {
            name: "no-read",
            about: "writes without reading block (time out) before 16 MiB",
            run: no_read,
        }],
    ),
    (
        "wait-first",
        &[Check {
            name: "wait-first",
            about: "no greeting comes; once the client speaks, its message is echoed",
            run: wait_first,
        }],
    ),
];

/// The checks of a server started with `--misbehave mode`.
pub fn for_mode(mode: &str) -> Option<&'static [Check]> {
    MODES
        .iter()
        .find(|(name, _)| *name == mode)
        .map(|(_, c)| *c)
}

/// Reads once, waiting at most `wait`: what came, `Ok(None)` if nothing did.
fn read_once(stream: &mut TcpStream, wait: Duration) -> io::Result<Option<Vec<u8>>> {
    stream.set_read_timeout(Some(wait))?;
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(n) => return Ok(Some(buffer[..n].to_vec())),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(err) => return Err(err),
        }
    }
}

/// Nothing comes within the quiet wait, and the connection is neither closed nor reset.
fn expect_nothing(stream: &mut TcpStream, target: &Target, when: &str) -> Result<(), String> {
    match read_once(stream, quiet_wait(target)) {
        Ok(None) => Ok(()),
        Ok(Some(got)) if got.is_empty() => Err(format!("{when}: the server closed the connection")),
        Ok(Some(got)) => Err(format!("{when}: expected nothing, got {}", quoted(&got))),
        Err(err) => Err(format!("{when}: expected nothing, the read failed: {err}")),
    }
}

fn greeting(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    expect_reply(&mut stream, "the greeting", b"", GREETING)
}

fn echo_after_greeting(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    expect_reply(&mut stream, "the greeting", b"", GREETING)?;
    send(&mut stream, b"hello\n")?;
    expect_reply(&mut stream, "the echo", b"hello\n", b"hello\n")?;
    let all: Vec<u8> = (0..=255).collect();
    send(&mut stream, &all)?;
    expect_reply(&mut stream, "the echo of all byte values", &all, &all)
}

fn never_accept(target: &Target) -> Result<(), String> {
    let wait = quiet_wait(target);
    let mut connected = Vec::new();
    for attempt in 1..=3 {
        match TcpStream::connect_timeout(&target.addr, wait) {
            Ok(stream) => connected.push(stream),
            Err(err) if err.kind() == io::ErrorKind::TimedOut => {
                // The queue is full. Those that got in must hear nothing.
                for stream in &mut connected {
                    expect_nothing(stream, target, "a queued connection")?;
                }
                return Ok(());
            }
            Err(err) => return Err(format!("connect {attempt} failed: {err}")),
        }
    }
    Err(format!(
        "3 connects all succeeded: the server accepts (or its backlog is above 1); \
         connections: {}",
        connected.len()
    ))
}

fn reset(target: &Target) -> Result<(), String> {
    // The RST can beat the end of connect_timeout (a non-blocking connect and
    // poll): SO_ERROR then says ECONNRESET, and that is the promise kept too.
    let mut stream = match TcpStream::connect_timeout(&target.addr, target.timeout) {
        Ok(stream) => stream,
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
        Err(err) => return Err(format!("cannot connect to {}: {err}", target.addr)),
    };
    match read_once(&mut stream, target.timeout) {
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => Ok(()),
        Err(err) => Err(format!("expected ECONNRESET, the read failed with: {err}")),
        Ok(None) => Err("expected ECONNRESET, nothing came before the timeout".into()),
        Ok(Some(got)) if got.is_empty() => {
            Err("expected ECONNRESET, got end of file (a close without SO_LINGER 0)".into())
        }
        Ok(Some(got)) => Err(format!("expected ECONNRESET, got {}", quoted(&got))),
    }
}

fn close(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    match read_once(&mut stream, target.timeout) {
        Ok(Some(got)) if got.is_empty() => Ok(()),
        Ok(Some(got)) => Err(format!("expected end of file, got {}", quoted(&got))),
        Ok(None) => Err("expected end of file, nothing came before the timeout".into()),
        Err(err) => Err(format!("expected end of file, the read failed: {err}")),
    }
}

fn silent(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    send(&mut stream, b"hello\n")?;
    expect_nothing(&mut stream, target, "after \"hello\\n\"")
}

fn slow(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    send(&mut stream, b"hello")?;
    let mut got = Vec::new();
    let mut pieces = 0;
    while got.len() < 5 {
        match read_once(&mut stream, target.timeout) {
            Ok(Some(piece)) if !piece.is_empty() => {
                got.extend_from_slice(&piece);
                pieces += 1;
            }
            Ok(Some(_)) => return Err(format!("the server closed after {}", quoted(&got))),
            Ok(None) => return Err(format!("nothing more came after {}", quoted(&got))),
            Err(err) => return Err(format!("read failed after {}: {err}", quoted(&got))),
        }
    }
    if got != b"hello" {
        return Err(format!("sent \"hello\", got {}", quoted(&got)));
    }
    if pieces < 2 {
        return Err("\"hello\" came back in one piece: not one byte at a time".into());
    }
    Ok(())
}

fn no_read(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    stream
        .set_write_timeout(Some(quiet_wait(target)))
        .map_err(|err| format!("cannot set the send timeout: {err}"))?;
    let chunk = [b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < 16 * 1024 * 1024 {
        match stream.write(&chunk) {
            // A short write on a blocking socket: the send timeout ran out with part of
            // the chunk sent (the kernel can still squeeze a little into a receive
            // buffer nobody reads): the write blocked. So the check needs the
            // connection held a little longer than the send timeout (2 s): --hold 3.
            Ok(n) if n < chunk.len() => return Ok(()),
            Ok(n) => sent += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) => return Err(format!("after {sent} bytes the write failed: {err}")),
        }
    }
    Err(format!(
        "{sent} bytes were written without blocking: the server reads"
    ))
}

fn wait_first(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    expect_nothing(&mut stream, target, "before the client spoke")?;
    send(&mut stream, b"hello\n")?;
    expect_reply(&mut stream, "the echo", b"hello\n", b"hello\n")
}

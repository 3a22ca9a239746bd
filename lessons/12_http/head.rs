//! The head of an HTTP/1.1 message, the same on both sides of a connection: a start
//! line, header lines, and an empty line. The server reads a request's head with it,
//! the client a response's head.
//!
//! TCP delivers bytes, not messages (lesson 09): a head may come in one read or in
//! a hundred, and one read may bring two requests (pipelining) or a request and the
//! start of its body. So the reader keeps what it read in a buffer, looks there for
//! the empty line, and leaves every byte after it in the buffer for whoever reads next.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

// ANCHOR: limit
/// The largest head accepted, its empty line included. A browser's request is about
/// 500 bytes to 2 KiB; a larger head gets 431 and the connection is closed.
pub const MAX_HEAD: usize = 8192;
// ANCHOR_END: limit

/// Why no head came.
#[derive(Debug)]
pub enum NoHead {
    /// The peer closed before sending a byte of a new message: the normal end of
    /// a keep-alive connection.
    Closed,
    /// Nothing came within the idle time.
    Idle,
    /// The peer closed in the middle of a head.
    Cut,
    /// The head had begun, but its empty line did not come in time.
    TooSlow,
    /// [`MAX_HEAD`] bytes came and no empty line among them.
    TooLarge,
    /// A read failed (the peer reset the connection...).
    Failed(io::Error),
}

// ANCHOR: end_of_head
/// Where the head in `bytes` ends: just after its empty line, or `None` if the empty
/// line has not come yet. Lines end with CRLF (`\r\n`); a bare LF is accepted too, as
/// RFC 9112 allows, so that `nc` without `-C` works. `from` is how far an earlier call
/// looked: the search goes on from there (less the two bytes a `\n\r\n` may straddle),
/// so a head that arrives one byte per read is not searched from the start each time.
pub fn end_of_head(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from.saturating_sub(2);
    while at < bytes.len() {
        if bytes[at] == b'\n' {
            match &bytes[at + 1..] {
                [b'\n', ..] => return Some(at + 2),
                [b'\r', b'\n', ..] => return Some(at + 3),
                _ => {}
            }
        }
        at += 1;
    }
    None
}
// ANCHOR_END: end_of_head

// ANCHOR: read_head
/// Reads from `stream` into `buffer` until `buffer` starts with a whole head; returns
/// the head's length. Bytes after the head stay in `buffer`: the next request of a
/// pipelining client, or a body.
///
/// Two clocks: the wait for the first byte ends after `timeout` ([`NoHead::Idle`]);
/// once a head has begun, all of it must come within `timeout` ([`NoHead::TooSlow`]),
/// so a client sending one byte every few seconds cannot hold the connection for ever.
pub fn read_head(
    stream: &TcpStream,
    buffer: &mut Vec<u8>,
    timeout: Duration,
) -> Result<usize, NoHead> {
    let idle_until = Instant::now() + timeout;
    let mut head_until: Option<Instant> = None;
    let mut searched = 0;
    let mut chunk = [0u8; 4096];
    loop {
        if head_until.is_none() {
            // Empty lines before a request line are ignored (RFC 9112, 2.2): some
            // clients send an extra CRLF after a body.
            let blank = buffer
                .iter()
                .take_while(|&&byte| byte == b'\r' || byte == b'\n')
                .count();
            buffer.drain(..blank);
            if !buffer.is_empty() {
                head_until = Some(Instant::now() + timeout);
            }
        }
        if let Some(end) = end_of_head(buffer, searched) {
            return if end > MAX_HEAD {
                Err(NoHead::TooLarge)
            } else {
                Ok(end)
            };
        }
        if buffer.len() >= MAX_HEAD {
            return Err(NoHead::TooLarge);
        }
        searched = buffer.len();
        let deadline = head_until.unwrap_or(idle_until);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(match head_until {
                Some(_) => NoHead::TooSlow,
                None => NoHead::Idle,
            });
        }
        // SO_RCVTIMEO: the read below returns WouldBlock if nothing comes in `left`.
        stream
            .set_read_timeout(Some(left))
            .map_err(NoHead::Failed)?;
        match (&*stream).read(&mut chunk) {
            Ok(0) if buffer.is_empty() => return Err(NoHead::Closed),
            Ok(0) => return Err(NoHead::Cut),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            // The deadline is checked at the top of the loop.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(err) => return Err(NoHead::Failed(err)),
        }
    }
}
// ANCHOR_END: read_head

/// The lines of a head (its empty line excluded), each without its `\r\n` or `\n`.
pub fn lines(head: &[u8]) -> Vec<&[u8]> {
    head.split(|&byte| byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .collect()
}

// ANCHOR: field
/// One header line, `Name: value`, as `(name, value)`: the name is a token (letters,
/// digits and a few marks, no space before the colon), the value has the spaces and
/// tabs around it removed. `None` for anything else, and for a value holding a CR or
/// a NUL byte: a CR inside a line is how request-smuggling attacks begin.
pub fn field(line: &[u8]) -> Option<(&str, &[u8])> {
    let colon = line.iter().position(|&byte| byte == b':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&byte| is_token(byte)) {
        return None;
    }
    if value.iter().any(|&byte| byte == b'\r' || byte == 0) {
        return None;
    }
    let value = value.trim_ascii();
    Some((std::str::from_utf8(name).ok()?, value))
}

/// The characters of a token (RFC 9110, 5.6.2): method names and header names.
pub fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
// ANCHOR_END: field

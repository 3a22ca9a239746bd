//! The wire protocols of the lessons as checks that any server can be put through,
//! whatever language it is written in.
//!
//! Each lesson's test runs its lesson's checks against the lesson's own server (the
//! protocol tests), and `cargo run -- check NN --port P` runs the very same code
//! against any server a learner or a teacher points it at. One implementation, so
//! what the tests demand and what a student's server is graded on cannot drift.
//!
//! A check returns `Err(why)` where `why` says what was sent, what came back and
//! what was expected, as escaped text. Every wait is bounded by [`Target::timeout`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

mod chat;
mod echo;
mod failures;
mod http;
mod lessons;
pub mod local;
mod names;
mod tls;

/// The server under test.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// The longest any single wait may take (connect, one read, one write).
    pub timeout: Duration,
    /// For a TLS server (lesson 14): whom to trust and which name to ask for.
    pub tls: Option<TlsTarget>,
    /// Lesson 16: the server's AF_UNIX socket file, when it listens on one instead of
    /// `addr` (`check 16 --path PATH`).
    pub unix_path: Option<std::path::PathBuf>,
    /// Lesson 16: the server at `unix_path` takes datagrams, not streams (`--dgram`).
    pub datagram: bool,
}

/// What a TLS check trusts: the CA file (`--ca`) and the name the server's
/// certificate must carry (`--server-name`, default `localhost`).
#[derive(Clone, Debug)]
pub struct TlsTarget {
    pub ca: std::path::PathBuf,
    pub server_name: String,
}

impl Target {
    pub fn new(addr: SocketAddr) -> Target {
        Target {
            addr,
            timeout: Duration::from_secs(10),
            tls: None,
            unix_path: None,
            datagram: false,
        }
    }

    /// A server on an AF_UNIX socket file (lesson 16); `datagram` for SOCK_DGRAM.
    pub fn unix(path: &std::path::Path, datagram: bool) -> Target {
        let mut target = Target::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        target.unix_path = Some(path.to_path_buf());
        target.datagram = datagram;
        target
    }
}

/// One thing a lesson's protocol promises.
#[derive(Clone, Copy)]
pub struct Check {
    /// Short and stable, for `--only` and reports: `echo-binary`.
    pub name: &'static str,
    /// What it sends and expects, in one line.
    pub about: &'static str,
    pub run: fn(&Target) -> Result<(), String>,
}

/// The checks of lesson `lesson` (1 to 19), or `None` for a lesson whose program is
/// not a server with a protocol to check (11, the load runner).
pub fn checks(lesson: u32) -> Option<&'static [Check]> {
    match lesson {
        1 => Some(lessons::TCP_BASICS),
        2 => Some(lessons::SOCKET_OPTIONS),
        3 => Some(lessons::UDP_TIME),
        4 | 5 | 6 | 8 | 18 => Some(echo::CONCURRENT),
        7 => Some(echo::POOLED),
        9 => Some(lessons::FRAMING),
        10 => Some(lessons::SOCKETSERVER),
        12 => Some(http::HTTP),
        13 => Some(chat::CHAT),
        14 => Some(tls::TLS),
        15 => Some(names::NAMES),
        16 => Some(local::STREAM),
        17 => Some(failures::WELL_BEHAVED),
        19 => Some(echo::CONCURRENT),
        _ => None,
    }
}

/// The checks of `lesson` for this target: like [`checks`], except where one lesson's
/// server speaks over more than one transport (16: an AF_UNIX stream or datagram
/// socket at `target.unix_path`, or UDP at `target.addr`).
pub fn checks_for(lesson: u32, target: &Target) -> Option<&'static [Check]> {
    match (lesson, &target.unix_path, target.datagram) {
        (16, Some(_), false) => Some(local::STREAM),
        (16, Some(_), true) => Some(local::DATAGRAM),
        (16, None, _) => Some(local::UDP),
        _ => checks(lesson),
    }
}

/// The checks of lesson `lesson`'s server started in a mode that changes its
/// protocol on purpose (lesson 17's `--misbehave MODE`); `None` for an unknown mode.
pub fn mode_checks(lesson: u32, mode: &str) -> Option<&'static [Check]> {
    match lesson {
        17 => failures::for_mode(mode),
        _ => None,
    }
}

/// The names of those modes (empty for a lesson without them).
pub fn modes(lesson: u32) -> Vec<&'static str> {
    match lesson {
        17 => failures::MODES.iter().map(|(name, _)| *name).collect(),
        _ => Vec::new(),
    }
}

/// Runs `checks` against `target` in order; each result with its check.
pub fn run_all<'a>(checks: &'a [Check], target: &Target) -> Vec<(&'a Check, Result<(), String>)> {
    checks
        .iter()
        .map(|check| (check, (check.run)(target)))
        .collect()
}

// What the checks share: connecting, reading with a bound, and saying what differed.

/// A connection to the target with read and write timeouts.
pub(crate) fn connect(target: &Target) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&target.addr, target.timeout).map_err(|err| {
        format!(
            "cannot connect to {}: {err} (is the server running there?)",
            target.addr
        )
    })?;
    let timeouts = stream
        .set_read_timeout(Some(target.timeout))
        .and_then(|()| stream.set_write_timeout(Some(target.timeout)));
    timeouts.map_err(|err| format!("cannot set timeouts: {err}"))?;
    Ok(stream)
}

/// Sends all of `data`, saying what was being sent if it fails.
pub(crate) fn send(stream: &mut impl Write, data: &[u8]) -> Result<(), String> {
    stream
        .write_all(data)
        .map_err(|err| format!("sending {}: {err}", quoted(data)))
}

/// Half-closes: shutdown(SHUT_WR) sends our FIN, "no more from me".
pub(crate) fn half_close(stream: &TcpStream) -> Result<(), String> {
    stream
        .shutdown(Shutdown::Write)
        .map_err(|err| format!("shutdown(SHUT_WR): {err}"))
}

/// Reads until `want` bytes came, the peer closed, or the timeout; returns what came.
pub(crate) fn read_up_to(stream: &mut impl Read, want: usize) -> (Vec<u8>, Option<String>) {
    let mut got = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match stream.read(&mut got[filled..]) {
            Ok(0) => {
                got.truncate(filled);
                return (got, Some("the server closed the connection".into()));
            }
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                got.truncate(filled);
                return (got, Some(describe_read_error(&err)));
            }
        }
    }
    (got, None)
}

/// Reads until the server closes (EOF), at most `limit` bytes.
pub(crate) fn read_to_close(stream: &mut impl Read, limit: usize) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(got),
            Ok(n) => {
                got.extend_from_slice(&chunk[..n]);
                if got.len() > limit {
                    return Err(format!(
                        "more than {limit} bytes came back and the server did not close: {}",
                        quoted(&got)
                    ));
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(format!(
                    "{} after {} bytes ({}), while waiting for the server to close",
                    describe_read_error(&err),
                    got.len(),
                    quoted(&got)
                ));
            }
        }
    }
}

fn describe_read_error(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "nothing more came before the timeout".into()
        }
        io::ErrorKind::ConnectionReset => "the server reset the connection".into(),
        _ => format!("read failed: {err}"),
    }
}

/// Bytes as text a reader can compare: quoted, escaped, long ones shortened.
pub fn quoted(bytes: &[u8]) -> String {
    const SHOWN: usize = 60;
    if bytes.len() <= SHOWN {
        format!("\"{}\"", bytes.escape_ascii())
    } else {
        format!(
            "\"{}\"... ({} bytes)",
            bytes[..SHOWN].escape_ascii(),
            bytes.len()
        )
    }
}

/// `Ok` when `got == want`; otherwise says what was sent, the offset of the first
/// difference, and both around it.
pub(crate) fn expect_same(what: &str, sent: &[u8], got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = first.saturating_sub(16);
    let around = |bytes: &[u8]| quoted(&bytes[from.min(bytes.len())..bytes.len().min(first + 32)]);
    Err(format!(
        "{what}: sent {}, got {} bytes, expected {}; first difference at byte {first}: \
         got {} where {} was expected (from byte {from})",
        quoted(sent),
        got.len(),
        want.len(),
        around(got),
        around(want)
    ))
}

/// Reads exactly `want.len()` bytes and compares them with `want`.
pub(crate) fn expect_reply(
    stream: &mut impl Read,
    what: &str,
    sent: &[u8],
    want: &[u8],
) -> Result<(), String> {
    let (got, ended) = read_up_to(stream, want.len());
    if got.len() < want.len() {
        return Err(format!(
            "{what}: sent {}, expected {} back, got {} ({})",
            quoted(sent),
            quoted(want),
            quoted(&got),
            ended.unwrap_or_default()
        ));
    }
    expect_same(what, sent, &got, want)
}

/// Is `text` a time in `ctime` form, like `Sun Nov 22 10:00:00 2026`?
pub fn is_ctime(text: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = text.as_bytes();
    let digit = |i: usize| b[i].is_ascii_digit();
    b.len() == 24
        && DAYS.contains(&&text[0..3])
        && b[3] == b' '
        && MONTHS.contains(&&text[4..7])
        && b[7] == b' '
        && (b[8] == b' ' || digit(8))
        && digit(9)
        && b[10] == b' '
        && digit(11)
        && digit(12)
        && b[13] == b':'
        && digit(14)
        && digit(15)
        && b[16] == b':'
        && digit(17)
        && digit(18)
        && b[19] == b' '
        && (20..24).all(digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_form() {
        assert!(is_ctime("Sun Nov 22 10:00:00 2026"));
        assert!(is_ctime("Mon Jan  5 09:08:07 2026"));
        assert!(is_ctime(&crate::time::ctime_now()));
        assert!(!is_ctime("Sun Nov 22 10:00:00 26"));
        assert!(!is_ctime("Xyz Nov 22 10:00:00 2026"));
        assert!(!is_ctime("Sun Nov 22 10:00:0x 2026"));
    }

    #[test]
    fn difference_is_shown_as_text_with_its_offset() {
        let why = expect_same("echo", b"the quick", b"THE QUICK", b"the quick").unwrap_err();
        assert!(why.contains("first difference at byte 0"), "{why}");
        assert!(why.contains("\"THE QUICK\""), "{why}");
        assert!(!why.contains("[84"), "{why}");
    }

    #[test]
    fn every_lesson_server_has_checks_with_unique_names() {
        for lesson in [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19,
        ] {
            let checks = checks(lesson).unwrap();
            let mut names: Vec<_> = checks.iter().map(|c| c.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), checks.len(), "lesson {lesson}");
        }
        assert!(checks(11).is_none());
    }
}

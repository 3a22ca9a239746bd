//! Printing what the lessons log: the two ends of a connection, and received bytes.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::fd::AsFd;

/// How many bytes of a payload [`bytes`] shows before it shortens the rest.
pub const SHOWN_BYTES: usize = 64;

/// Both ends of a connection, remote first: `127.0.0.1:54012 -> 127.0.0.1:8009`.
pub fn pair(from: SocketAddr, to: SocketAddr) -> String {
    format!("{from} -> {to}")
}

/// Both ends of a connected socket (std or socket2), peer first, as the server sees it:
/// `getpeername(2) -> getsockname(2)`. An end the kernel no longer knows (the peer
/// reset the connection already) is shown as `?`.
pub fn peers<S: AsFd>(socket: &S) -> String {
    let socket = socket2::SockRef::from(socket);
    let show = |addr: std::io::Result<socket2::SockAddr>| match addr.map(|a| a.as_socket()) {
        Ok(Some(addr)) => addr.to_string(),
        _ => "?".to_string(),
    };
    format!(
        "{} -> {}",
        show(socket.peer_addr()),
        show(socket.local_addr())
    )
}

/// Received bytes, quoted and safe to print: valid UTF-8 text stays readable,
/// control characters become `\n`, `\r`, `\t` or `\xNN`, bytes that are not UTF-8
/// become `\xNN`, and anything past [`SHOWN_BYTES`] is cut with a count of what is left.
///
/// `bytes(b"hi\n\xff")` is `"hi\n\xff"` (with the backslashes printed as they are).
pub fn bytes(data: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut shown = 0;
    'chunks: for chunk in data.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if shown >= SHOWN_BYTES {
                break 'chunks;
            }
            shown += ch.len_utf8();
            match ch {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                c if (c as u32) < 0x80 && c.is_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            if shown >= SHOWN_BYTES {
                break 'chunks;
            }
            shown += 1;
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('"');
    if shown < data.len() {
        let _ = write!(out, "... ({} more bytes)", data.len() - shown);
    }
    out
}

/// `1 byte`, `2 bytes`: logs read better with the right plural.
pub fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn text_and_controls() {
        assert_eq!(bytes(b"hello"), r#""hello""#);
        assert_eq!(bytes(b"a\r\n\t\0\x1b"), r#""a\r\n\t\x00\x1b""#);
        assert_eq!(bytes(b"say \"hi\" \\"), r#""say \"hi\" \\""#);
        assert_eq!(bytes(b""), r#""""#);
    }

    #[test]
    fn non_utf8_and_unicode() {
        assert_eq!(bytes(b"\xff\xfeok"), r#""\xff\xfeok""#);
        assert_eq!(bytes("你好".as_bytes()), "\"你好\"");
        // A multi-byte character cut in half is two invalid bytes, not a panic.
        assert_eq!(bytes(&"é".as_bytes()[..1]), r#""\xc3""#);
        assert_eq!(bytes("\u{85}".as_bytes()), r#""\u{85}""#);
    }

    #[test]
    fn long_payloads_are_shortened() {
        let long = vec![b'a'; 1000];
        let shown = bytes(&long);
        assert!(shown.starts_with(&format!("\"{}\"", "a".repeat(SHOWN_BYTES))));
        assert!(shown.ends_with(&format!("... ({} more bytes)", 1000 - SHOWN_BYTES)));
        let exact = vec![b'b'; SHOWN_BYTES];
        assert!(!bytes(&exact).contains("more bytes"));
    }

    #[test]
    fn pairs_and_peers() {
        let a: SocketAddr = "127.0.0.1:54012".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:8009".parse().unwrap();
        assert_eq!(pair(a, b), "127.0.0.1:54012 -> 127.0.0.1:8009");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        assert_eq!(
            peers(&server_side),
            pair(client.local_addr().unwrap(), listener.local_addr().unwrap())
        );
    }

    #[test]
    fn counts() {
        assert_eq!(count(1, "byte"), "1 byte");
        assert_eq!(count(0, "byte"), "0 bytes");
        assert_eq!(count(5, "client"), "5 clients");
    }
}

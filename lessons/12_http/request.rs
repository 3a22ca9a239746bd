//! A request's head, parsed and checked: the request line, the headers, and how long
//! the body is. Anything the server cannot be sure it understood is refused with the
//! status that says why, and the connection is then closed: once a server has
//! misread where one request ends, it cannot know where the next one begins.

use crate::head;
use crate::response::{
    BAD_REQUEST, CONTENT_TOO_LARGE, HEADER_TOO_LARGE, NOT_IMPLEMENTED, Status,
    VERSION_NOT_SUPPORTED,
};

/// At most this many header lines (as Python's http.server).
pub const MAX_HEADERS: usize = 100;
/// The largest body read (and dropped); a larger one gets 413.
pub const MAX_BODY: u64 = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

pub struct Request {
    /// The request line as it came, for the log and the page.
    pub line: String,
    pub method: String,
    /// The request target's path, percent-decoded, without the query: `/a b` for `/a%20b?x=1`.
    pub path: String,
    pub version: Version,
    /// Every header, in order, the values as text (bytes that are not UTF-8 as U+FFFD).
    pub headers: Vec<(String, String)>,
    /// How many bytes of body follow the head (`Content-Length`, or 0).
    pub body_length: u64,
}

/// Why a request is refused: the status, and the reason in words.
#[derive(Debug)]
pub struct Rejection {
    pub status: Status,
    pub why: String,
}

fn reject(status: Status, why: impl Into<String>) -> Rejection {
    Rejection {
        status,
        why: why.into(),
    }
}

impl Request {
    /// The value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// `Expect: 100-continue`: the client waits for `100 Continue` before it sends
    /// the body. An HTTP/1.0 client cannot read a 1xx response, so it is ignored there.
    pub fn expects_continue(&self) -> bool {
        self.version == Version::Http11
            && self
                .header("Expect")
                .is_some_and(|value| value.eq_ignore_ascii_case("100-continue"))
    }

    // ANCHOR: wants_to_close
    /// HTTP/1.1 keeps the connection open unless the client says `Connection: close`;
    /// HTTP/1.0 closes after every response (this server does not do 1.0's
    /// `Connection: keep-alive` extension).
    pub fn wants_to_close(&self) -> bool {
        self.version == Version::Http10
            || self.header("Connection").is_some_and(|value| {
                value
                    .split(',')
                    .any(|option| option.trim().eq_ignore_ascii_case("close"))
            })
    }
    // ANCHOR_END: wants_to_close
}

// ANCHOR: parse
/// Parses a head (as [`head::read_head`] found it) into a request, or says why not.
pub fn parse(head: &[u8]) -> Result<Request, Rejection> {
    let lines = head::lines(head);
    let Some((first, header_lines)) = lines.split_first() else {
        return Err(reject(BAD_REQUEST, "the request is empty"));
    };
    let (method, target, version) = request_line(first)?;
    if header_lines.len() > MAX_HEADERS {
        return Err(reject(
            HEADER_TOO_LARGE,
            format!("more than {MAX_HEADERS} header lines"),
        ));
    }
    let mut headers = Vec::with_capacity(header_lines.len());
    for line in header_lines {
        let Some((name, value)) = head::field(line) else {
            return Err(reject(
                BAD_REQUEST,
                format!(
                    "a header line is not `Name: value`: {}",
                    String::from_utf8_lossy(line)
                ),
            ));
        };
        headers.push((
            name.to_string(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    let mut request = Request {
        line: String::from_utf8_lossy(first).into_owned(),
        path: path_of(&target)?,
        method,
        version,
        headers,
        body_length: 0,
    };
    // HTTP/1.1 names the site in Host (one server, many names); exactly one.
    let hosts = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Host"))
        .count();
    if hosts > 1 || (version == Version::Http11 && hosts == 0) {
        return Err(reject(
            BAD_REQUEST,
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    // Its value is a host and maybe a port (RFC 9112, 3.2), nothing else: a space,
    // `/` or `@` would make it a different URL for whoever rebuilds one from it.
    if let Some(host) = request.header("Host") {
        if !host.bytes().all(is_host_byte) {
            return Err(reject(
                BAD_REQUEST,
                format!("not a host[:port]: Host: {host}"),
            ));
        }
    }
    request.body_length = body_length(&request)?;
    Ok(request)
}
// ANCHOR_END: parse

/// `METHOD SP TARGET SP HTTP/x.y`, one space between each.
fn request_line(line: &[u8]) -> Result<(String, String, Version), Rejection> {
    let malformed = || {
        reject(
            BAD_REQUEST,
            format!(
                "the request line is not `METHOD /path HTTP/1.1`: {}",
                String::from_utf8_lossy(line)
            ),
        )
    };
    let parts: Vec<&[u8]> = line.split(|&byte| byte == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(malformed());
    };
    if method.is_empty() || !method.iter().all(|&byte| head::is_token(byte)) {
        return Err(malformed());
    }
    // Printable ASCII, no spaces: anything else in a URL is percent-encoded.
    if target.is_empty() || !target.iter().all(|&byte| byte.is_ascii_graphic()) {
        return Err(malformed());
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        // HTTP/1.2 would be 1.1 with more: answer it as 1.1. HTTP/2 and 3 do not
        // start this way at all (and HTTP/0.9 had no version).
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            Version::Http11
        }
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(reject(
                VERSION_NOT_SUPPORTED,
                format!(
                    "this server speaks HTTP/1.0 and HTTP/1.1, not {}",
                    String::from_utf8_lossy(version)
                ),
            ));
        }
        _ => return Err(malformed()),
    };
    // The checks above let only ASCII through.
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Ok((text(method), text(target), version))
}

/// A byte of `host[:port]` (RFC 3986's reg-name, IPv4, `[IPv6]`, then `:port`).
fn is_host_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%[]:".contains(&byte)
}

// ANCHOR: path_of
/// The path of a request target, percent-decoded, without the query string.
/// `/a%20b?x=1` is `/a b`. The target is the origin form (`/path`) that clients send
/// to a server, or the absolute form (`http://host/path`) they send to a proxy,
/// which a server must accept too.
fn path_of(target: &str) -> Result<String, Rejection> {
    let bad = |why: &str| reject(BAD_REQUEST, format!("the target {target}: {why}"));
    let target = match target.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => {
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        _ => target,
    };
    if !target.starts_with('/') {
        return Err(bad("a path must start with /"));
    }
    let raw = target.split(['?', '#']).next().unwrap_or(target);
    let mut decoded = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'%' {
            decoded.push(byte);
            continue;
        }
        let value = match (
            bytes.next().and_then(hex_value),
            bytes.next().and_then(hex_value),
        ) {
            (Some(high), Some(low)) => Some(high * 16 + low),
            _ => None,
        };
        match value {
            // A control character has no business in a path, and once decoded it
            // could end a line: `%0d%0a` in a path copied into a header would start
            // a header of the client's choosing.
            Some(value) if value < 0x20 || value == 0x7f => {
                return Err(bad("a control character (%00 to %1f, %7f) in a path"));
            }
            Some(value) => decoded.push(value),
            None => return Err(bad("a % must be followed by two hex digits")),
        }
    }
    String::from_utf8(decoded).map_err(|_| bad("the decoded path is not UTF-8"))
}

/// `b'7'` is 7, `b'c'` and `b'C'` are 12; `None` for a byte that is no hex digit.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}
// ANCHOR_END: path_of

// ANCHOR: body_length
/// How many bytes of body follow the head (RFC 9112, 6.3). A body the server will
/// not read correctly is refused, because its bytes would be read as the next request:
/// a `Transfer-Encoding` (chunked bodies are not supported here), a `Content-Length`
/// that is not a number or that two headers disagree on (one way to smuggle a request
/// past a proxy), or a body larger than [`MAX_BODY`].
fn body_length(request: &Request) -> Result<u64, Rejection> {
    if request.header("Transfer-Encoding").is_some() {
        return Err(reject(
            NOT_IMPLEMENTED,
            "this server does not read Transfer-Encoding (chunked) bodies; send Content-Length",
        ));
    }
    let mut length: Option<u64> = None;
    for (name, value) in &request.headers {
        if !name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        for item in value.split(',') {
            let item = item.trim();
            // Digits only: `+5` and `5 ` parse in some languages and not in others.
            let parsed = item
                .parse::<u64>()
                .ok()
                .filter(|_| item.bytes().all(|byte| byte.is_ascii_digit()));
            match (parsed, length) {
                (None, _) => {
                    return Err(reject(
                        BAD_REQUEST,
                        format!("Content-Length is not a number: {value}"),
                    ));
                }
                (Some(new), Some(old)) if new != old => {
                    return Err(reject(BAD_REQUEST, "two different Content-Lengths"));
                }
                (Some(new), _) => length = Some(new),
            }
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(reject(
            CONTENT_TOO_LARGE,
            format!("a body of {length} bytes; at most {MAX_BODY} are accepted"),
        ));
    }
    Ok(length)
}
// ANCHOR_END: body_length

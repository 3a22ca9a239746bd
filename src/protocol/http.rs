//! Lesson 12: HTTP/1.1 on TCP 10012.
//!
//! `GET /` answers a `text/html` page showing the request line, every header
//! (HTML-escaped) and both ends of the connection; `GET /hello` answers `Hello WORD`
//! (`text/plain`); `/favicon.ico` an image; any other path 404; HEAD the same heads
//! without bodies; any other method 405 with `Allow: GET, HEAD`. Every response has
//! `Date`, `Content-Type` and `Content-Length`. Connections stay open for more
//! requests (answered in order, pipelined or not) unless the request is HTTP/1.0 or
//! says `Connection: close`. A body (`Content-Length`) is skipped. A malformed request
//! gets 400, a missing Host (HTTP/1.1) 400, an HTTP version other than 1.x 505, a head
//! over 8,192 bytes 431; after those the server closes.
//!
//! The checks read responses with their own small parser, independent of the lesson's.

use std::io::Read;
use std::net::TcpStream;
use std::time::{SystemTime, UNIX_EPOCH};

use socket2::SockRef;

use super::{Check, Target, connect, quoted, send};

pub(crate) static HTTP: &[Check] = &[
    Check {
        name: "http-get-root",
        about: "GET / is a text/html page with the request line, the User-Agent and both ends of the connection",
        run: get_root,
    },
    Check {
        name: "http-escapes-headers",
        about: "a header holding <script> shows on the page as &lt;script&gt;, never as markup",
        run: escapes_headers,
    },
    Check {
        name: "http-hello",
        about: "GET /hello is `Hello WORD` as text/plain",
        run: hello,
    },
    Check {
        name: "http-head",
        about: "HEAD /hello has GET's headers and no body (the next response follows at once)",
        run: head,
    },
    Check {
        name: "http-favicon",
        about: "GET /favicon.ico is answered: 200 with an image, or 204",
        run: favicon,
    },
    Check {
        name: "http-not-found",
        about: "an unknown path is 404, and the connection stays open",
        run: not_found,
    },
    Check {
        name: "http-method-not-allowed",
        about: "DELETE / is 405 with `Allow: GET, HEAD`",
        run: method_not_allowed,
    },
    Check {
        name: "http-keep-alive",
        about: "three requests, one after another, on one connection",
        run: keep_alive,
    },
    Check {
        name: "http-pipelined",
        about: "two requests in one write get two responses, in order",
        run: pipelined,
    },
    Check {
        name: "http-single-bytes",
        about: "a request sent one byte per write is answered",
        run: single_bytes,
    },
    Check {
        name: "http-body-skipped",
        about: "a POST with a Content-Length body, then a GET in the same write: 405, then 200",
        run: body_skipped,
    },
    Check {
        name: "http-1.0-closes",
        about: "an HTTP/1.0 request is answered, then the server closes",
        run: http10_closes,
    },
    Check {
        name: "http-connection-close",
        about: "`Connection: close` is answered with `Connection: close`, then the server closes",
        run: connection_close,
    },
    Check {
        name: "http-bad-request",
        about: "a line that is no request line is 400, then the server closes",
        run: bad_request,
    },
    Check {
        name: "http-missing-host",
        about: "an HTTP/1.1 request without Host is 400",
        run: missing_host,
    },
    Check {
        name: "http-bad-version",
        about: "`GET / HTTP/2.0` is 505, then the server closes",
        run: bad_version,
    },
    Check {
        name: "http-head-at-limit",
        about: "a head of exactly 8,192 bytes, its empty line included, is answered",
        run: head_at_limit,
    },
    Check {
        name: "http-head-too-large",
        about: "a head of 16 KiB is 431, then the server closes",
        run: head_too_large,
    },
    Check {
        name: "http-idle-client",
        about: "a connected client that sends nothing does not delay another",
        run: idle_client,
    },
    Check {
        name: "http-after-reset",
        about: "a client that resets mid-request does not stop the server",
        run: after_reset,
    },
];

/// The largest head and body a check accepts in a response.
const MAX_REPLY_HEAD: usize = 64 * 1024;
const MAX_REPLY_BODY: usize = 1024 * 1024;
/// The largest request head the protocol accepts.
const MAX_HEAD: usize = 8192;

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: check\r\nUser-Agent: workbook-check\r\n\r\n").into_bytes()
}

/// One response, as it came.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The head, escaped, for a message.
    fn shown(&self) -> String {
        format!("\"{}\"", self.head.escape_ascii())
    }
}

/// A connection and the bytes read from it that belong to the next response.
struct Conversation {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Conversation {
    fn open(target: &Target) -> Result<Conversation, String> {
        Ok(Conversation {
            stream: connect(target)?,
            pending: Vec::new(),
        })
    }

    fn send(&mut self, data: &[u8]) -> Result<(), String> {
        send(&mut self.stream, data)
    }

    /// Reads more into `pending`; `Ok(false)` at the end of the stream.
    fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            return match self.stream.read(&mut chunk) {
                Ok(0) => Ok(false),
                Ok(n) => {
                    self.pending.extend_from_slice(&chunk[..n]);
                    Ok(true)
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => Err(match err.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                        "nothing more came before the timeout".to_string()
                    }
                    std::io::ErrorKind::ConnectionReset => {
                        "the server reset the connection".to_string()
                    }
                    _ => format!("read failed: {err}"),
                }),
            };
        }
    }

    /// Reads one response to a request `sent` (shown in messages). Its head ends with
    /// `\r\n\r\n`; its body is `Content-Length` bytes (none after HEAD).
    fn reply(&mut self, sent: &[u8], to_head: bool) -> Result<Reply, String> {
        let what = || format!("sent {}", quoted(sent));
        let end = loop {
            if let Some(at) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.pending.len() > MAX_REPLY_HEAD {
                return Err(format!(
                    "{}: no `\\r\\n\\r\\n` in the first {MAX_REPLY_HEAD} bytes of the response: {}",
                    what(),
                    quoted(&self.pending)
                ));
            }
            let more = self.fill().map_err(|why| {
                format!(
                    "{}: expected a response head ending `\\r\\n\\r\\n`, got {} ({why})",
                    what(),
                    quoted(&self.pending)
                )
            })?;
            if !more {
                return Err(format!(
                    "{}: the server closed the connection after {} ({})",
                    what(),
                    quoted(&self.pending),
                    if self.pending.is_empty() {
                        "no response at all"
                    } else {
                        "an incomplete response head"
                    }
                ));
            }
        };
        let head: Vec<u8> = self.pending.drain(..end).collect();
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
            .filter(|rest| rest.as_bytes().get(3) == Some(&b' '))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| {
                format!(
                    "{}: the status line should be `HTTP/1.1 CODE REASON`, got {}",
                    what(),
                    quoted(status_line.as_bytes())
                )
            })?;
        let mut headers = Vec::new();
        for line in lines.take_while(|line| !line.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!(
                    "{}: a header line is not `Name: value`: {}",
                    what(),
                    quoted(line.as_bytes())
                ));
            };
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let mut reply = Reply {
            status,
            headers,
            head,
            body: Vec::new(),
        };
        let length = match reply.header("Content-Length") {
            Some(value) => value.parse::<usize>().map_err(|_| {
                format!(
                    "{}: Content-Length is not a number in {}",
                    what(),
                    reply.shown()
                )
            })?,
            None if reply.status == 204 => 0,
            None => {
                return Err(format!(
                    "{}: no Content-Length in {} (without it the client cannot tell where \
                     the body ends, except by waiting for the server to close)",
                    what(),
                    reply.shown()
                ));
            }
        };
        if to_head {
            return Ok(reply);
        }
        if length > MAX_REPLY_BODY {
            return Err(format!(
                "{}: a body of {length} bytes is more than a check accepts",
                what()
            ));
        }
        while self.pending.len() < length {
            let more = self.fill().map_err(|why| {
                format!(
                    "{}: the body should be {length} bytes (Content-Length), got {} ({why})",
                    what(),
                    self.pending.len()
                )
            })?;
            if !more {
                return Err(format!(
                    "{}: the body should be {length} bytes (Content-Length), the server \
                     closed after {}",
                    what(),
                    self.pending.len()
                ));
            }
        }
        reply.body = self.pending.drain(..length).collect();
        Ok(reply)
    }

    /// The server closes now: nothing more comes, then the end of the stream (a reset
    /// is accepted too).
    fn expect_closed(&mut self, after: &str) -> Result<(), String> {
        loop {
            if !self.pending.is_empty() {
                return Err(format!(
                    "{after}: expected the server to close, got more bytes: {}",
                    quoted(&self.pending)
                ));
            }
            match self.fill() {
                Ok(false) => return Ok(()),
                Ok(true) => continue,
                Err(why) if why.contains("reset") => return Ok(()),
                Err(why) => {
                    return Err(format!(
                        "{after}: expected the server to close the connection: {why}"
                    ));
                }
            }
        }
    }
}

/// What every response must have: a valid `Date`, a `Content-Type`, and the status
/// expected.
fn expect_status(reply: &Reply, sent: &[u8], status: u16) -> Result<(), String> {
    if reply.status != status {
        return Err(format!(
            "sent {}: expected status {status}, got {} ({})",
            quoted(sent),
            reply.status,
            reply.shown()
        ));
    }
    let Some(date) = reply.header("Date") else {
        return Err(format!(
            "sent {}: no Date header in {}",
            quoted(sent),
            reply.shown()
        ));
    };
    check_date(date).map_err(|why| format!("sent {}: Date: {date:?}: {why}", quoted(sent)))?;
    if reply.status != 204 && reply.header("Content-Type").is_none() {
        return Err(format!(
            "sent {}: no Content-Type header in {}",
            quoted(sent),
            reply.shown()
        ));
    }
    Ok(())
}

fn expect_header(reply: &Reply, sent: &[u8], name: &str, starts: &str) -> Result<(), String> {
    match reply.header(name) {
        Some(value) if value.to_ascii_lowercase().starts_with(starts) => Ok(()),
        _ => Err(format!(
            "sent {}: expected a `{name}: {starts}...` header, got {}",
            quoted(sent),
            reply.shown()
        )),
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) that is right now, give or take
/// five minutes, with the right day of the week.
fn check_date(date: &str) -> Result<(), String> {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let form = || "expected the form `Sun, 06 Nov 1994 08:49:37 GMT`".to_string();
    let b = date.as_bytes();
    if b.len() != 29 || &date[3..5] != ", " || !date.ends_with(" GMT") {
        return Err(form());
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let text = &date[range];
        if text.bytes().all(|byte| byte.is_ascii_digit()) {
            text.parse().map_err(|_| form())
        } else {
            Err(form())
        }
    };
    let day = number(5..7)?;
    let month = MONTHS
        .iter()
        .position(|m| *m == &date[8..11])
        .ok_or_else(form)? as i64
        + 1;
    let year = number(12..16)?;
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let weekday = DAYS[days.rem_euclid(7) as usize];
    if &date[..3] != weekday {
        return Err(format!("that day was a {weekday}, not a {}", &date[..3]));
    }
    let then = days * 86_400 + hour * 3600 + minute * 60 + second;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0);
    if (then - now).abs() > 300 {
        return Err(format!("{} seconds from now (UTC? GMT is UTC)", then - now));
    }
    Ok(())
}

fn get_root(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let request = get("/");
    talk.send(&request)?;
    let reply = talk.reply(&request, false)?;
    expect_status(&reply, &request, 200)?;
    expect_header(&reply, &request, "Content-Type", "text/html")?;
    let page = String::from_utf8_lossy(&reply.body);
    let ends = [
        talk.stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        talk.stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    ];
    for needle in ["GET / HTTP/1.1", "workbook-check", &ends[0], &ends[1]] {
        if !page.contains(needle) {
            return Err(format!(
                "sent {}: the page should show {needle:?}; it is {}",
                quoted(&request),
                quoted(&reply.body)
            ));
        }
    }
    Ok(())
}

fn escapes_headers(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let request = b"GET / HTTP/1.1\r\nHost: check\r\nX-Check: <script>alert(\"check\")</script> & more\r\n\r\n";
    talk.send(request)?;
    let reply = talk.reply(request, false)?;
    expect_status(&reply, request, 200)?;
    let page = String::from_utf8_lossy(&reply.body);
    if let Some(at) = page.find("<script") {
        return Err(format!(
            "sent a header holding <script>: it is in the page as markup, a browser would \
             run it: {}",
            quoted(&reply.body[at.saturating_sub(20)..])
        ));
    }
    // Shown, and escaped (`&lt;` or `&#60;`, `&amp;` or `&#38;`: any form will do).
    if !page.contains("script") || !page.contains("alert(") || page.contains(" & more") {
        return Err(format!(
            "sent a header holding <script> and &: the page should show them escaped \
             (&lt;script&gt;, &amp;); it is {}",
            quoted(&reply.body)
        ));
    }
    Ok(())
}

fn hello(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let request = get("/hello");
    talk.send(&request)?;
    let reply = talk.reply(&request, false)?;
    expect_status(&reply, &request, 200)?;
    expect_header(&reply, &request, "Content-Type", "text/plain")?;
    super::expect_same("the body of /hello", &request, &reply.body, b"Hello WORD")
}

fn head(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let request = get("/hello");
    talk.send(&request)?;
    let full = talk.reply(&request, false)?;
    let head_request = b"HEAD /hello HTTP/1.1\r\nHost: check\r\n\r\n";
    talk.send(head_request)?;
    let reply = talk.reply(head_request, true)?;
    expect_status(&reply, head_request, 200)?;
    if reply.header("Content-Length") != full.header("Content-Length")
        || reply.header("Content-Type") != full.header("Content-Type")
    {
        return Err(format!(
            "HEAD should have GET's Content-Length and Content-Type: GET gave {}, HEAD gave {}",
            full.shown(),
            reply.shown()
        ));
    }
    // A body after HEAD would be read as the start of the next response.
    talk.send(&request)?;
    let next = talk.reply(&request, false).map_err(|why| {
        format!("after a HEAD, a GET on the same connection (did HEAD send a body?): {why}")
    })?;
    expect_status(&next, &request, 200)
}

fn favicon(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let request = get("/favicon.ico");
    talk.send(&request)?;
    let reply = talk.reply(&request, false)?;
    if reply.status == 204 {
        return expect_status(&reply, &request, 204);
    }
    expect_status(&reply, &request, 200)?;
    expect_header(&reply, &request, "Content-Type", "image/")
}

fn not_found(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let request = get("/no/such/page");
    talk.send(&request)?;
    let reply = talk.reply(&request, false)?;
    expect_status(&reply, &request, 404)?;
    let next = get("/hello");
    talk.send(&next)?;
    let reply = talk
        .reply(&next, false)
        .map_err(|why| format!("after a 404, on the same connection: {why}"))?;
    expect_status(&reply, &next, 200)
}

fn method_not_allowed(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let request = b"DELETE / HTTP/1.1\r\nHost: check\r\n\r\n";
    talk.send(request)?;
    let reply = talk.reply(request, false)?;
    expect_status(&reply, request, 405)?;
    let allow = reply.header("Allow").unwrap_or_default().replace(' ', "");
    if allow != "GET,HEAD" && allow != "HEAD,GET" {
        return Err(format!(
            "sent {}: a 405 says which methods are allowed: expected `Allow: GET, HEAD` in {}",
            quoted(request),
            reply.shown()
        ));
    }
    Ok(())
}

fn keep_alive(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    for (index, path) in ["/hello", "/", "/hello"].iter().enumerate() {
        let request = get(path);
        talk.send(&request)?;
        let reply = talk
            .reply(&request, false)
            .map_err(|why| format!("request {} of 3 on one connection: {why}", index + 1))?;
        expect_status(&reply, &request, 200)?;
        if reply
            .header("Connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"))
        {
            return Err(format!(
                "request {} of 3: an HTTP/1.1 request without `Connection: close` got {}",
                index + 1,
                reply.shown()
            ));
        }
    }
    Ok(())
}

fn pipelined(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let both = [get("/hello"), get("/no/such/page")].concat();
    talk.send(&both)?;
    let first = talk.reply(&both, false)?;
    expect_status(&first, &both, 200)
        .map_err(|why| format!("the first of two pipelined requests: {why}"))?;
    let second = talk
        .reply(&both, false)
        .map_err(|why| format!("the second of two pipelined requests: {why}"))?;
    expect_status(&second, &both, 404)
        .map_err(|why| format!("the second of two pipelined requests: {why}"))
}

fn single_bytes(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let _ = talk.stream.set_nodelay(true);
    let request = get("/hello");
    for byte in &request {
        talk.send(std::slice::from_ref(byte))?;
    }
    let reply = talk.reply(&request, false)?;
    expect_status(&reply, &request, 200)
}

fn body_skipped(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let both = [
        &b"POST /hello HTTP/1.1\r\nHost: check\r\nContent-Length: 27\r\n\r\nGET /not-a-request HTTP/1.1"[..],
        &get("/hello"),
    ]
    .concat();
    talk.send(&both)?;
    let first = talk.reply(&both, false)?;
    expect_status(&first, &both, 405)?;
    let second = talk.reply(&both, false).map_err(|why| {
        format!("after a POST with a 27-byte body (which must be skipped): {why}")
    })?;
    expect_status(&second, &both, 200).map_err(|why| {
        format!("the GET after a POST with a body (was the body read as a request?): {why}")
    })
}

fn http10_closes(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let request = b"GET /hello HTTP/1.0\r\n\r\n";
    talk.send(request)?;
    let reply = talk.reply(request, false)?;
    expect_status(&reply, request, 200)?;
    talk.expect_closed("after the response to an HTTP/1.0 request")
}

fn connection_close(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let request = b"GET /hello HTTP/1.1\r\nHost: check\r\nConnection: close\r\n\r\n";
    talk.send(request)?;
    let reply = talk.reply(request, false)?;
    expect_status(&reply, request, 200)?;
    expect_header(&reply, request, "Connection", "close")?;
    talk.expect_closed("after the response to `Connection: close`")
}

/// Sends `request`, expects `status` and then the server closing.
fn refused(target: &Target, request: &[u8], status: u16) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    // The server may answer and close before all of a large request is sent.
    let _ = talk.send(request);
    let reply = talk.reply(request, false)?;
    expect_status(&reply, request, status)?;
    talk.expect_closed(&format!("after a {status}"))
}

fn bad_request(target: &Target) -> Result<(), String> {
    refused(target, b"this is not http\r\n\r\n", 400)
}

fn missing_host(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let request = b"GET /hello HTTP/1.1\r\n\r\n";
    talk.send(request)?;
    let reply = talk.reply(request, false)?;
    expect_status(&reply, request, 400)
}

fn bad_version(target: &Target) -> Result<(), String> {
    refused(target, b"GET / HTTP/2.0\r\nHost: check\r\n\r\n", 505)
}

/// `GET /hello` with an `X-Padding` header that makes the head `size` bytes long.
fn padded(size: usize) -> Vec<u8> {
    let mut head = b"GET /hello HTTP/1.1\r\nHost: check\r\nX-Padding: ".to_vec();
    head.resize(size - 4, b'p');
    head.extend_from_slice(b"\r\n\r\n");
    head
}

fn head_at_limit(target: &Target) -> Result<(), String> {
    let mut talk = Conversation::open(target)?;
    let request = padded(MAX_HEAD);
    talk.send(&request)?;
    let reply = talk.reply(&request, false)?;
    expect_status(&reply, &request, 200)
        .map_err(|why| format!("a head of exactly {MAX_HEAD} bytes: {why}"))
}

fn head_too_large(target: &Target) -> Result<(), String> {
    refused(target, &padded(16 * 1024), 431)
}

fn idle_client(target: &Target) -> Result<(), String> {
    let _idle = connect(target)?;
    let mut talk = Conversation::open(target)?;
    let request = get("/hello");
    talk.send(&request)?;
    let reply = talk
        .reply(&request, false)
        .map_err(|why| format!("{why} (with another client connected and silent)"))?;
    expect_status(&reply, &request, 200)
}

fn after_reset(target: &Target) -> Result<(), String> {
    let mut doomed = connect(target)?;
    send(&mut doomed, b"GET /hello HTTP/1.1\r\nHost: ch")?;
    // SO_LINGER with a zero timeout: close(2) sends a reset (RST) instead of a FIN.
    SockRef::from(&doomed)
        .set_linger(Some(std::time::Duration::ZERO))
        .map_err(|err| format!("cannot set SO_LINGER: {err}"))?;
    drop(doomed);
    let mut talk = Conversation::open(target)?;
    let request = get("/hello");
    talk.send(&request)?;
    let reply = talk
        .reply(&request, false)
        .map_err(|why| format!("after another client reset its connection: {why}"))?;
    expect_status(&reply, &request, 200)
}

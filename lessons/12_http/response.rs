//! A response on the wire: a status line, headers, an empty line, and a body whose
//! length the `Content-Length` header gave in advance. That length is what lets the
//! client know where this response ends and the next one begins, on a connection
//! that stays open.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::SystemTime;

use workbook::time;

/// A status code and its reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
}

pub const OK: Status = Status::new(200, "OK");
pub const BAD_REQUEST: Status = Status::new(400, "Bad Request");
pub const FORBIDDEN: Status = Status::new(403, "Forbidden");
pub const NOT_FOUND: Status = Status::new(404, "Not Found");
pub const METHOD_NOT_ALLOWED: Status = Status::new(405, "Method Not Allowed");
pub const REQUEST_TIMEOUT: Status = Status::new(408, "Request Timeout");
pub const CONTENT_TOO_LARGE: Status = Status::new(413, "Content Too Large");
pub const HEADER_TOO_LARGE: Status = Status::new(431, "Request Header Fields Too Large");
pub const SERVER_ERROR: Status = Status::new(500, "Internal Server Error");
pub const NOT_IMPLEMENTED: Status = Status::new(501, "Not Implemented");
pub const VERSION_NOT_SUPPORTED: Status = Status::new(505, "HTTP Version Not Supported");

impl Status {
    const fn new(code: u16, reason: &'static str) -> Status {
        Status { code, reason }
    }
}

/// The interim response to `Expect: 100-continue`: send the body now.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What follows the head.
pub enum Body {
    Bytes(Vec<u8>),
    /// An open file and how many bytes of it to send (its size when it was opened).
    File(File, u64),
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::File(_, length) => *length,
        }
    }
}

pub struct Response {
    pub status: Status,
    pub content_type: &'static str,
    /// Headers besides the ones every response has.
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: Status, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: Body::Bytes(body.into()),
        }
    }

    /// A short explanation in plain text, for the error statuses.
    pub fn text(status: Status, text: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{text}\n"))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

// ANCHOR: head
/// The status line and the headers, each ending `\r\n`, then the empty line.
/// `Content-Length` is the body's length even when the body is not sent (a reply
/// to HEAD): it says what a GET would get.
pub fn head(response: &Response, keep_alive: bool, now: SystemTime) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n\
         Date: {}\r\n\
         Content-Type: {}\r\n\
         Content-Length: {}\r\n\
         Connection: {}\r\n",
        response.status.code,
        response.status.reason,
        http_date(now),
        response.content_type,
        response.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}
// ANCHOR_END: head

// ANCHOR: send
/// Writes the response; with `head_only` (a reply to HEAD) only its head. Returns
/// how many bytes of body went out. A file that is shorter than when it was opened
/// is an error: the promised Content-Length can no longer be kept, and the caller
/// must close the connection, the only way left to tell the client something is wrong.
pub fn send(
    mut stream: &TcpStream,
    response: Response,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<u64> {
    let mut bytes = head(&response, keep_alive, SystemTime::now());
    if head_only {
        stream.write_all(&bytes)?;
        return Ok(0);
    }
    match response.body {
        Body::Bytes(body) => {
            // Head and body in one write: one segment for a small page.
            bytes.extend_from_slice(&body);
            stream.write_all(&bytes)?;
            Ok(body.len() as u64)
        }
        Body::File(file, length) => {
            stream.write_all(&bytes)?;
            // `take`: never more than promised, even if the file grew meanwhile.
            let copied = io::copy(&mut file.take(length), &mut stream)?;
            if copied < length {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file shrank while it was sent ({copied} of {length} bytes)"),
                ));
            }
            Ok(copied)
        }
    }
}
// ANCHOR_END: send

// ANCHOR: http_date
/// `Sun, 06 Nov 1994 08:49:37 GMT`: the one date format HTTP/1.1 servers send
/// (RFC 9110's IMF-fixdate), always in UTC.
pub fn http_date(at: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = time::unix_seconds(at);
    let days = seconds / 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        // 1970-01-01, day 0, was a Thursday.
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// Year, month (1-12) and day (1-31) of the day `days` after 1970-01-01, in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}
// ANCHOR_END: http_date

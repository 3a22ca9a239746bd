//! Lesson 12, the client: fetches each path on one keep-alive connection and prints
//! each response: its status line, its headers, its body. It knows where a body ends
//! from `Content-Length`, or, without one, from the server closing the connection.
//!
//!   cargo run --bin 12_http_client -- / /hello
//!   cargo run --bin 12_http_client -- --raw /hello      the exact bytes, escaped
//!   cargo run --bin 12_http_client -- --head /
//!   cargo run --release --bin 12_http_client -- --repeat 2000 /hello   a measurement
//!   cargo run --release --bin 12_http_client -- --repeat 2000 --close /hello

/// The same head reader as the server's: a response's head ends with an empty line too.
mod head;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use head::NoHead;
use workbook::cli::Cli;
use workbook::{connect_failed, exit_on_stdout_error, exit_with_error, print_line, show};

const DEFAULT_PORT: u16 = 10012;

fn main() {
    let args = Cli::new(
        "12_http_client",
        "Lesson 12: fetches each PATH from the HTTP server on one keep-alive connection \
         and prints each response (status line, headers, body).",
        DEFAULT_PORT,
    )
    .switch(
        "--raw",
        "show the exact bytes sent (>) and received (<), escaped",
    )
    .switch(
        "--head",
        "send HEAD instead of GET: the same headers, no body",
    )
    .value(
        "--repeat",
        "N",
        "fetch the paths N times, print only how long it took (a measurement)",
    )
    .switch(
        "--close",
        "a new connection for every request (Connection: close), to compare with keep-alive",
    )
    .value(
        "--timeout",
        "SECS",
        "the longest a connect, a read or a write may wait (default 10)",
    )
    .positional("PATH", "the paths to fetch, in order (default /)")
    .parse();
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));
    let mut paths = args.messages.clone();
    if paths.is_empty() {
        paths.push("/".to_string());
    }
    if let Some(bad) = paths.iter().find(|path| !is_sendable(path)) {
        args.usage_error(&format!(
            "a PATH starts with / and has no spaces or control characters: {bad:?}"
        ));
    }
    let host = if args.host.contains(':') {
        format!("[{}]:{}", args.host, args.port)
    } else {
        format!("{}:{}", args.host, args.port)
    };
    let timeout: f64 = args.get_or("--timeout", 10.0);
    if !(0.05..=3600.0).contains(&timeout) {
        args.usage_error("--timeout must be between 0.05 and 3600 seconds");
    }
    let mut client = Client {
        addr,
        timeout: Duration::from_secs_f64(timeout),
        host,
        method: if args.flag("--head") { "HEAD" } else { "GET" },
        close_each: args.flag("--close"),
        stream: None,
        buffer: Vec::new(),
        connections: 0,
    };
    match args.get::<u32>("--repeat") {
        Some(0) => args.usage_error("--repeat must be at least 1"),
        Some(times) => measure(&mut client, &paths, times),
        None => {
            let mut output = if args.flag("--raw") {
                Output::Raw(Vec::new())
            } else {
                Output::Plain
            };
            for (index, path) in paths.iter().enumerate() {
                if index > 0 {
                    print_line("");
                }
                if let Err(message) = client.fetch(path, &mut output) {
                    exit_with_error(&message);
                }
            }
        }
    }
}

/// A path we can put in a request line as it is.
fn is_sendable(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|byte| byte.is_ascii_graphic())
}

/// `--repeat N`: every path N times; only the total time is printed.
fn measure(client: &mut Client, paths: &[String], times: u32) {
    let started = Instant::now();
    let mut requests = 0u64;
    for _ in 0..times {
        for path in paths {
            if let Err(message) = client.fetch(path, &mut Output::Quiet) {
                exit_with_error(&message);
            }
            requests += 1;
        }
    }
    let took = started.elapsed();
    print_line(&format!(
        "{} on {} in {:.1} ms: {:.0} requests per second",
        show::count(requests as usize, "request"),
        show::count(client.connections as usize, "connection"),
        took.as_secs_f64() * 1000.0,
        requests as f64 / took.as_secs_f64().max(1e-9)
    ));
}

/// What is shown of each exchange.
enum Output {
    /// Status line, headers and body, as a person reads them.
    Plain,
    /// Every byte, escaped, `>` sent and `<` received; holds a received line not yet
    /// complete.
    Raw(Vec<u8>),
    /// Nothing (a measurement).
    Quiet,
}

impl Output {
    fn note(&self, text: &str) {
        if !matches!(self, Output::Quiet) {
            print_line(&format!("* {text}"));
        }
    }

    fn sent(&self, bytes: &[u8]) {
        if let Output::Raw(_) = self {
            for line in bytes.split_inclusive(|&byte| byte == b'\n') {
                print_line(&format!("> {}", line.escape_ascii()));
            }
        }
    }

    /// Received bytes in raw mode: printed a line at a time, as lines complete.
    fn received(&mut self, bytes: &[u8]) {
        if let Output::Raw(pending) = self {
            pending.extend_from_slice(bytes);
            while let Some(newline) = pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=newline).collect();
                print_line(&format!("< {}", line.escape_ascii()));
            }
        }
    }

    /// The end of a response: in raw mode, the last line even without its newline.
    fn end_of_response(&mut self) {
        if let Output::Raw(pending) = self {
            if !pending.is_empty() {
                print_line(&format!("< {}", pending.escape_ascii()));
                pending.clear();
            }
        }
    }
}

// ANCHOR: client
/// One server, and the connection to it while it stays open.
struct Client {
    addr: SocketAddr,
    /// The longest any connect, read or write may wait.
    timeout: Duration,
    /// The `Host` header: the name and port the user gave.
    host: String,
    method: &'static str,
    close_each: bool,
    stream: Option<TcpStream>,
    /// Read but not yet used (what came after the head: the body's start).
    buffer: Vec<u8>,
    /// Connections opened so far.
    connections: u32,
}

impl Client {
    /// Sends one request and reads its response. On a kept-alive connection that the
    /// server has closed meanwhile (its idle timeout, its request limit), the request
    /// is sent again on a new connection, once: GET and HEAD may safely be repeated.
    fn fetch(&mut self, path: &str, output: &mut Output) -> Result<(), String> {
        let request = format!(
            "{} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: 12_http_client\r\nAccept: */*\r\n{}\r\n",
            self.method,
            self.host,
            if self.close_each {
                "Connection: close\r\n"
            } else {
                ""
            }
        );
        let reused = self.stream.is_some();
        match self.exchange(request.as_bytes(), output) {
            Err(Exchange::ClosedBeforeAnswer) if reused => {
                output.note("the server had closed the connection; connecting again");
                self.stream = None;
                self.exchange(request.as_bytes(), output)
                    .map_err(|failure| failure.describe(self.addr))
            }
            result => result.map_err(|failure| failure.describe(self.addr)),
        }
    }
    // ANCHOR_END: client

    fn connect(&mut self, output: &Output) -> Result<TcpStream, Exchange> {
        if let Some(stream) = self.stream.take() {
            return Ok(stream);
        }
        let stream = TcpStream::connect_timeout(&self.addr, self.timeout)
            .map_err(|err| Exchange::Failed(connect_failed(self.addr, &err, "12_http_server")))?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(|err| Exchange::Failed(format!("cannot set a timeout: {err}")))?;
        self.connections += 1;
        self.buffer.clear();
        if let Ok(local) = stream.local_addr() {
            output.note(&format!("connected {local} -> {}", self.addr));
        }
        Ok(stream)
    }

    // ANCHOR: exchange
    /// One request and its response on the open connection (or a new one).
    fn exchange(&mut self, request: &[u8], output: &mut Output) -> Result<(), Exchange> {
        let mut stream = self.connect(output)?;
        output.sent(request);
        if let Err(err) = stream.write_all(request) {
            return Err(match err.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                    Exchange::ClosedBeforeAnswer
                }
                _ => Exchange::Failed(format!("sending the request: {err}")),
            });
        }
        let response = loop {
            let end = match head::read_head(&stream, &mut self.buffer, self.timeout) {
                Ok(end) => end,
                Err(NoHead::Closed) => return Err(Exchange::ClosedBeforeAnswer),
                Err(NoHead::Failed(err)) if err.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Exchange::ClosedBeforeAnswer);
                }
                Err(NoHead::Failed(err)) => {
                    return Err(Exchange::Failed(format!("reading the response: {err}")));
                }
                Err(NoHead::Idle | NoHead::TooSlow) => {
                    return Err(Exchange::Failed(format!(
                        "no complete response head within {:?}",
                        self.timeout
                    )));
                }
                Err(NoHead::Cut) => {
                    return Err(Exchange::Failed(
                        "the server closed the connection in the middle of the response head"
                            .into(),
                    ));
                }
                Err(NoHead::TooLarge) => {
                    return Err(Exchange::Failed(format!(
                        "the response head is larger than {} bytes",
                        head::MAX_HEAD
                    )));
                }
            };
            let head: Vec<u8> = self.buffer.drain(..end).collect();
            output.received(&head);
            let response = ResponseHead::parse(&head).map_err(Exchange::Failed)?;
            if let Output::Plain = output {
                for line in head::lines(&head) {
                    print_line(&String::from_utf8_lossy(line));
                }
                print_line("");
            }
            // A 1xx response (100 Continue, 103 Early Hints) is interim: the final
            // response follows on the same connection (RFC 9110, 15.2). Not 101: after
            // it the connection speaks another protocol.
            if (100..200).contains(&response.status) && response.status != 101 {
                continue;
            }
            break response;
        };
        // How long the body is: nothing after HEAD, 204 or 304; Content-Length
        // bytes; or, with neither, everything until the server closes.
        let length = if self.method == "HEAD" || matches!(response.status, 101 | 204 | 304) {
            Some(0)
        } else if response.chunked {
            return Err(Exchange::Failed(
                "the response is chunked (Transfer-Encoding), which this client does not read"
                    .into(),
            ));
        } else {
            response.content_length
        };
        let shown = response.textual;
        let body = self.read_body(&mut stream, length, output, shown)?;
        if let Output::Plain = output {
            if !shown && body > 0 {
                print_line(&format!(
                    "({} of {}, not shown; --raw shows them)",
                    show::count(body as usize, "byte"),
                    response.content_type
                ));
            }
        }
        if response.keep_alive && length.is_some() && !self.close_each {
            self.stream = Some(stream);
        } else {
            output.note("the connection is closed");
        }
        Ok(())
    }
    // ANCHOR_END: exchange

    /// Reads `length` bytes of body (all until the server closes, for `None`) and
    /// shows them as they come; returns how many there were.
    fn read_body(
        &mut self,
        stream: &mut TcpStream,
        length: Option<u64>,
        output: &mut Output,
        shown: bool,
    ) -> Result<u64, Exchange> {
        let mut got = 0u64;
        let mut last = b'\n';
        let _ = stream.set_read_timeout(Some(self.timeout));
        let ended = loop {
            let piece = match self.body_piece(stream, length, got) {
                Ok(Some(piece)) => piece,
                Ok(None) => break Ok(got),
                Err(failure) => break Err(failure),
            };
            got += piece.len() as u64;
            output.received(&piece);
            if let (Output::Plain, true) = (&output, shown) {
                let mut stdout = io::stdout().lock();
                if let Err(err) = stdout.write_all(&piece).and_then(|()| stdout.flush()) {
                    exit_on_stdout_error(&err);
                }
                last = piece.last().copied().unwrap_or(last);
            }
        };
        // A body that does not end with a newline still ends its line on screen.
        if let (Output::Plain, true) = (&output, shown) {
            if last != b'\n' {
                print_line("");
            }
        }
        output.end_of_response();
        ended
    }

    /// The next piece of the body, from the buffer or the socket; `None` at its end.
    fn body_piece(
        &mut self,
        stream: &mut TcpStream,
        length: Option<u64>,
        got: u64,
    ) -> Result<Option<Vec<u8>>, Exchange> {
        let left = length.map_or(usize::MAX, |length| {
            (length - got).try_into().unwrap_or(usize::MAX)
        });
        if left == 0 {
            return Ok(None);
        }
        if !self.buffer.is_empty() {
            let take = self.buffer.len().min(left);
            return Ok(Some(self.buffer.drain(..take).collect()));
        }
        let mut chunk = vec![0u8; left.min(64 * 1024)];
        loop {
            let failed = match stream.read(&mut chunk) {
                Ok(0) if length.is_none() => return Ok(None),
                Ok(0) => format!(
                    "the server closed the connection after {got} of {} body bytes",
                    length.unwrap_or_default()
                ),
                Ok(n) => {
                    chunk.truncate(n);
                    return Ok(Some(chunk));
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    match length {
                        None => format!(
                            "{got} bytes of body, then nothing for {:?}, and the server has \
                             not closed: without Content-Length, only a close ends the body",
                            self.timeout
                        ),
                        Some(length) => format!(
                            "{got} of {length} bytes of body, then nothing for {:?}",
                            self.timeout
                        ),
                    }
                }
                Err(err) => format!("reading the body after {got} bytes: {err}"),
            };
            return Err(Exchange::Failed(failed));
        }
    }
}

/// Why an exchange failed.
enum Exchange {
    /// The connection closed (or was reset) before any byte of the response came.
    ClosedBeforeAnswer,
    Failed(String),
}

impl Exchange {
    fn describe(self, addr: SocketAddr) -> String {
        match self {
            Exchange::ClosedBeforeAnswer => {
                format!("{addr} closed the connection without a response")
            }
            Exchange::Failed(message) => message,
        }
    }
}

/// What the client needs from a response's head.
struct ResponseHead {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
    content_type: String,
    /// Text, shown as it is (not an image or other binary data).
    textual: bool,
}

impl ResponseHead {
    // ANCHOR: parse_response
    /// `HTTP/1.1 200 OK` and the headers the client acts on.
    fn parse(head: &[u8]) -> Result<ResponseHead, String> {
        let lines = head::lines(head);
        let status_line = String::from_utf8_lossy(lines.first().copied().unwrap_or_default());
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status = parts.next().and_then(|code| code.parse::<u16>().ok());
        let (Some(status), true) = (status, version.starts_with("HTTP/1.")) else {
            return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
        };
        let mut response = ResponseHead {
            status,
            content_length: None,
            chunked: false,
            // HTTP/1.1 keeps the connection open unless the server says otherwise.
            keep_alive: version == "HTTP/1.1",
            content_type: String::new(),
            textual: true,
        };
        for line in &lines[1..] {
            let Some((name, value)) = head::field(line) else {
                return Err(format!(
                    "a header line is not `Name: value`: {:?}",
                    String::from_utf8_lossy(line)
                ));
            };
            let value = String::from_utf8_lossy(value);
            match name.to_ascii_lowercase().as_str() {
                "content-length" => {
                    let length = value
                        .parse()
                        .map_err(|_| format!("the Content-Length is not a number: {value:?}"))?;
                    response.content_length = Some(length);
                }
                "transfer-encoding" => response.chunked = true,
                "connection" if value.eq_ignore_ascii_case("close") => {
                    response.keep_alive = false;
                }
                "content-type" => response.content_type = value.into_owned(),
                _ => {}
            }
        }
        let kind = response.content_type.to_ascii_lowercase();
        response.textual = kind.is_empty()
            || kind.starts_with("text/")
            || ["json", "xml", "javascript"]
                .iter()
                .any(|text| kind.contains(text));
        Ok(response)
    }
    // ANCHOR_END: parse_response
}

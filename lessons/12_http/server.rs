//! Lesson 12, the server: HTTP/1.1 from a raw socket, for a real browser.
//!
//! `GET /` answers with a page showing what the browser sent; `/hello` with the text
//! of the tutorials' first HTTP server; `--root DIR` serves files. Each connection is
//! served by a thread of its own in blocking calls with timeouts (lesson 06's model,
//! bounded by `--max-threads`), and stays open for more requests (keep-alive) until
//! the client closes it, asks to, is idle too long, or has made `--max-requests`.
//!
//!   terminal 1: cargo run --bin 12_http_server
//!   browser:    http://127.0.0.1:10012/
//!   terminal 2: cargo run --bin 12_http_client -- / /hello
//!   terminal 2: curl -i http://127.0.0.1:10012/hello
//!
//! `--naive` runs the tutorials' version instead (naive.rs), to see what goes wrong.

// ANCHOR: modules
/// `--root DIR`: static files, and the paths that must not leave DIR.
mod files;
/// Reading a message's head across any number of reads (the client uses it too).
mod head;
/// `--naive`: the tutorials' server, to see what goes wrong.
mod naive;
/// The routes and the page that shows what the browser sent.
mod pages;
/// The request: its line, headers, path and body length, or why it is refused.
mod request;
/// The response: status line, headers, body, and the HTTP date.
mod response;
// ANCHOR_END: modules

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use head::NoHead;
use pages::Origin;
use request::Request;
use response::{HEADER_TOO_LARGE, REQUEST_TIMEOUT, Response, Status};
use workbook::cli::Cli;
use workbook::listener::{self, Accept};
use workbook::live::{LiveConnections, Registered};
use workbook::log::RateLimitedLog;
use workbook::{exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 10012;
/// How long live connections get to finish the response in hand after Ctrl-C.
const GRACE: Duration = Duration::from_millis(500);
/// After a failed accept(2) (EMFILE), wait this long before the next try.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// At most one `error: accept` line per this interval; the rest are counted.
const ACCEPT_ERROR_INTERVAL: Duration = Duration::from_secs(1);
/// Before closing, how long the server goes on reading (and dropping) what the
/// client still sends, so that its last response is not lost to a reset.
const LINGER: Duration = Duration::from_secs(1);
/// ... and at most this much of it.
const LINGER_BYTES: usize = 256 * 1024;

/// What every connection's thread needs to know, from the command line.
struct Site {
    /// `--root`, canonical (absolute, no symbolic links), if given.
    root: Option<PathBuf>,
    /// The idle timeout, the time a request's head may take, and the longest a
    /// read of a body or a write may wait.
    timeout: Duration,
    /// Requests on one connection before the server closes it.
    max_requests: u32,
    quiet: bool,
}

fn main() {
    let args = Cli::new(
        "12_http_server",
        "Lesson 12: an HTTP/1.1 server. GET / shows what your browser sent, GET /hello \
         says hello; keep-alive, HEAD, limits and timeouts; --root DIR serves files.",
        DEFAULT_PORT,
    )
    .value(
        "--root",
        "DIR",
        "also serve the files under DIR (every path but /, /hello and /favicon.ico)",
    )
    .value(
        "--timeout",
        "SECS",
        "close a connection idle this long; a request's head must come within it, \
         and each read of a body or write of a response must progress within it (default 5)",
    )
    .value(
        "--max-requests",
        "N",
        "close a connection after N requests (default 100)",
    )
    .value(
        "--max-threads",
        "N",
        "at most N connections served at once; more wait in the backlog (default 128)",
    )
    .switch(
        "--naive",
        "the tutorials' server instead: one reply without Content-Length, never closed",
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let timeout: f64 = args.get_or("--timeout", 5.0);
    if !(0.05..=3600.0).contains(&timeout) {
        args.usage_error("--timeout must be between 0.05 and 3600 seconds");
    }
    let max_requests: u32 = args.get_or("--max-requests", 100);
    let max_threads: usize = args.get_or("--max-threads", 128);
    if max_requests == 0 || max_threads == 0 {
        args.usage_error("--max-requests and --max-threads must be at least 1");
    }
    let root = args
        .get::<PathBuf>("--root")
        .map(|dir| match std::fs::canonicalize(&dir) {
            Ok(root) if root.is_dir() => root,
            Ok(_) => args.usage_error(&format!("--root {}: not a directory", dir.display())),
            Err(err) => args.usage_error(&format!("--root {}: {err}", dir.display())),
        });
    let site = Arc::new(Site {
        root,
        timeout: Duration::from_secs_f64(timeout),
        max_requests,
        quiet: args.flag("--quiet"),
    });
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    if args.flag("--naive") {
        // The tutorials' listen(5).
        let listener = listener::open(addr, 5, Accept::Blocking);
        naive::serve(&listener, site.quiet);
        return;
    }
    let listener = Arc::new(listener::open(addr, 128, Accept::Blocking));
    let connections = LiveConnections::new();
    // Ctrl-C, as in lesson 06: end the input of every connection, wake accept(2).
    // On the signal thread: no logging, no waiting.
    let for_signal = Arc::clone(&connections);
    let listener_for_signal = Arc::clone(&listener);
    signal::on_shutdown(move || {
        for_signal.begin_shutdown();
        let _ = socket2::SockRef::from(&*listener_for_signal).shutdown(Shutdown::Read);
    })
    .unwrap_or_else(|message| exit_with_error(&message));
    log::listening(listener.local_addr().unwrap_or(addr));

    let mut threads = Vec::new();
    accept_loop(&listener, &connections, &site, max_threads, &mut threads);
    shut_down(&connections, threads);
}

// ANCHOR: accept_loop
/// Lesson 06's loop: accept while there is room for one more connection thread.
fn accept_loop(
    listener: &TcpListener,
    connections: &Arc<LiveConnections>,
    site: &Arc<Site>,
    max_threads: usize,
    threads: &mut Vec<JoinHandle<()>>,
) {
    let accept_errors = RateLimitedLog::new(ACCEPT_ERROR_INTERVAL);
    while connections.wait_for_room(max_threads) {
        // accept(2) returns the client's address: kept for the log, because a client
        // that has already reset has none left to ask for (getpeername fails).
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(_) if connections.is_stopping() => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                accept_errors.line(format!("{} accept: {err}", log::ERROR));
                thread::sleep(ACCEPT_RETRY_PAUSE);
                continue;
            }
        };
        threads.retain(|handle| !handle.is_finished());
        let stream = Arc::new(stream);
        let registered = connections.register(Some(Arc::clone(&stream)));
        let number = registered.number;
        let for_thread = (Arc::clone(connections), Arc::clone(site));
        let spawned = thread::Builder::new()
            .name(format!("conn-{number}"))
            .spawn(move || {
                let (connections, site) = for_thread;
                serve_connection(&stream, peer, registered, &connections, &site);
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(err) => log!(
                "{} cannot start a thread for conn-{number}: {err}",
                log::ERROR
            ),
        }
    }
}
// ANCHOR_END: accept_loop

/// Why a connection ended, for its `disconnected` line.
enum Ending {
    ClientClosed,
    Idle,
    /// The server decided, after the response: `Connection: close`, HTTP/1.0, the
    /// request limit, an error status, or Ctrl-C.
    Closed(&'static str),
    /// The client went away in the middle of a request.
    Cut(&'static str),
    Failed(io::Error),
}

// ANCHOR: serve_connection
/// The connection's thread: requests, one after another, until one side ends it.
fn serve_connection(
    stream: &TcpStream,
    peer: SocketAddr,
    registered: Registered,
    connections: &LiveConnections,
    site: &Site,
) {
    let local = stream
        .local_addr()
        .map_or_else(|_| "?".to_string(), |local| local.to_string());
    let peers = format!("{peer} -> {local}");
    let number = registered.number;
    if !site.quiet {
        log!(
            "{} {peers} (thread conn-{number}; live {})",
            log::CONNECTED,
            registered.live_now
        );
    }
    // Responses go out as soon as they are written (lesson 02): a response written
    // in two parts must not wait for the ACK of the first (Nagle's algorithm).
    let _ = stream.set_nodelay(true);
    // SO_SNDTIMEO: a write to a client that stops reading fails after `timeout`.
    let _ = stream.set_write_timeout(Some(site.timeout));
    let mut connection = Connection {
        stream,
        peer,
        peers,
        buffer: Vec::new(),
        served: 0,
    };
    let ending = connection.serve(connections, site);
    if let Ending::Failed(err) = &ending {
        log!("{} {}: {err}", log::ERROR, connection.peers);
    }
    drop(registered);
    if !site.quiet {
        let why = match &ending {
            Ending::ClientClosed => "the client closed",
            Ending::Idle => "idle",
            Ending::Closed(why) | Ending::Cut(why) => why,
            Ending::Failed(_) => "error",
        };
        log!(
            "{} {} after {}: {why} (thread conn-{number}; live {})",
            log::DISCONNECTED,
            connection.peers,
            show::count(connection.served as usize, "request"),
            connections.live()
        );
    }
}
// ANCHOR_END: serve_connection

/// One client's connection, and the bytes read from it not yet used.
struct Connection<'a> {
    stream: &'a TcpStream,
    /// The client's address, as accept(2) gave it.
    peer: SocketAddr,
    peers: String,
    /// Read but not yet used: the rest of a pipelined request, or of a body.
    buffer: Vec<u8>,
    /// Requests answered so far.
    served: u32,
}

impl Connection<'_> {
    // ANCHOR: serve
    fn serve(&mut self, connections: &LiveConnections, site: &Site) -> Ending {
        loop {
            // 1. The head: request line and headers, up to the empty line.
            let end = match head::read_head(self.stream, &mut self.buffer, site.timeout) {
                Ok(end) => end,
                Err(NoHead::Closed) if connections.is_stopping() => {
                    return Ending::Closed("shutting down");
                }
                Err(NoHead::Closed) => return Ending::ClientClosed,
                Err(NoHead::Idle) => return self.close(Ending::Idle),
                Err(NoHead::Cut) => return Ending::Cut("the client closed mid-request"),
                Err(NoHead::TooSlow) => {
                    let why = "the request's head did not come in time";
                    return self.refuse(REQUEST_TIMEOUT, why, site);
                }
                Err(NoHead::TooLarge) => {
                    let why = format!("a head larger than {} bytes", head::MAX_HEAD);
                    return self.refuse(HEADER_TOO_LARGE, &why, site);
                }
                Err(NoHead::Failed(err)) => return Ending::Failed(err),
            };
            // 2. A request we cannot be sure we understood: say why, and close.
            let request = match request::parse(&self.buffer[..end]) {
                Ok(request) => request,
                Err(rejection) => {
                    return self.refuse(rejection.status, &rejection.why, site);
                }
            };
            self.buffer.drain(..end);
            self.served += 1;
            // 3. A client that sent `Expect: 100-continue` holds its body back until
            //    the server says to send it (RFC 9110, 10.1.1). A refusal known from
            //    the head goes out at once, and the connection is closed: the body
            //    will not come, or would come unread. Otherwise `100 Continue`.
            let body_in_buffer = self.buffer.len() as u64 >= request.body_length;
            if request.expects_continue() && !body_in_buffer {
                if let Some(refusal) = pages::refusal(&request) {
                    let status = refusal.status;
                    let head_only = request.method == "HEAD";
                    return match response::send(self.stream, refusal, head_only, false) {
                        Ok(sent) => {
                            self.log_request(&request, status, sent, site);
                            self.close(Ending::Closed("refused before the body came"))
                        }
                        Err(err) => Ending::Failed(err),
                    };
                }
                if let Err(err) = (&*self.stream).write_all(response::CONTINUE) {
                    return Ending::Failed(err);
                }
            }
            // 4. Its body, read and dropped, so that the next request starts where
            //    it should.
            if let Err(ending) = self.skip_body(request.body_length, site.timeout) {
                return ending;
            }
            // 5. The answer, and whether the connection stays open after it.
            let response = pages::answer(&request, &self.origin(), site.root.as_deref());
            let keep_alive = !request.wants_to_close()
                && self.served < site.max_requests
                && !connections.is_stopping();
            let status = response.status;
            let head_only = request.method == "HEAD";
            match response::send(self.stream, response, head_only, keep_alive) {
                Ok(sent) => self.log_request(&request, status, sent, site),
                Err(err) => return Ending::Failed(err),
            }
            if !keep_alive {
                return self.close(Ending::Closed(closing_reason(&request, self.served, site)));
            }
        }
    }
    // ANCHOR_END: serve

    /// Both ends of the connection and the request's number, for the page.
    fn origin(&self) -> Origin {
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        Origin {
            peer: self.peer,
            local: self.stream.local_addr().unwrap_or(unknown),
            number: self.served,
        }
    }

    // ANCHOR: skip_body
    /// Reads `length` bytes of body (some may be in the buffer already) and drops them.
    /// All of it must come within `timeout`, like a head: a client sending one byte
    /// every few seconds cannot hold the thread for the length of a megabyte.
    fn skip_body(&mut self, length: u64, timeout: Duration) -> Result<(), Ending> {
        let in_buffer = self.buffer.len().min(length as usize);
        self.buffer.drain(..in_buffer);
        let mut left = length - in_buffer as u64;
        let mut scratch = [0u8; 16 * 1024];
        let until = Instant::now() + timeout;
        while left > 0 {
            let time_left = until.saturating_duration_since(Instant::now());
            if time_left.is_zero() || self.stream.set_read_timeout(Some(time_left)).is_err() {
                return Err(self.close(Ending::Cut("the body did not come in time")));
            }
            let want = scratch.len().min(left as usize);
            match (&*self.stream).read(&mut scratch[..want]) {
                Ok(0) => return Err(Ending::Cut("the client closed mid-body")),
                Ok(n) => left -= n as u64,
                // The deadline is checked at the top of the loop.
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => return Err(Ending::Failed(err)),
            }
        }
        Ok(())
    }
    // ANCHOR_END: skip_body

    // ANCHOR: refuse
    /// A request refused before it was understood: the status with a line of why,
    /// `Connection: close`, and close.
    fn refuse(&mut self, status: Status, why: &str, site: &Site) -> Ending {
        let response = Response::text(status, why);
        // A HEAD request gets no body, even in a refusal (RFC 9110, 9.3.2).
        let head_only = is_head_request(&self.buffer);
        if let Err(err) = response::send(self.stream, response, head_only, false) {
            return Ending::Failed(err);
        }
        if !site.quiet {
            // The first line of what came (show::bytes shortens a long one).
            let first = head::lines(&self.buffer).first().copied();
            log!(
                "{} {} from {}: {} {} ({why})",
                log::RECEIVED,
                show::bytes(first.unwrap_or_default()),
                self.peers,
                status.code,
                status.reason
            );
        }
        self.close(Ending::Closed("refused"))
    }
    // ANCHOR_END: refuse

    fn log_request(&self, request: &Request, status: Status, sent: u64, site: &Site) {
        if site.quiet {
            return;
        }
        log!(
            "{} {} from {}: {} {}, {}",
            log::RECEIVED,
            show::bytes(request.line.as_bytes()),
            self.peers,
            status.code,
            status.reason,
            show::count(sent as usize, "byte")
        );
    }

    // ANCHOR: close
    /// Closes gently: shutdown(SHUT_WR) sends our FIN after the last response, then
    /// whatever the client still sends (a pipelined request we will not answer, the
    /// rest of a refused head) is read and dropped until the client closes too, for
    /// at most [`LINGER`]. Closing at once with unread bytes in the socket would make
    /// the kernel send a reset, and a reset can destroy the last response before the
    /// client has read it.
    fn close(&mut self, ending: Ending) -> Ending {
        let _ = self.stream.shutdown(Shutdown::Write);
        let until = Instant::now() + LINGER;
        let mut dropped = 0;
        let mut scratch = [0u8; 16 * 1024];
        while dropped < LINGER_BYTES {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match (&*self.stream).read(&mut scratch) {
                Ok(0) => break,
                Ok(n) => dropped += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        ending
    }
    // ANCHOR_END: close
}

/// Whether `buffer` starts with a whole request line whose method is HEAD.
fn is_head_request(buffer: &[u8]) -> bool {
    let Some(newline) = buffer.iter().position(|&byte| byte == b'\n') else {
        return false;
    };
    let line = &buffer[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&byte| byte == b' ').collect();
    parts.len() == 3 && parts[0] == b"HEAD"
}

/// Why the server closed after a response, for the log.
fn closing_reason(request: &Request, served: u32, site: &Site) -> &'static str {
    if request.version == request::Version::Http10 {
        "HTTP/1.0"
    } else if request.wants_to_close() {
        "the client asked (Connection: close)"
    } else if served >= site.max_requests {
        "the request limit"
    } else {
        "shutting down"
    }
}

// ANCHOR: shut_down
/// Stop, as lesson 06 does: the signal thread has ended every connection's input;
/// wait up to GRACE for responses in hand, cut off the rest, join every thread.
fn shut_down(connections: &LiveConnections, threads: Vec<JoinHandle<()>>) {
    let cut_off = connections.finish(GRACE);
    for handle in threads {
        let _ = handle.join();
    }
    let served = show::count(connections.total() as usize, "connection");
    let cut_off = match cut_off {
        0 => String::new(),
        n => format!(
            ", {} cut off after the grace period",
            show::count(n, "connection")
        ),
    };
    log::last_line(format!(
        "{}: served {served}{cut_off}, all threads joined",
        log::SHUTTING_DOWN
    ));
}
// ANCHOR_END: shut_down

//! Lesson 09, the server: messages on a byte stream. A request is a header block that
//! ends with a blank line (`\r\n\r\n`), however many reads it takes to arrive; the
//! reply is the time (`ctime`) and `\r\n`, then the server closes the connection.
//!
//! It runs on lesson 08's reactor (the same file, included below) with a framing
//! layer on top (framing.rs), modelled on Python's `asynchat`.
//!
//!   terminal 1: cargo run --bin 09_framing_server
//!   terminal 2: cargo run --bin 09_framing_client -- --step

// ANCHOR: modules
// Lesson 08's reactor, the very same file: this lesson adds a layer, not a loop.
#[path = "../08_event_loop/reactor.rs"]
mod reactor;

// The framing layer (asynchat's async_chat) and, for its tests only, the
// length-prefixed framing the chapter compares it with.
mod framing;
#[cfg(test)]
mod length_prefix;
// ANCHOR_END: modules

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use framing::{Channel, Framed, Protocol, Terminator};
use reactor::{Context, Handler, Reactor};
use socket2::{Domain, Socket, Type};
use workbook::cli::Cli;
use workbook::{bind_failed, exit_with_error, log, show, signal, time};

const DEFAULT_PORT: u16 = 10009;
/// A request ends with an empty line: the end of one line and then of an empty one.
const TERMINATOR: &[u8] = b"\r\n\r\n";
/// The largest header block accepted, its terminator included.
const MAX_HEADER: usize = 64 * 1024;
/// How long accepting pauses after EMFILE/ENFILE.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);

/// What the shutdown line reports.
#[derive(Default)]
struct Stats {
    served: Cell<usize>,
    replies: Cell<usize>,
}

fn main() {
    let args = Cli::new(
        "09_framing_server",
        "Lesson 09: a time server on the lesson 08 event loop with a framing layer: \
         a request is a header block ending with an empty line (\\r\\n\\r\\n); the reply \
         is the time and \\r\\n, then the server closes the connection.",
        DEFAULT_PORT,
    )
    .switch(
        "--edge",
        "register sockets edge-triggered (EPOLLET) instead of level-triggered",
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let quiet = args.flag("--quiet");
    let edge = args.flag("--edge");
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    let listener = open_listener(addr);
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    let mut reactor = Reactor::new(edge)
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create an epoll instance: {err}")));
    let stats = Rc::new(Stats::default());
    let bound = listener.local_addr().unwrap_or(addr);
    let acceptor = Acceptor {
        listener,
        paused: false,
        stats: Rc::clone(&stats),
        quiet,
    };
    if let Err(err) = reactor.add(Box::new(acceptor)) {
        exit_with_error(&format!("cannot watch the listening socket: {err}"));
    }
    log::listening(bound);
    if !quiet {
        let mode = if edge {
            "edge-triggered"
        } else {
            "level-triggered"
        };
        log!(
            "event loop: epoll, {mode}; a request ends with {}, at most {MAX_HEADER} bytes",
            show::bytes(TERMINATOR)
        );
    }
    let stopped = reactor.run(&wakeup);
    // The acceptor and the open connections; dropping the reactor closes them all.
    let open = reactor.len().saturating_sub(1);
    drop(reactor);
    let reason = match stopped {
        Ok(()) => "signal".to_string(),
        Err(err) => format!("epoll_wait failed: {err}"),
    };
    log::last_line(format!(
        "{} ({reason}): served {}, answered {}, closed {} still open",
        log::SHUTTING_DOWN,
        show::count(stats.served.get(), "client"),
        show::count(stats.replies.get(), "request"),
        show::count(open, "connection")
    ));
}

/// socket, SO_REUSEADDR, bind, listen (lesson 01), non-blocking (lesson 05).
fn open_listener(addr: SocketAddr) -> TcpListener {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap_or_else(|err| exit_with_error(&format!("cannot create a TCP socket: {err}")));
    if let Err(err) = socket.set_reuse_address(true) {
        exit_with_error(&format!("cannot set SO_REUSEADDR: {err}"));
    }
    if let Err(err) = socket.bind(&addr.into()) {
        exit_with_error(&bind_failed(addr, &err));
    }
    if let Err(err) = socket.listen(1024) {
        exit_with_error(&format!("cannot listen on {addr}: {err}"));
    }
    if let Err(err) = socket.set_nonblocking(true) {
        exit_with_error(&format!("cannot make the listener non-blocking: {err}"));
    }
    TcpListener::from(socket)
}

// ANCHOR: time_teller
/// One connection's protocol: one header block in, the time out, then close.
/// (The Python tutorial's `async_chat` subclass, with a limit added.)
struct TimeTeller {
    /// The header block so far, without the terminator.
    header: Vec<u8>,
    stats: Rc<Stats>,
    quiet: bool,
}

impl Protocol for TimeTeller {
    fn start(&mut self, chat: &mut Channel) {
        chat.set_terminator(Terminator::Bytes(TERMINATOR.to_vec()));
    }

    fn collect_incoming_data(&mut self, data: &[u8], chat: &mut Channel) {
        // The layer keeps nothing but a possible start of the terminator: the frame
        // is ours to keep, so the limit is ours to enforce. Without it, a client
        // that never sends the empty line makes this Vec grow until memory runs out.
        if self.header.len() + data.len() > MAX_HEADER - TERMINATOR.len() {
            log!(
                "{} {}: header block larger than {MAX_HEADER} bytes, closing",
                log::ERROR,
                chat.peers()
            );
            chat.close();
            return;
        }
        self.header.extend_from_slice(data);
    }

    fn found_terminator(&mut self, chat: &mut Channel) {
        let reply = format!("{}\r\n", time::ctime_now());
        if !self.quiet {
            let first_line = match self.header.windows(2).position(|pair| pair == b"\r\n") {
                Some(end) => &self.header[..end],
                None => &self.header[..],
            };
            log!(
                "request from {}: {} header bytes, first line {}",
                chat.peers(),
                self.header.len() + TERMINATOR.len(),
                show::bytes(first_line)
            );
            log!(
                "replied to {}: {}",
                chat.peers(),
                show::bytes(reply.as_bytes())
            );
        }
        chat.push(reply.into_bytes());
        // One request per connection, as in HTTP/1.0: whatever comes after this
        // block is not read as a request.
        chat.close_when_done();
        self.stats.replies.set(self.stats.replies.get() + 1);
    }

    fn end_of_input(&mut self, chat: &mut Channel) {
        if !self.header.is_empty() && !self.quiet {
            log!(
                "incomplete request from {}: {} and no empty line before the end of input; no reply",
                chat.peers(),
                show::count(self.header.len(), "byte")
            );
        }
    }
}
// ANCHOR_END: time_teller

// ANCHOR: acceptor
/// The listening socket's handler (lesson 08's acceptor): each connection gets a
/// `Framed` handler with its own `TimeTeller`.
struct Acceptor {
    listener: TcpListener,
    /// Out of descriptors: not watching the listener until a timer says try again.
    paused: bool,
    stats: Rc<Stats>,
    quiet: bool,
}

impl Handler for Acceptor {
    fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
    fn accepting(&self) -> bool {
        true
    }
    fn readable(&self) -> bool {
        !self.paused
    }
    fn handle_accept(&mut self, event_loop: &mut Context) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let peers = show::peers(&stream);
                    if let Err(err) = stream.set_nonblocking(true) {
                        // That connection is dropped; the listener carries on.
                        log!("{} {peers}: cannot make it non-blocking: {err}", log::ERROR);
                        continue;
                    }
                    self.stats.served.set(self.stats.served.get() + 1);
                    if !self.quiet {
                        log!("{} {peers}", log::CONNECTED);
                    }
                    let protocol = TimeTeller {
                        header: Vec::new(),
                        stats: Rc::clone(&self.stats),
                        quiet: self.quiet,
                    };
                    let handler = Framed::new(stream, peers, protocol, self.quiet);
                    event_loop.add(Box::new(handler));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    log!(
                        "{} accept: {err}; pausing accept for {} ms",
                        log::ERROR,
                        ACCEPT_PAUSE.as_millis()
                    );
                    self.paused = true;
                    event_loop.wake_at(Instant::now() + ACCEPT_PAUSE);
                    return Ok(());
                }
                Err(err) => log!("{} accept: {err}", log::ERROR),
            }
        }
    }
    fn handle_timeout(&mut self, _loop: &mut Context) -> io::Result<()> {
        self.paused = false;
        Ok(())
    }
}
// ANCHOR_END: acceptor

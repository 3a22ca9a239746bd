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
use std::rc::Rc;

use framing::{Channel, Framed, Protocol, Terminator};
use reactor::{Acceptor, Reactor};
use workbook::cli::Cli;
use workbook::listener::{self, Accept};
use workbook::{exit_with_error, log, show, signal, time};

const DEFAULT_PORT: u16 = 10009;
/// A request ends with an empty line: the end of one line and then of an empty one.
const TERMINATOR: &[u8] = b"\r\n\r\n";
/// The largest header block accepted, its terminator included.
const MAX_HEADER: usize = 64 * 1024;

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

    // socket, SO_REUSEADDR, bind, listen (lessons 01-02), non-blocking (lesson 04).
    let listener = listener::open(addr, 1024, Accept::NonBlocking);
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    let mut reactor = Reactor::new(edge)
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create an epoll instance: {err}")));
    let bound = listener.local_addr().unwrap_or(addr);
    // ANCHOR: acceptor
    let stats = Rc::new(Stats::default());
    let counted = Rc::clone(&stats);
    // Lesson 08's acceptor: each connection it accepts gets a `Framed` handler with
    // its own `TimeTeller`.
    let acceptor = Acceptor::new(listener, move |stream, peers| {
        counted.served.set(counted.served.get() + 1);
        if !quiet {
            log!("{} {peers}", log::CONNECTED);
        }
        let protocol = TimeTeller {
            header: Vec::new(),
            stats: Rc::clone(&counted),
            quiet,
        };
        Box::new(Framed::new(stream, peers, protocol, quiet))
    });
    // ANCHOR_END: acceptor
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
        chat.push(reply.as_bytes());
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

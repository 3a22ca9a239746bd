//! Lesson 08, the server: lesson 05's echo server rebuilt on a small event loop over
//! epoll(7): the reactor's acceptor and one handler per connection (see reactor.rs).
//!
//!   terminal 1: cargo run --bin 08_event_loop_server            (level-triggered)
//!               cargo run --bin 08_event_loop_server -- --edge  (edge-triggered)
//!   terminal 2: cargo run --bin 08_event_loop_client -- --conns 3 hello

mod reactor;

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;

use reactor::{Acceptor, Context, Handler, Reactor};
use workbook::cli::Cli;
use workbook::listener::{self, Accept};
use workbook::output::OutputBuffer;
use workbook::{exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 10008;
/// The most one read(2) takes.
const READ_SIZE: usize = 64 * 1024;
/// Echo waiting to go out beyond which a connection is not read (as in lesson 05).
const OUTPUT_CAP: usize = 1024 * 1024;

fn main() {
    let args = Cli::new(
        "08_event_loop_server",
        "Lesson 08: an echo server on a small epoll event loop (a reactor).",
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

    // ANCHOR: setup
    // socket, SO_REUSEADDR, bind, listen (lessons 01-02), non-blocking (lesson 04).
    let listener = listener::open(addr, 1024, Accept::NonBlocking);
    // Readable once Ctrl-C or SIGTERM came (lesson 05): the loop watches it too.
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    let mut reactor = Reactor::new(edge)
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create an epoll instance: {err}")));
    // ANCHOR_END: setup
    let bound = listener.local_addr().unwrap_or(addr);
    // ANCHOR: main
    // ANCHOR: new_connection
    let served = Rc::new(Cell::new(0));
    let counted = Rc::clone(&served);
    // One read buffer for every connection: the loop runs one handler at a time.
    let read_buffer = Rc::new(RefCell::new(vec![0; READ_SIZE]));
    // The reactor's acceptor; for each connection it accepts, this makes the handler.
    let acceptor = Acceptor::new(listener, move |stream, peers| {
        counted.set(counted.get() + 1);
        if !quiet {
            log!("{} {peers}", log::CONNECTED);
        }
        let read_buffer = Rc::clone(&read_buffer);
        Box::new(Connection::new(stream, peers, read_buffer, quiet))
    });
    // ANCHOR_END: new_connection
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
        log!("event loop: epoll, {mode}");
    }
    let stopped = reactor.run(&wakeup);
    // Everything still in the loop is the acceptor and the open connections;
    // dropping the reactor closes every socket.
    let open = reactor.len().saturating_sub(1);
    drop(reactor);
    // ANCHOR_END: main
    let reason = match stopped {
        Ok(()) => "signal".to_string(),
        Err(err) => format!("epoll_wait failed: {err}"),
    };
    log::last_line(format!(
        "{} ({reason}): served {}, closed {} still open",
        log::SHUTTING_DOWN,
        show::count(served.get(), "client"),
        show::count(open, "connection")
    ));
}

// ANCHOR: connection
/// One client's handler: what it sent, echoed back as the socket allows.
struct Connection {
    stream: TcpStream,
    peers: String,
    /// Echo not written yet, at most OUTPUT_CAP bytes (and about that much memory).
    output: OutputBuffer,
    /// The client half-closed: finish the echo, then close.
    read_closed: bool,
    /// False once a read said WouldBlock, until epoll reports the socket readable.
    may_read: bool,
    /// The loop's shared read buffer.
    read_buffer: Rc<RefCell<Vec<u8>>>,
    /// Why the connection failed, if it did (logged when it closes).
    error: Option<io::Error>,
    quiet: bool,
}
// ANCHOR_END: connection

impl Connection {
    fn new(
        stream: TcpStream,
        peers: String,
        read_buffer: Rc<RefCell<Vec<u8>>>,
        quiet: bool,
    ) -> Connection {
        Connection {
            stream,
            peers,
            output: OutputBuffer::new(OUTPUT_CAP),
            read_closed: false,
            may_read: true,
            read_buffer,
            error: None,
            quiet,
        }
    }

    // ANCHOR: pump
    /// Reads and writes as far as the socket and OUTPUT_CAP allow.
    fn pump(&mut self, event_loop: &mut Context) -> io::Result<()> {
        let read_buffer = Rc::clone(&self.read_buffer);
        // Only one handler runs at a time, so the buffer is never borrowed twice.
        let mut buffer = read_buffer.borrow_mut();
        loop {
            let mut got_data = false;
            if self.may_read && self.readable() {
                // No more than the output has room for: its cap is what stops us.
                let room = self.output.room().min(buffer.len());
                match self.stream.read(&mut buffer[..room]) {
                    Ok(0) => self.read_closed = true,
                    Ok(n) => {
                        if !self.quiet {
                            let data = show::bytes(&buffer[..n]);
                            let size = show::count(n, "byte");
                            log!("{} {size} from {}: {data}", log::RECEIVED, self.peers);
                        }
                        self.echo(&buffer[..n])?;
                        got_data = true;
                    }
                    // Nothing more until epoll says so: remember it, for edge mode.
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.may_read = false,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(err),
                }
            }
            self.flush()?;
            // Level-triggered: one read per event is fair; epoll reports the socket
            // again while more is waiting. Edge-triggered: epoll reports only new
            // arrivals, so go on until read says WouldBlock, or until OUTPUT_CAP
            // stops us (then `may_read` stays true, and the next EPOLLOUT, which
            // makes room, carries on reading).
            if !event_loop.edge_triggered() || !got_data {
                break;
            }
        }
        if self.read_closed && self.output.is_empty() {
            event_loop.close();
        }
        Ok(())
    }
    // ANCHOR_END: pump

    // ANCHOR: echo
    /// Sends `received` back: at once, straight from the read buffer, when nothing
    /// is waiting before it (the send buffer nearly always has room, so nothing is
    /// copied and the wants do not change: no epoll_ctl). What does not fit is
    /// queued in `output` for EPOLLOUT.
    fn echo(&mut self, received: &[u8]) -> io::Result<()> {
        let mut sent_now = 0;
        if self.output.is_empty() {
            while sent_now < received.len() {
                match self.stream.write(&received[sent_now..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => sent_now += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(err),
                }
            }
        }
        if sent_now < received.len() {
            self.output.push(&received[sent_now..]);
        }
        Ok(())
    }
    // ANCHOR_END: echo

    // ANCHOR: flush
    /// Writes until the output is empty or the kernel's buffer is full (WouldBlock).
    /// The output drops what was sent as it goes (src/output.rs).
    fn flush(&mut self) -> io::Result<()> {
        while !self.output.is_empty() {
            match self.output.write_to(&self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
    // ANCHOR_END: flush
}

// ANCHOR: connection_handler
impl Handler for Connection {
    fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
    fn readable(&self) -> bool {
        !self.read_closed && !self.output.is_full()
    }
    fn writable(&self) -> bool {
        !self.output.is_empty()
    }
    fn handle_read(&mut self, event_loop: &mut Context) -> io::Result<()> {
        // epoll says there is something to read (or EOF, or an error).
        self.may_read = true;
        self.pump(event_loop)
    }
    fn handle_write(&mut self, event_loop: &mut Context) -> io::Result<()> {
        self.pump(event_loop)
    }
    fn handle_error(&mut self, error: io::Error) {
        // ECONNRESET, EPIPE: this client is gone; the loop goes on.
        self.error = Some(error);
    }
    fn handle_close(&mut self) {
        match &self.error {
            Some(error) => log!("{} {}: {error}", log::DISCONNECTED, self.peers),
            None if !self.quiet => log!("{} {}", log::DISCONNECTED, self.peers),
            None => {}
        }
    }
}
// ANCHOR_END: connection_handler

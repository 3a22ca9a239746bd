//! Lesson 08, the server: lesson 05's echo server rebuilt on a small event loop over
//! epoll(7): one acceptor handler and one handler per connection (see reactor.rs).
//!
//!   terminal 1: cargo run --bin 08_event_loop_server            (level-triggered)
//!               cargo run --bin 08_event_loop_server -- --edge  (edge-triggered)
//!   terminal 2: cargo run --bin 08_event_loop_client -- --conns 3 hello

mod reactor;

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use reactor::{Context, Handler, Reactor};
use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::output::OutputBuffer;
use workbook::{bind_failed, exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 10008;
/// The most one read(2) takes.
const READ_SIZE: usize = 64 * 1024;
/// Echo waiting to go out beyond which a connection is not read (as in lesson 05).
const OUTPUT_CAP: usize = 1024 * 1024;
/// How long accepting pauses after EMFILE/ENFILE.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);

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

    let listener = open_listener(addr);
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    let mut reactor = Reactor::new(edge)
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create an epoll instance: {err}")));
    // ANCHOR: main
    let served = Rc::new(Cell::new(0));
    let bound = listener.local_addr().unwrap_or(addr);
    let acceptor = Acceptor {
        listener,
        paused: false,
        served: Rc::clone(&served),
        read_buffer: Rc::new(RefCell::new(vec![0; READ_SIZE])),
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

/// socket, SO_REUSEADDR, bind, listen (lesson 01), non-blocking (lesson 05).
fn open_listener(addr: SocketAddr) -> TcpListener {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
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

// ANCHOR: acceptor
/// The listening socket's handler: every readable event is connections to accept.
struct Acceptor {
    listener: TcpListener,
    /// Out of descriptors: not watching the listener until a timer says try again.
    paused: bool,
    served: Rc<Cell<usize>>,
    /// One read buffer for every connection: the loop runs one handler at a time.
    read_buffer: Rc<RefCell<Vec<u8>>>,
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
        // Until WouldBlock: one event may stand for many connections, and in
        // edge-triggered mode no new event comes for those already queued.
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let peers = show::peers(&stream);
                    if let Err(err) = stream.set_nonblocking(true) {
                        // That one connection is dropped; the listener stays.
                        log!("{} {peers}: cannot make it non-blocking: {err}", log::ERROR);
                        continue;
                    }
                    self.served.set(self.served.get() + 1);
                    if !self.quiet {
                        log!("{} {peers}", log::CONNECTED);
                    }
                    let read_buffer = Rc::clone(&self.read_buffer);
                    event_loop.add(Box::new(Connection::new(
                        stream,
                        peers,
                        read_buffer,
                        self.quiet,
                    )));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    log!(
                        "{} accept: {err}; pausing accept for {} ms",
                        log::ERROR,
                        ACCEPT_PAUSE.as_millis()
                    );
                    // readable() is false now, so the loop stops watching the listener
                    // (one epoll_ctl) until the timer below.
                    self.paused = true;
                    event_loop.wake_at(Instant::now() + ACCEPT_PAUSE);
                    return Ok(());
                }
                // ECONNABORTED and the like: that client is gone, try the next.
                Err(err) => log!("{} accept: {err}", log::ERROR),
            }
        }
    }
    fn handle_timeout(&mut self, _loop: &mut Context) -> io::Result<()> {
        // Watch the listener again. In edge-triggered mode, re-registering reports the
        // connections that queued up meanwhile: nothing is lost.
        self.paused = false;
        Ok(())
    }
}
// ANCHOR_END: acceptor

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
    // ANCHOR_END: pump

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

//! The single-thread echo servers of lessons 04 and 05, without their loop: one
//! client ([`EchoConnection`]: its non-blocking socket, the echo not yet sent, and
//! what to do when the kernel says the socket is ready), and all of them with the
//! listener they come from ([`EchoServer`]: accepting, pausing when descriptors run
//! out, closing). Lesson 04 teaches it around a select(2) loop; lesson 05 uses it
//! unchanged around a poll(2) loop. One copy, so that a fix made here reaches every
//! server that uses it.
//!
//! A loop asks [`EchoServer::accepting`] and each connection's
//! [`EchoConnection::wants_read`] and [`EchoConnection::wants_write`] what to ask
//! the kernel, waits, then gives the answer to [`EchoServer::accept_next`] and
//! [`EchoServer::handle`].

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::output::OutputBuffer;
use crate::{log, show};

// ANCHOR: constants
/// Bytes one read(2) may take from one connection per wake-up: the size of the one
/// read buffer a server shares between all its connections (it reads one at a time).
/// Reading at most this much before moving on keeps one busy client from starving
/// the others.
pub const READ_SIZE: usize = 64 * 1024;
/// The most echo one connection may have waiting to go out. At the cap the server
/// stops reading from it (its client sends but does not read): that client's own
/// TCP window then fills, and the kernel makes it wait. Memory per client stays
/// bounded.
pub const OUTPUT_CAP: usize = 1024 * 1024;
/// After accept(2) fails for lack of descriptors (EMFILE/ENFILE), stop watching the
/// listener for this long (or until a connection closes): the pending connection
/// keeps the listener readable, and watching it would spin the loop.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
// ANCHOR_END: constants

/// The words of the log line when a connection's output buffer reaches OUTPUT_CAP
/// (tests wait for it: reword it here and they follow).
pub const OUTPUT_FULL: &str = "output buffer full";
/// The first word of the log line of a server that closes a connection at once,
/// without serving it (lesson 04, at FD_SETSIZE).
pub const REFUSED: &str = "refused";

// ANCHOR: connection
/// One client: its socket, and the echo not yet written to it.
pub struct EchoConnection {
    stream: TcpStream,
    /// Both ends, for the log: `127.0.0.1:54012 -> 127.0.0.1:10001`.
    peers: String,
    /// Bytes received and not yet sent back: at most OUTPUT_CAP of them.
    output: OutputBuffer,
    /// The client half-closed (read returned 0): finish sending, then close.
    read_closed: bool,
    /// The output reached OUTPUT_CAP and reading stopped (logged when it changes).
    output_full: bool,
    /// Done: the server drops it, which closes the socket, after this round.
    closed: bool,
}
// ANCHOR_END: connection

impl EchoConnection {
    // ANCHOR: new
    /// A connection just accepted. Accepted sockets do not inherit O_NONBLOCK from
    /// the listener on Linux: set it, so that no read or write can ever block the loop.
    pub fn new(stream: TcpStream) -> io::Result<EchoConnection> {
        stream.set_nonblocking(true)?;
        let peers = show::peers(&stream);
        Ok(EchoConnection {
            stream,
            peers,
            output: OutputBuffer::new(OUTPUT_CAP),
            read_closed: false,
            output_full: false,
            closed: false,
        })
    }
    // ANCHOR_END: new

    /// Both ends of the connection, as the log shows them.
    pub fn peers(&self) -> &str {
        &self.peers
    }

    /// Done: the server should drop it now.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    // ANCHOR: interest
    /// Whether to ask the kernel "can I read?": only while the output buffer has room
    /// (the backpressure), and not after the client's half-close (a read would only
    /// say EOF again, at once, forever).
    pub fn wants_read(&self) -> bool {
        !self.read_closed && !self.output.is_full()
    }

    /// Whether to ask "can I write?": only while there is echo waiting. A socket is
    /// almost always writable, and asking anyway would wake the loop for nothing.
    pub fn wants_write(&self) -> bool {
        !self.output.is_empty()
    }
    // ANCHOR_END: interest

    // ANCHOR: handle
    /// Does what the kernel said this connection is ready for. Readable covers data,
    /// EOF and a pending error (a read returns it); writable covers room in the send
    /// buffer and a pending error (a write returns it). `read_buffer` is the server's
    /// one read buffer, at least as big as one read.
    pub fn handle(&mut self, readable: bool, writable: bool, read_buffer: &mut [u8], quiet: bool) {
        if readable && self.wants_read() {
            self.read_and_echo(read_buffer, quiet);
        }
        if writable && !self.closed && self.wants_write() {
            self.write_pending();
        }
        if self.closed {
            return;
        }
        if self.output.is_full() != self.output_full {
            self.output_full = self.output.is_full();
            if !quiet {
                let peers = &self.peers;
                if self.output_full {
                    log!("{peers}: {OUTPUT_FULL} (OUTPUT_CAP), not reading until the client reads");
                } else {
                    log!("{peers}: output buffer drained, reading again");
                }
            }
        }
        if self.read_closed && self.output.is_empty() {
            // The client half-closed and has all its echo: close our side too.
            if !quiet {
                log!("{} {}", log::DISCONNECTED, self.peers);
            }
            self.closed = true;
        }
    }
    // ANCHOR_END: handle

    // ANCHOR: read_and_echo
    /// One read(2), and the echo of what it brought.
    fn read_and_echo(&mut self, read_buffer: &mut [u8], quiet: bool) {
        // No more than the output buffer has room for, so that memory stays bounded.
        // (Not zero: the caller reads only while the buffer is not full.)
        let room = self.output.room().min(read_buffer.len());
        match self.stream.read(&mut read_buffer[..room]) {
            Ok(0) => self.read_closed = true,
            Ok(n) => {
                let received = &read_buffer[..n];
                if !quiet {
                    log!(
                        "{} {} from {}: {}",
                        log::RECEIVED,
                        show::count(n, "byte"),
                        self.peers,
                        show::bytes(received)
                    );
                }
                self.echo(received);
            }
            // Readiness was stale, or a signal came: nothing to do until the next round.
            Err(err) if is_transient(&err) => {}
            // ECONNRESET and friends: this client is gone; the server goes on.
            Err(err) => self.fail(&err),
        }
    }

    /// Sends `received` back. With nothing waiting before it, the echo goes at once,
    /// straight from the read buffer: usually the kernel takes it all, and nothing is
    /// copied or queued. Only what the kernel did not take waits in `output`, and
    /// from then on new data queues behind it, so the echo stays in order.
    fn echo(&mut self, received: &[u8]) {
        let mut sent_now = 0;
        if self.output.is_empty() {
            match self.stream.write(received) {
                Ok(written) => sent_now = written,
                Err(err) if is_transient(&err) => {}
                Err(err) => return self.fail(&err),
            }
        }
        self.output.push(&received[sent_now..]);
    }
    // ANCHOR_END: read_and_echo

    // ANCHOR: write_pending
    /// One write(2) of what waits in `output`. On a non-blocking socket the kernel
    /// takes what fits in its send buffer, maybe only part: the rest stays for the
    /// next time the socket is writable.
    fn write_pending(&mut self) {
        match self.output.write_to(&self.stream) {
            Ok(_) => {}
            Err(err) if is_transient(&err) => {}
            // EPIPE or ECONNRESET: the client is gone. Rust programs ignore SIGPIPE,
            // so this is an error value here, not the death of the process.
            Err(err) => self.fail(&err),
        }
    }
    // ANCHOR_END: write_pending

    // ANCHOR: fail
    /// One client's error: log it, close that connection, and nothing else.
    fn fail(&mut self, err: &io::Error) {
        log!("{} {}: {err}", log::DISCONNECTED, self.peers);
        self.closed = true;
    }
    // ANCHOR_END: fail
}

/// The socket's descriptor, for the server to put in its select sets or poll array.
impl AsFd for EchoConnection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

// ANCHOR: server
/// Everything a single-thread echo server keeps between two waits: the listener,
/// every connection, and the one read buffer they share (only one is read at a time).
pub struct EchoServer {
    listener: TcpListener,
    connections: Vec<EchoConnection>,
    read_buffer: Vec<u8>,
    /// Set after EMFILE/ENFILE: the listener is not watched until then.
    accept_paused_until: Option<Instant>,
    /// Clients accepted since the start, for the last line.
    served: usize,
    /// `--quiet`: log only errors (and the first and last lines).
    quiet: bool,
}
// ANCHOR_END: server

impl EchoServer {
    /// A server on a listener that must be non-blocking (`Accept::NonBlocking`).
    pub fn new(listener: TcpListener, quiet: bool) -> EchoServer {
        EchoServer {
            listener,
            connections: Vec::new(),
            read_buffer: vec![0; READ_SIZE],
            accept_paused_until: None,
            served: 0,
            quiet,
        }
    }

    /// The listening socket, for the loop to watch.
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// The open connections, in the order they were accepted.
    pub fn connections(&self) -> &[EchoConnection] {
        &self.connections
    }

    // ANCHOR: accept_pause
    /// Whether to ask the kernel about the listener this round: not while accepting
    /// is paused after EMFILE/ENFILE.
    pub fn accepting(&mut self) -> bool {
        match self.accept_paused_until {
            Some(until) if Instant::now() < until => false,
            _ => {
                self.accept_paused_until = None;
                true
            }
        }
    }

    /// While accepting is paused, the time until it resumes: the longest the loop may
    /// wait. (A loop should round it up to its timeout's unit: rounded down, the
    /// wait ends before the pause does, and the loop spins until it is over.)
    pub fn accept_pause_left(&self) -> Option<Duration> {
        self.accept_paused_until
            .map(|until| until.saturating_duration_since(Instant::now()))
    }
    // ANCHOR_END: accept_pause

    // ANCHOR: accept_next
    /// One accept(2) on the non-blocking listener, for a loop that accepts every queued
    /// connection (one readiness event may stand for many): the next client, or `None`
    /// when the queue is empty or descriptors ran out.
    pub fn accept_next(&mut self) -> Option<TcpStream> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => return Some(stream),
                // The queue is empty: back to waiting.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return None,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors, for this process (EMFILE) or the system (ENFILE).
                // The connection stays queued in the kernel; stop watching the listener
                // for a while instead of spinning on it.
                Err(err) if out_of_descriptors(&err) => {
                    log!(
                        "{} accept: {err}; pausing accept for {} ms ({} open)",
                        log::ERROR,
                        ACCEPT_PAUSE.as_millis(),
                        show::count(self.connections.len(), "connection")
                    );
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return None;
                }
                // ECONNABORTED and the like: that one client is gone; try the next.
                Err(err) => log!("{} accept: {err}", log::ERROR),
            }
        }
    }

    /// A new client: non-blocking from now on, logged, and watched from the next round.
    pub fn add(&mut self, stream: TcpStream) {
        match EchoConnection::new(stream) {
            Ok(connection) => {
                self.served += 1;
                if !self.quiet {
                    log!(
                        "{} {} ({} open)",
                        log::CONNECTED,
                        connection.peers(),
                        show::count(self.connections.len() + 1, "connection")
                    );
                }
                self.connections.push(connection);
            }
            Err(err) => log!(
                "{} cannot make a connection non-blocking: {err}",
                log::ERROR
            ),
        }
    }
    // ANCHOR_END: accept_next

    // ANCHOR: handle_ready
    /// The kernel's answer for the connections: `ready[i]` is (readable, writable) for
    /// connection i as [`connections`](Self::connections) listed them before the wait.
    /// Connections accepted since come after them, and wait for the next round.
    pub fn handle(&mut self, ready: &[(bool, bool)]) {
        let mut any_closed = false;
        for (connection, &(readable, writable)) in self.connections.iter_mut().zip(ready) {
            if readable || writable {
                connection.handle(readable, writable, &mut self.read_buffer, self.quiet);
            }
            any_closed |= connection.is_closed();
        }
        if any_closed {
            // Dropping a connection closes its socket.
            self.connections
                .retain(|connection| !connection.is_closed());
            // A descriptor was freed: if accept was paused for EMFILE, retry now.
            self.accept_paused_until = None;
        }
    }
    // ANCHOR_END: handle_ready

    // ANCHOR: shut_down
    /// Closes every connection (dropping them: close(2) on each socket, so each
    /// client reads EOF) and logs the last line, `shutting down (<reason>): ...`.
    pub fn shut_down(self, reason: &str) {
        let open = self.connections.len();
        drop(self.connections);
        log::last_line(format!(
            "{} ({reason}): served {}, closed {} still open",
            log::SHUTTING_DOWN,
            show::count(self.served, "client"),
            show::count(open, "connection")
        ));
    }
    // ANCHOR_END: shut_down
}

/// accept(2) failed with EMFILE (this process has all the descriptors it may have)
/// or ENFILE (the whole system has).
fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE)
    )
}

/// `WouldBlock` (the readiness was stale: another round will tell) and `Interrupted`
/// (a signal came first): not errors of the client, so the connection stays.
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

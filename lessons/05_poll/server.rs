//! Lesson 05, the server: an echo server that serves many clients from one thread,
//! asking the kernel with poll(2) which sockets are ready.
//!
//!   terminal 1: cargo run --bin 05_poll_server
//!   terminal 2: cargo run --bin 05_poll_client -- --conns 3 hello

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::{bind_failed, exit_with_error, show, signal};

const DEFAULT_PORT: u16 = 8009;
// ANCHOR: constants
/// Bytes one read(2) may take from one connection per wake-up. Reading at most this
/// much before moving on keeps one busy client from starving the others.
const READ_SIZE: usize = 64 * 1024;
/// When a connection has this much echo waiting to go out (its client sends but does
/// not read), we stop reading from it until it drains: the client's own TCP window
/// then fills and the kernel makes it wait. Memory per client stays bounded.
const OUTPUT_CAP: usize = 1024 * 1024;
/// After accept(2) fails for lack of descriptors (EMFILE/ENFILE), stop watching the
/// listener for this long (or until a connection closes): the pending connection
/// keeps the listener readable, and watching it would spin the loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
// ANCHOR_END: constants

// ANCHOR: connection
/// One client: its socket, and the echo not yet written to it.
struct Connection {
    stream: TcpStream,
    peers: String,
    /// Bytes received and not yet sent back; `output[sent..]` is what is left.
    output: Vec<u8>,
    sent: usize,
    /// The client half-closed (read returned 0): finish sending, then close.
    read_closed: bool,
    /// The output reached OUTPUT_CAP and reading stopped (logged when it changes).
    output_full: bool,
    /// Set when the connection is done; it is removed after this round.
    closed: bool,
}
// ANCHOR_END: connection

impl Connection {
    fn pending(&self) -> usize {
        self.output.len() - self.sent
    }

    // ANCHOR: interest
    /// What to ask poll about for this connection. Readable only while its output has
    /// room (the backpressure), writable only while there is output: a socket is
    /// almost always writable, and asking anyway would wake the loop for nothing.
    fn interest(&self) -> PollFlags {
        let mut events = PollFlags::empty();
        if !self.read_closed && self.pending() < OUTPUT_CAP {
            events |= PollFlags::POLLIN;
        }
        if self.pending() > 0 {
            events |= PollFlags::POLLOUT;
        }
        events
    }
    // ANCHOR_END: interest
}

fn main() {
    let args = Cli::new(
        "05_poll_server",
        "Lesson 05: an echo server that serves many clients from one thread with poll(2).",
        DEFAULT_PORT,
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let quiet = args.flag("--quiet");
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    let listener = open_listener(addr);
    // Ctrl-C and SIGTERM make this socket readable; poll watches it with the others.
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    let bound = listener.local_addr().unwrap_or(addr);
    println!("listening on {bound}");

    let mut server = Server {
        listener,
        connections: Vec::new(),
        accept_paused_until: None,
        served: 0,
        quiet,
        read_buffer: vec![0; READ_SIZE],
    };
    let reason = server.run(&wakeup);
    // Dropping the connections closes them: close(2) on each socket.
    let open = server.connections.len();
    drop(server.connections);
    println!(
        "shutting down ({reason}): served {}, closed {} still open",
        show::count(server.served, "client"),
        show::count(open, "connection")
    );
}

/// socket, SO_REUSEADDR, bind, listen (lesson 01), then O_NONBLOCK.
fn open_listener(addr: SocketAddr) -> TcpListener {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a TCP socket: {err}")));
    if let Err(err) = socket.set_reuse_address(true) {
        exit_with_error(&format!("cannot set SO_REUSEADDR: {err}"));
    }
    if let Err(err) = socket.bind(&addr.into()) {
        exit_with_error(&bind_failed(addr, &err));
    }
    if let Err(err) = socket.listen(128) {
        exit_with_error(&format!("cannot listen on {addr}: {err}"));
    }
    // ANCHOR: nonblocking_listener
    // Non-blocking: poll says the listener is readable when a connection is queued,
    // but the client may reset it before we accept; a blocking accept would then
    // wait for the next client and freeze every other connection meanwhile.
    if let Err(err) = socket.set_nonblocking(true) {
        exit_with_error(&format!("cannot make the listener non-blocking: {err}"));
    }
    // ANCHOR_END: nonblocking_listener
    TcpListener::from(socket)
}

struct Server {
    listener: TcpListener,
    connections: Vec<Connection>,
    /// Set after EMFILE: the listener is not watched until then.
    accept_paused_until: Option<Instant>,
    served: usize,
    quiet: bool,
    /// One read buffer for every connection: only one is read at a time.
    read_buffer: Vec<u8>,
}

impl Server {
    /// The event loop. Returns why it stopped.
    fn run(&mut self, wakeup: &UnixStream) -> &'static str {
        loop {
            // ANCHOR: poll_call
            // One pollfd per descriptor: [wake-up, listener, connection 0, 1, ...].
            // poll(2) takes the whole list every call and the kernel scans all of it:
            // the cost grows with the number of connections, busy or idle.
            let accepting = match self.accept_paused_until {
                Some(until) if Instant::now() < until => false,
                _ => {
                    self.accept_paused_until = None;
                    true
                }
            };
            let mut fds = Vec::with_capacity(2 + self.connections.len());
            fds.push(PollFd::new(wakeup.as_fd(), PollFlags::POLLIN));
            let listener_events = if accepting {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            };
            fds.push(PollFd::new(self.listener.as_fd(), listener_events));
            for connection in &self.connections {
                fds.push(PollFd::new(
                    connection.stream.as_fd(),
                    connection.interest(),
                ));
            }
            // Wait without a timeout, unless accepting is paused and must resume.
            let timeout = match self.accept_paused_until {
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                // A signal interrupted the wait (EINTR): just wait again.
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    eprintln!("error: poll failed: {err}");
                    return "poll failed";
                }
            }
            // What happened, copied out so that `fds` stops borrowing the sockets.
            let ready: Vec<PollFlags> = fds
                .iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            // ANCHOR_END: poll_call

            // ANCHOR: dispatch
            if !ready[0].is_empty() {
                return "signal";
            }
            if ready[1].contains(PollFlags::POLLIN) {
                self.accept_all();
            }
            let mut any_closed = false;
            for (connection, events) in self.connections.iter_mut().zip(&ready[2..]) {
                if !events.is_empty() {
                    handle(connection, *events, &mut self.read_buffer, self.quiet);
                }
                any_closed |= connection.closed;
            }
            if any_closed {
                // Dropping a Connection closes its socket.
                self.connections.retain(|connection| !connection.closed);
                // A descriptor was freed: if accept was paused for EMFILE, retry now.
                self.accept_paused_until = None;
            }
            // ANCHOR_END: dispatch
        }
    }

    // ANCHOR: accept_all
    /// Accepts every queued connection: one readiness event may stand for many.
    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // Accepted sockets do not inherit O_NONBLOCK on Linux: set it, so
                    // that no read or write can ever block the loop.
                    if let Err(err) = stream.set_nonblocking(true) {
                        println!("error: cannot make a connection non-blocking: {err}");
                        continue;
                    }
                    let peers = show::peers(&stream);
                    self.served += 1;
                    if !self.quiet {
                        println!(
                            "connected {peers} ({} open)",
                            show::count(self.connections.len() + 1, "connection")
                        );
                    }
                    self.connections.push(Connection {
                        stream,
                        peers,
                        output: Vec::new(),
                        sent: 0,
                        read_closed: false,
                        output_full: false,
                        closed: false,
                    });
                }
                // The queue is empty: back to poll.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors, for this process (EMFILE) or the system (ENFILE).
                // The connection stays queued in the kernel; stop watching the listener
                // for a while instead of spinning on it.
                Err(err)
                    if matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) =>
                {
                    println!(
                        "error: accept: {err}; pausing accept for {} ms ({} open)",
                        ACCEPT_PAUSE.as_millis(),
                        show::count(self.connections.len(), "connection")
                    );
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                // ECONNABORTED and the like: that one client is gone; try the next.
                Err(err) => println!("error: accept: {err}"),
            }
        }
    }
    // ANCHOR_END: accept_all
}

// ANCHOR: handle
/// Does what poll said this connection is ready for.
fn handle(connection: &mut Connection, events: PollFlags, read_buffer: &mut [u8], quiet: bool) {
    // POLLERR or POLLHUP with nothing to read: the connection failed or is fully
    // closed. A read then returns the error (e.g. ECONNRESET) or 0.
    let broken = events.intersects(PollFlags::POLLERR | PollFlags::POLLHUP);
    if events.contains(PollFlags::POLLIN) || (broken && !connection.read_closed) {
        read_some(connection, read_buffer, quiet);
    }
    let writable = events.contains(PollFlags::POLLOUT) || broken;
    if writable && !connection.closed && connection.pending() > 0 {
        write_some(connection);
    }
    let full = connection.pending() >= OUTPUT_CAP;
    if full != connection.output_full && !connection.closed {
        connection.output_full = full;
        let change = if full {
            "output buffer full (OUTPUT_CAP), not reading until the client reads"
        } else {
            "output buffer drained, reading again"
        };
        if !quiet {
            println!("{}: {change}", connection.peers);
        }
    }
    if !connection.closed && connection.read_closed && connection.pending() == 0 {
        // The client half-closed and has all its echo: close our side too.
        if !quiet {
            println!("disconnected {}", connection.peers);
        }
        connection.closed = true;
    }
}
// ANCHOR_END: handle

// ANCHOR: read_some
fn read_some(connection: &mut Connection, buffer: &mut [u8], quiet: bool) {
    // Not more than the output cap allows, so that memory stays bounded.
    let room = (OUTPUT_CAP - connection.pending().min(OUTPUT_CAP)).clamp(1, buffer.len());
    match connection.stream.read(&mut buffer[..room]) {
        Ok(0) => connection.read_closed = true,
        Ok(n) => {
            let received = &buffer[..n];
            if !quiet {
                println!(
                    "received {} from {}: {}",
                    show::count(n, "byte"),
                    connection.peers,
                    show::bytes(received)
                );
            }
            // Nothing waiting to go out before it: send the echo at once, straight
            // from this buffer. Usually the kernel takes it all, and nothing is
            // copied or queued; only what does not fit waits in `output`.
            let mut sent_now = 0;
            if connection.pending() == 0 {
                connection.output.clear();
                connection.sent = 0;
                match connection.stream.write(received) {
                    Ok(written) => sent_now = written,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        println!("disconnected {}: {err}", connection.peers);
                        connection.closed = true;
                        return;
                    }
                }
            }
            connection.output.extend_from_slice(&received[sent_now..]);
        }
        // Readiness was stale (or the data went to another reader): nothing to do.
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
        // ECONNRESET and friends: this client is gone; the server goes on.
        Err(err) => {
            println!("disconnected {}: {err}", connection.peers);
            connection.closed = true;
        }
    }
}
// ANCHOR_END: read_some

// ANCHOR: write_some
fn write_some(connection: &mut Connection) {
    // write(2) on a non-blocking socket takes what fits in the kernel's send buffer,
    // maybe only part: the rest stays in `output` for the next POLLOUT.
    match connection
        .stream
        .write(&connection.output[connection.sent..])
    {
        Ok(n) => {
            connection.sent += n;
            if connection.sent == connection.output.len() {
                connection.output.clear();
                connection.sent = 0;
            } else if connection.sent > OUTPUT_CAP {
                // Drop the part already sent, so the buffer does not grow forever.
                connection.output.drain(..connection.sent);
                connection.sent = 0;
            }
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
        // EPIPE or ECONNRESET: the client is gone. Rust programs ignore SIGPIPE, so
        // this is an error value here, not the death of the process.
        Err(err) => {
            println!("disconnected {}: {err}", connection.peers);
            connection.closed = true;
        }
    }
}
// ANCHOR_END: write_some

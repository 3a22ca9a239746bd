//! The framework, part 2: the servers. Their options, what the serving loop shares
//! with `shutdown()`, and `TcpServer` and `UdpServer` (socket, bind, listen, the
//! serving loop). The loop's wait, and how each request is then run, are part 3
//! (concurrency.rs).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use workbook::live::LiveConnections;
use workbook::{bind_failed, log, show};

use super::GRACE;
use super::concurrency::{AdmittedRequest, Concurrency, ServerContext};
use super::request::{
    self, DatagramRequest, HandleError, Handler, RequestError, RequestLogging, StreamRequest,
    VerifyRequest,
};
use crate::log_words::REJECTED;

/// The pause after an error that may repeat at once (EMFILE from accept), so that it
/// does not spin a core. The wait is on the wake-up, so a shutdown still ends it at once.
pub const ERROR_PAUSE: Duration = Duration::from_millis(100);
/// One recv_from(2) reads one whole datagram if the buffer can hold the largest (lesson 03).
const MAX_DATAGRAM: usize = 65_536;

// ANCHOR: options
/// The settings Python keeps as class attributes and overridable methods.
pub struct ServerOptions {
    /// Set SO_REUSEADDR before bind (lesson 02). Python's default is False; the
    /// workbook's servers have always set it, for TCP. Keep it false for UDP (lesson 03).
    pub allow_reuse_address: bool,
    /// The backlog passed to listen(2): how many finished handshakes may wait for
    /// accept (lesson 01). Python's default is 5.
    pub request_queue_size: i32,
    /// Asked about every client before any handler is made: `Err(reason)` closes the
    /// connection at once (TCP) or leaves the datagram unanswered (UDP).
    pub verify_request: Arc<VerifyRequest>,
    /// Told about every request that fails, or whose handler panics. The server goes
    /// on whatever it does. It may run in a forked child: log with `log_line`.
    pub handle_error: Arc<HandleError>,
    /// Log only errors, and the first and last lines.
    pub quiet: bool,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            allow_reuse_address: true,
            request_queue_size: 5,
            verify_request: Arc::new(|_| Ok(())),
            handle_error: Arc::new(request::log_error),
            quiet: false,
        }
    }
}
// ANCHOR_END: options

// ANCHOR: server_state
/// What the serving loop, the request threads and `shutdown()` share.
pub struct ServerState {
    /// The requests this process is serving (sync and threading modes), with their
    /// sockets, so that shutdown can end a read that is blocked: lesson 06's registry,
    /// from `src/live.rs`. Each request that leaves wakes the loop.
    connections: Arc<LiveConnections>,
    /// Set when `serve_forever` has returned (Python's `__is_shut_down` event).
    loop_finished: Mutex<bool>,
    loop_finished_changed: Condvar,
}
// ANCHOR_END: server_state

impl ServerState {
    pub fn new(connections: Arc<LiveConnections>) -> ServerState {
        ServerState {
            connections,
            loop_finished: Mutex::new(false),
            loop_finished_changed: Condvar::new(),
        }
    }

    /// The requests this process is serving.
    pub fn connections(&self) -> &Arc<LiveConnections> {
        &self.connections
    }

    /// The lock, even after a panic elsewhere: a bool is always in a usable state.
    fn loop_finished(&self) -> MutexGuard<'_, bool> {
        self.loop_finished
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_loop_finished(&self) {
        *self.loop_finished() = true;
        self.loop_finished_changed.notify_all();
    }

    /// Waits up to `limit` for `serve_forever` to return; true if it has.
    fn wait_loop_finished(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut finished = self.loop_finished();
        while !*finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            finished = match self.loop_finished_changed.wait_timeout(finished, left) {
                Ok((finished, _)) => finished,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

/// `shutdown()` for another thread: cloned out of the server before `serve_forever`.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<ServerState>);

impl ShutdownHandle {
    // ANCHOR: shutdown
    /// Stops `serve_forever`: no new request is taken, every request this process is
    /// serving sees the end of its input (shutdown(SHUT_RD), as lesson 06 did), and the
    /// loop is woken. Like Python's, it then waits until `serve_forever` has returned,
    /// but for at most GRACE: a handler still blocked after that (writing to a client
    /// that does not read) is cut off with shutdown(SHUT_RDWR). It runs on the signal
    /// thread, so it logs nothing and takes only locks that nobody holds for long.
    pub fn shutdown(&self) {
        let state = &self.0;
        state.connections.begin_shutdown();
        if !state.wait_loop_finished(GRACE) {
            state.connections.finish(Duration::ZERO);
        }
    }
    // ANCHOR_END: shutdown
}

/// The steps of `serve_forever` that TcpServer and UdpServer share: the wait, the
/// concurrency strategy, `verify_request`, and the count of requests served.
struct ServerLoop {
    context: ServerContext,
    concurrency: Box<dyn Concurrency>,
    logging: RequestLogging,
    verify_request: Arc<VerifyRequest>,
    served: u64,
}

impl ServerLoop {
    fn new(
        options: &ServerOptions,
        mut concurrency: Box<dyn Concurrency>,
        listener: Option<RawFd>,
    ) -> Result<ServerLoop, String> {
        let context = ServerContext::new(options.quiet, listener)?;
        concurrency.start(&context)?;
        Ok(ServerLoop {
            context,
            concurrency,
            logging: RequestLogging {
                quiet: options.quiet,
                handle_error: Arc::clone(&options.handle_error),
            },
            verify_request: Arc::clone(&options.verify_request),
            served: 0,
        })
    }

    fn stopping(&self) -> bool {
        self.context.connections().is_stopping()
    }

    fn at_bound(&self) -> bool {
        self.concurrency.at_bound(&self.context)
    }

    /// One wait of the serving loop, then the strategy's housekeeping.
    fn wait(&mut self, socket: Option<BorrowedFd<'_>>, timeout: Option<Duration>) -> bool {
        let readable = self.context.wait(socket, timeout);
        self.concurrency.service_actions(&self.context);
        readable
    }

    fn process_request(&mut self, request: AdmittedRequest) {
        self.served += 1;
        self.concurrency.process_request(request, &self.context);
    }

    fn finished(&self) {
        self.context.state().set_loop_finished();
    }

    fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(self.context.state()))
    }

    fn close(&mut self, what: &str) -> String {
        let end = self.concurrency.server_close(&self.context);
        format!("served {}{end}", show::count(self.served as usize, what))
    }
}

/// An accept(2) or recv(2) error that only means: go back to waiting.
fn transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
    )
}

/// What every server offers: Python's `BaseServer`.
pub trait BaseServer {
    /// The address actually bound (Python: `server_address`).
    fn server_address(&self) -> SocketAddr;
    /// The transport and the concurrency, for the log.
    fn describe(&self) -> String;
    /// A handle on which another thread can call `shutdown()`.
    fn shutdown_handle(&self) -> ShutdownHandle;
    /// Serves until `shutdown()` is called.
    fn serve_forever(&mut self);
    /// Ends what is still running, waits for all of it, closes the socket; returns the
    /// summary for the last line: `served 3 clients, all threads joined`.
    fn server_close(self) -> String;
}

/// A TCP server: Python's `TCPServer`, with the concurrency of your choice.
pub struct TcpServer<F> {
    listener: TcpListener,
    address: SocketAddr,
    server_loop: ServerLoop,
    factory: Arc<F>,
}

impl<F, H> TcpServer<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: Handler<StreamRequest>,
{
    // ANCHOR: tcp_bind
    /// socket, SO_REUSEADDR (if allowed), bind, listen: Python's `server_bind` and
    /// `server_activate`, done by its constructor. `factory` makes one handler per
    /// request. (Not `workbook::listener::open`: that one always sets SO_REUSEADDR and
    /// ends the process when it cannot bind; this one leaves both to its caller.)
    pub fn bind(
        addr: SocketAddr,
        options: &ServerOptions,
        concurrency: Box<dyn Concurrency>,
        factory: F,
    ) -> Result<TcpServer<F>, String> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|err| format!("cannot create a TCP socket: {err}"))?;
        if options.allow_reuse_address {
            socket
                .set_reuse_address(true)
                .map_err(|err| format!("cannot set SO_REUSEADDR: {err}"))?;
        }
        socket
            .bind(&addr.into())
            .map_err(|err| bind_failed(addr, &err))?;
        socket
            .listen(options.request_queue_size)
            .map_err(|err| format!("cannot listen on {addr}: {err}"))?;
        // Non-blocking: the loop accepts only when poll(2) says a connection is queued,
        // and a client that gave up in between must not leave us blocked in accept.
        socket
            .set_nonblocking(true)
            .map_err(|err| format!("cannot make the listener non-blocking: {err}"))?;
        let listener = TcpListener::from(socket);
        let address = listener.local_addr().unwrap_or(addr);
        let server_loop = ServerLoop::new(options, concurrency, Some(listener.as_raw_fd()))?;
        Ok(TcpServer {
            listener,
            address,
            server_loop,
            factory: Arc::new(factory),
        })
    }
    // ANCHOR_END: tcp_bind

    // ANCHOR: handle_request
    /// Python's `_handle_request_noblock`: verify the client, then process the request
    /// the way the concurrency strategy does.
    fn handle_request(&mut self, stream: TcpStream, client_address: SocketAddr) {
        let peers = show::peers(&stream);
        let logging = self.server_loop.logging.clone();
        if let Err(reason) = (self.server_loop.verify_request)(client_address) {
            if !logging.quiet {
                workbook::log!("{REJECTED} {peers}: {reason}");
            }
            return; // dropping the stream closes the connection
        }
        // Linux gives accepted sockets blocking mode whatever the listener's; other
        // systems copy it. The handler wants blocking reads and writes.
        if let Err(err) = stream.set_nonblocking(false) {
            (logging.handle_error)(&peers, &RequestError::Io(err));
            return;
        }
        let socket = Arc::new(stream);
        let for_request = Arc::clone(&socket);
        let factory = Arc::clone(&self.factory);
        let request_peers = peers.clone();
        let run = Box::new(move |label: &str| {
            request::serve_stream(
                &*factory,
                for_request,
                client_address,
                request_peers,
                label,
                &logging,
            )
        });
        self.server_loop.process_request(AdmittedRequest {
            peers,
            socket: Some(socket),
            run,
        });
    }
    // ANCHOR_END: handle_request
}

impl<F, H> BaseServer for TcpServer<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: Handler<StreamRequest>,
{
    fn server_address(&self) -> SocketAddr {
        self.address
    }

    fn describe(&self) -> String {
        format!(
            "TCP, {}",
            self.server_loop.concurrency.describe("connection")
        )
    }

    fn shutdown_handle(&self) -> ShutdownHandle {
        self.server_loop.shutdown_handle()
    }

    // ANCHOR: serve_forever
    fn serve_forever(&mut self) {
        while !self.server_loop.stopping() {
            // At the bound: wait for a thread or a child to end (or for shutdown),
            // without accepting. New clients wait in the listen backlog meanwhile.
            if self.server_loop.at_bound() {
                self.server_loop.wait(None, None);
                continue;
            }
            if !self.server_loop.wait(Some(self.listener.as_fd()), None)
                || self.server_loop.stopping()
            {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, client_address)) => self.handle_request(stream, client_address),
                Err(err) if transient(&err) => {}
                Err(err) => {
                    // EMFILE and the like: the connection stays queued; try again soon.
                    workbook::log!("{} accept: {err}", log::ERROR);
                    self.server_loop.wait(None, Some(ERROR_PAUSE));
                }
            }
        }
        self.server_loop.finished();
    }
    // ANCHOR_END: serve_forever

    fn server_close(mut self) -> String {
        let summary = self.server_loop.close("client");
        drop(self.listener);
        summary
    }
}

/// A UDP server: Python's `UDPServer`. Each datagram is one request.
pub struct UdpServer<F> {
    socket: Arc<UdpSocket>,
    address: SocketAddr,
    server_loop: ServerLoop,
    factory: Arc<F>,
}

impl<F, H> UdpServer<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: Handler<DatagramRequest>,
{
    /// socket, SO_REUSEADDR (if allowed: better not, see lesson 03), bind. No listen.
    pub fn bind(
        addr: SocketAddr,
        options: &ServerOptions,
        concurrency: Box<dyn Concurrency>,
        factory: F,
    ) -> Result<UdpServer<F>, String> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|err| format!("cannot create a UDP socket: {err}"))?;
        if options.allow_reuse_address {
            socket
                .set_reuse_address(true)
                .map_err(|err| format!("cannot set SO_REUSEADDR: {err}"))?;
        }
        socket
            .bind(&addr.into())
            .map_err(|err| bind_failed(addr, &err))?;
        socket
            .set_nonblocking(true)
            .map_err(|err| format!("cannot make the socket non-blocking: {err}"))?;
        let socket = UdpSocket::from(socket);
        let address = socket.local_addr().unwrap_or(addr);
        // No listener to close in a forked child: it replies from this very socket.
        let server_loop = ServerLoop::new(options, concurrency, None)?;
        Ok(UdpServer {
            socket: Arc::new(socket),
            address,
            server_loop,
            factory: Arc::new(factory),
        })
    }

    fn handle_request(&mut self, data: Vec<u8>, client_address: SocketAddr) {
        let logging = self.server_loop.logging.clone();
        if let Err(reason) = (self.server_loop.verify_request)(client_address) {
            if !logging.quiet {
                workbook::log!("{REJECTED} {client_address}: {reason}");
            }
            return;
        }
        let request = DatagramRequest::new(data, client_address, Arc::clone(&self.socket));
        let factory = Arc::clone(&self.factory);
        let run =
            Box::new(move |_label: &str| request::serve_datagram(&*factory, request, &logging));
        self.server_loop.process_request(AdmittedRequest {
            peers: client_address.to_string(),
            socket: None,
            run,
        });
    }
}

impl<F, H> BaseServer for UdpServer<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: Handler<DatagramRequest>,
{
    fn server_address(&self) -> SocketAddr {
        self.address
    }

    fn describe(&self) -> String {
        format!("UDP, {}", self.server_loop.concurrency.describe("datagram"))
    }

    fn shutdown_handle(&self) -> ShutdownHandle {
        self.server_loop.shutdown_handle()
    }

    // ANCHOR: udp_serve_forever
    fn serve_forever(&mut self) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        while !self.server_loop.stopping() {
            if self.server_loop.at_bound() {
                // Datagrams queue in the socket's receive buffer meanwhile (and are
                // dropped by the kernel once it is full: UDP promises nothing).
                self.server_loop.wait(None, None);
                continue;
            }
            if !self.server_loop.wait(Some(self.socket.as_fd()), None)
                || self.server_loop.stopping()
            {
                continue;
            }
            match self.socket.recv_from(&mut buffer) {
                Ok((size, sender)) => self.handle_request(buffer[..size].to_vec(), sender),
                Err(err) if transient(&err) => {}
                Err(err) => {
                    workbook::log!("{} recv_from: {err}", log::ERROR);
                    self.server_loop.wait(None, Some(ERROR_PAUSE));
                }
            }
        }
        self.server_loop.finished();
    }
    // ANCHOR_END: udp_serve_forever

    fn server_close(mut self) -> String {
        self.server_loop.close("datagram")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{Synchronous, Threading};
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::thread;

    /// Panics on `panic\r\n`, answers `ok\r\n` to anything else.
    struct Fragile;

    impl Handler<StreamRequest> for Fragile {
        fn handle(&mut self, request: &mut StreamRequest) -> io::Result<()> {
            use std::io::BufRead;
            let mut line = String::new();
            while request.rfile.read_line(&mut line)? > 0 {
                if line == "panic\r\n" {
                    panic!("asked to");
                }
                request.wfile.write_all(b"ok\r\n")?;
                request.wfile.flush()?;
                line.clear();
            }
            Ok(())
        }
    }

    fn ask(addr: SocketAddr, line: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(line).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        reply
    }

    /// A handler that panics ends its request only; the server serves the next one,
    /// and handle_error is told.
    fn survives_a_panic(concurrency: Box<dyn Concurrency>) {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&errors);
        let options = ServerOptions {
            quiet: true,
            handle_error: Arc::new(move |_peers, err| seen.lock().unwrap().push(err.to_string())),
            ..ServerOptions::default()
        };
        let addr = "127.0.0.1:0".parse().unwrap();
        let mut server = TcpServer::bind(addr, &options, concurrency, || Fragile).unwrap();
        let addr = server.server_address();
        let stop = server.shutdown_handle();
        let serving = thread::spawn(move || {
            server.serve_forever();
            server.server_close()
        });
        assert_eq!(ask(addr, b"panic\r\n"), b"");
        assert_eq!(ask(addr, b"hello\r\n"), b"ok\r\n");
        stop.shutdown();
        let summary = serving.join().unwrap();
        assert!(summary.starts_with("served 2 clients"), "{summary}");
        let errors = errors.lock().unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("panicked: asked to"), "{errors:?}");
    }

    #[test]
    fn sync_server_survives_a_panicking_handler() {
        survives_a_panic(Box::new(Synchronous));
    }

    #[test]
    fn threading_server_survives_a_panicking_handler() {
        survives_a_panic(Box::new(Threading::new(4)));
    }
}

//! The framework, part 1: a request and its handler. What a handler is (Python's
//! `BaseRequestHandler`), what it gets for TCP and for UDP, and how the server runs one
//! request from start to end, wherever it runs (on the serving thread, on a thread of
//! its own, in a child process).

use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use workbook::log;

use super::log_line;

// ANCHOR: handler
/// What to do with one request: Python's `BaseRequestHandler`. The server makes a fresh
/// handler for every request (with the factory it was given) and calls `setup`, then
/// `handle`, then `finish`, on the thread or in the process that serves the request.
/// As in Python, `finish` runs even when `handle` failed, but not when `setup` did.
pub trait Handler<R> {
    /// Before `handle`: per-request preparation. Default: nothing.
    fn setup(&mut self, _request: &mut R) -> io::Result<()> {
        Ok(())
    }

    /// The work: read the request, write the reply.
    fn handle(&mut self, request: &mut R) -> io::Result<()>;

    /// After `handle`: clean-up. Default: nothing.
    fn finish(&mut self, _request: &mut R) -> io::Result<()> {
        Ok(())
    }
}
// ANCHOR_END: handler

/// One TCP connection, shared by a request's `rfile` and `wfile` and by the server,
/// which shuts it down on Ctrl-C. `&TcpStream` reads and writes, so all of them use
/// one socket and one descriptor (a `try_clone` for each file would cost a dup(2)).
#[derive(Clone)]
pub struct Connection(Arc<TcpStream>);

impl Read for Connection {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buffer)
    }
}

impl Write for Connection {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        (&*self.0).write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ANCHOR: stream_request
/// A TCP request as a handler sees it: the attributes of Python's `StreamRequestHandler`.
pub struct StreamRequest {
    /// Buffered reads from the client (Python: `self.rfile`).
    pub rfile: BufReader<Connection>,
    /// Buffered writes to the client (Python: `self.wfile`). Nothing is sent until it
    /// is flushed (or full); the server flushes it after `finish`.
    pub wfile: BufWriter<Connection>,
    client_address: SocketAddr,
    peers: String,
    socket: Arc<TcpStream>,
}

impl StreamRequest {
    fn new(socket: Arc<TcpStream>, client_address: SocketAddr, peers: String) -> StreamRequest {
        let connection = Connection(Arc::clone(&socket));
        StreamRequest {
            rfile: BufReader::new(connection.clone()),
            wfile: BufWriter::new(connection),
            client_address,
            peers,
            socket,
        }
    }

    /// The client's address and port (Python: `self.client_address`).
    #[allow(dead_code)] // The lesson's handler logs `peers`; yours may want this.
    pub fn client_address(&self) -> SocketAddr {
        self.client_address
    }

    /// Both ends, `client -> server`, for log lines.
    pub fn peers(&self) -> &str {
        &self.peers
    }

    /// The socket itself (Python: `self.request`), for what the files do not do:
    /// options, `shutdown`.
    #[allow(dead_code)] // Not needed by the lesson's handler: see the exercises.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }
}
// ANCHOR_END: stream_request

/// The largest UDP payload over IPv4: the 16-bit length of the IP packet, 65,535,
/// less the IPv4 header (20 bytes) and the UDP header (8).
pub const MAX_IPV4_DATAGRAM: usize = 65_507;
/// The largest UDP payload over IPv6: its 16-bit length does not count the IPv6 header
/// itself, so only the UDP header comes off (jumbograms aside).
pub const MAX_IPV6_DATAGRAM: usize = 65_527;

// ANCHOR: datagram_request
/// A UDP request: one datagram, and the way back to its sender (Python's
/// `DatagramRequestHandler` has `self.request == (data, socket)`).
pub struct DatagramRequest {
    data: Vec<u8>,
    client_address: SocketAddr,
    socket: Arc<UdpSocket>,
}

impl DatagramRequest {
    pub(super) fn new(
        data: Vec<u8>,
        client_address: SocketAddr,
        socket: Arc<UdpSocket>,
    ) -> DatagramRequest {
        DatagramRequest {
            data,
            client_address,
            socket,
        }
    }

    /// The datagram, whole (empty is a valid datagram).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Who sent it: the only way to know where to reply.
    pub fn client_address(&self) -> SocketAddr {
        self.client_address
    }

    /// The longest reply that one datagram to the sender can carry: 65,507 bytes over
    /// IPv4, 65,527 over IPv6. A longer one is not sent at all: sendto(2) fails with
    /// EMSGSIZE. (An IPv4 client of an IPv6 socket, `::ffff:a.b.c.d`, is IPv4.)
    pub fn max_reply_size(&self) -> usize {
        match self.client_address.ip().to_canonical() {
            IpAddr::V4(_) => MAX_IPV4_DATAGRAM,
            IpAddr::V6(_) => MAX_IPV6_DATAGRAM,
        }
    }

    /// Sends `reply` as one datagram to the sender, from the server's socket.
    pub fn reply(&self, reply: &[u8]) -> io::Result<()> {
        loop {
            match self.socket.send_to(reply, self.client_address) {
                Ok(_) => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
    }
}
// ANCHOR_END: datagram_request

/// Why a request failed: what `handle_error` is told.
#[derive(Debug)]
pub enum RequestError {
    /// `setup`, `handle` or `finish` returned an error (a reset, a failed write...).
    Io(io::Error),
    /// The handler panicked; the message of the panic.
    Panicked(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Io(err) => write!(f, "{err}"),
            RequestError::Panicked(message) => write!(f, "the handler panicked: {message}"),
        }
    }
}

/// `verify_request`: `Ok(())` admits a client, `Err(reason)` rejects it.
pub type VerifyRequest = dyn Fn(SocketAddr) -> Result<(), String> + Send + Sync;
/// `handle_error`: told the peers (as in the log) and what went wrong.
pub type HandleError = dyn Fn(&str, &RequestError) + Send + Sync;

/// `handle_error` unless the server is given another: one `error:` line.
pub fn log_error(peers: &str, err: &RequestError) {
    log_line(format!("{} {peers}: {err}", log::ERROR));
}

/// What a request needs for its log, wherever it runs.
#[derive(Clone)]
pub struct RequestLogging {
    /// No `connected`/`disconnected` lines; errors only.
    pub quiet: bool,
    pub handle_error: Arc<HandleError>,
}

// ANCHOR: finish_request
/// Python's `finish_request` and the body of `BaseRequestHandler.__init__`: a fresh
/// handler, then setup, handle and finish. A panic in the handler is caught here and
/// becomes an error like any other: one request's bug never takes the server down.
fn finish_request<R, H, F>(factory: &F, request: &mut R) -> Result<(), RequestError>
where
    H: Handler<R>,
    F: Fn() -> H,
{
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut handler = factory();
        handler.setup(request)?;
        let handled = handler.handle(request);
        let finished = handler.finish(request);
        handled.and(finished)
    }));
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(RequestError::Io(err)),
        Err(payload) => {
            let message = match (
                payload.downcast_ref::<&str>(),
                payload.downcast_ref::<String>(),
            ) {
                (Some(text), _) => text.to_string(),
                (_, Some(text)) => text.clone(),
                _ => "(no message)".to_string(),
            };
            Err(RequestError::Panicked(message))
        }
    }
}
// ANCHOR_END: finish_request

/// One TCP request from start to end, on whatever thread or process runs it. `label`
/// says which (` (thread req-3)`, ` (pid 4242)`, or nothing). True if all went well.
pub fn serve_stream<H, F>(
    factory: &F,
    socket: Arc<TcpStream>,
    client_address: SocketAddr,
    peers: String,
    label: &str,
    logging: &RequestLogging,
) -> bool
where
    H: Handler<StreamRequest>,
    F: Fn() -> H,
{
    if !logging.quiet {
        log_line(format!("{} {peers}{label}", log::CONNECTED));
    }
    let mut request = StreamRequest::new(socket, client_address, peers);
    let outcome = finish_request(factory, &mut request)
        .and_then(|()| request.wfile.flush().map_err(RequestError::Io));
    if let Err(err) = &outcome {
        (logging.handle_error)(request.peers(), err);
    }
    if !logging.quiet {
        log_line(format!("{} {}", log::DISCONNECTED, request.peers()));
    }
    outcome.is_ok()
}

/// One datagram from start to end.
pub fn serve_datagram<H, F>(
    factory: &F,
    mut request: DatagramRequest,
    logging: &RequestLogging,
) -> bool
where
    H: Handler<DatagramRequest>,
    F: Fn() -> H,
{
    let outcome = finish_request(factory, &mut request);
    if let Err(err) = &outcome {
        (logging.handle_error)(&request.client_address.to_string(), err);
    }
    outcome.is_ok()
}

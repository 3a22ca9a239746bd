//! Lesson 10, the framework: a small Rust version of Python's `socketserver`.
//!
//! Python splits a server in two: a *request handler* says what to do with one client,
//! a *server* says how clients are taken in and how many are served at once. Here:
//!
//! - [`Handler`]: `setup`, `handle`, `finish`, on a fresh handler for every request;
//! - [`StreamRequest`] (TCP: `rfile`, `wfile`, the client's address) and
//!   [`DatagramRequest`] (UDP: the datagram, and `reply` to its sender);
//! - [`TcpServer`] and [`UdpServer`]: socket, bind, listen, `serve_forever`, `server_close`;
//! - [`Synchronous`], [`Threading`], [`Forking`]: Python's mixins, how requests are run;
//! - [`ServerOptions`]: `allow_reuse_address`, `request_queue_size`, `verify_request`,
//!   `handle_error`;
//! - [`ShutdownHandle`]: `shutdown()`, callable from another thread (the signal handler's).
//!
//! The serving loop waits in poll(2) on its socket and on one end of a socket pair, the
//! *wake-up*: `shutdown()`, a request thread that ends and a child process that exits
//! (SIGCHLD) each write a byte to the other end. So the loop sleeps until there is
//! something to do, and never polls on a timer.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use socket2::{Domain, Protocol, Socket, Type};
use workbook::{bind_failed, show};

/// How long requests still running at shutdown get to finish before they are cut off.
pub const GRACE: Duration = Duration::from_secs(1);
/// The pause after an error that may repeat at once (EMFILE from accept), so that it
/// does not spin a core. The wait is on the wake-up, so a shutdown still ends it at once.
const ERROR_PAUSE: Duration = Duration::from_millis(100);
/// One recv_from(2) reads one whole datagram if the buffer can hold the largest (lesson 03).
const MAX_DATAGRAM: usize = 65_536;

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

// ANCHOR: datagram_request
/// A UDP request: one datagram, and the way back to its sender (Python's
/// `DatagramRequestHandler` has `self.request == (data, socket)`).
pub struct DatagramRequest {
    data: Vec<u8>,
    client_address: SocketAddr,
    socket: Arc<UdpSocket>,
}

impl DatagramRequest {
    /// The datagram, whole (empty is a valid datagram).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Who sent it: the only way to know where to reply.
    pub fn client_address(&self) -> SocketAddr {
        self.client_address
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
    /// on whatever it does.
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
            handle_error: Arc::new(|peers, err| println!("error: {peers}: {err}")),
            quiet: false,
        }
    }
}
// ANCHOR_END: options

/// What a request needs from the options, wherever it runs.
#[derive(Clone)]
struct Logs {
    quiet: bool,
    handle_error: Arc<HandleError>,
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
fn serve_stream<H, F>(
    factory: &F,
    socket: Arc<TcpStream>,
    client_address: SocketAddr,
    peers: String,
    label: &str,
    logs: &Logs,
) -> bool
where
    H: Handler<StreamRequest>,
    F: Fn() -> H,
{
    if !logs.quiet {
        println!("connected {peers}{label}");
    }
    let mut request = StreamRequest::new(socket, client_address, peers);
    let outcome = finish_request(factory, &mut request)
        .and_then(|()| request.wfile.flush().map_err(RequestError::Io));
    if let Err(err) = &outcome {
        (logs.handle_error)(request.peers(), err);
    }
    if !logs.quiet {
        println!("disconnected {}", request.peers());
    }
    outcome.is_ok()
}

/// One datagram from start to end.
fn serve_datagram<H, F>(factory: &F, mut request: DatagramRequest, logs: &Logs) -> bool
where
    H: Handler<DatagramRequest>,
    F: Fn() -> H,
{
    let outcome = finish_request(factory, &mut request);
    if let Err(err) = &outcome {
        (logs.handle_error)(&request.client_address.to_string(), err);
    }
    outcome.is_ok()
}

/// What the serving loop, the request threads and `shutdown()` share.
pub struct Control {
    stopping: AtomicBool,
    /// The write end of the wake-up pair: a byte written here wakes the loop's poll(2).
    waker: UnixStream,
    /// The requests this process is serving (sync and threading modes), by number, with
    /// their socket for TCP, so that shutdown can end a read that is blocked.
    in_flight: Mutex<HashMap<u64, Option<Arc<TcpStream>>>>,
    /// Set when `serve_forever` has returned (Python's `__is_shut_down` event).
    loop_done: Mutex<bool>,
    loop_done_changed: Condvar,
}

impl Control {
    /// Wakes the serving loop. Non-blocking: a full pipe means a wake-up is pending.
    fn wake(&self) {
        let _ = (&self.waker).write(&[1]);
    }

    /// The lock, even after a panic elsewhere: the map is always in a usable state.
    fn in_flight(&self) -> MutexGuard<'_, HashMap<u64, Option<Arc<TcpStream>>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self, number: u64, socket: Option<Arc<TcpStream>>) {
        let mut in_flight = self.in_flight();
        // Accepted just as shutdown() went through the map: cut its reads now.
        if self.stopping.load(Ordering::SeqCst) {
            if let Some(socket) = &socket {
                let _ = socket.shutdown(Shutdown::Read);
            }
        }
        in_flight.insert(number, socket);
    }

    fn unregister(&self, number: u64) {
        self.in_flight().remove(&number);
        self.wake();
    }

    fn cut_all(&self, how: Shutdown) {
        for socket in self.in_flight().values().flatten() {
            let _ = socket.shutdown(how);
        }
    }

    fn set_loop_done(&self) {
        let mut done = self
            .loop_done
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *done = true;
        self.loop_done_changed.notify_all();
    }

    /// Waits up to `limit` for `serve_forever` to return; true if it has.
    fn wait_loop_done(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut done = self
            .loop_done
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while !*done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = match self.loop_done_changed.wait_timeout(done, left) {
                Ok((done, _)) => done,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

/// `shutdown()` for another thread: cloned out of the server before `serve_forever`.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Control>);

impl ShutdownHandle {
    // ANCHOR: shutdown
    /// Stops `serve_forever`: no new request is taken, every request this process is
    /// serving sees the end of its input (shutdown(SHUT_RD), as lesson 06 did), and the
    /// loop is woken. Like Python's, it then waits until `serve_forever` has returned,
    /// but for at most GRACE: a handler still blocked after that (writing to a client
    /// that does not read) is cut off with shutdown(SHUT_RDWR).
    pub fn shutdown(&self) {
        let control = &self.0;
        {
            let in_flight = control.in_flight();
            control.stopping.store(true, Ordering::SeqCst);
            for socket in in_flight.values().flatten() {
                let _ = socket.shutdown(Shutdown::Read);
            }
        }
        control.wake();
        if !control.wait_loop_done(GRACE) {
            control.cut_all(Shutdown::Both);
        }
    }
    // ANCHOR_END: shutdown
}

/// What a concurrency strategy may use from its server.
pub struct Env {
    control: Arc<Control>,
    /// The read end of the wake-up pair.
    wake_reader: UnixStream,
    quiet: bool,
    /// The listening socket, which a forked child closes at once (TCP only).
    listener: Option<RawFd>,
}

impl Env {
    /// Sleeps in poll(2) until `socket` is readable (returns true), something wakes the
    /// server (a shutdown, a request that ended, a child that exited), or `timeout`.
    fn wait(&self, socket: Option<BorrowedFd<'_>>, timeout: Option<Duration>) -> bool {
        let mut fds = vec![PollFd::new(self.wake_reader.as_fd(), PollFlags::POLLIN)];
        if let Some(socket) = socket {
            fds.push(PollFd::new(socket, PollFlags::POLLIN));
        }
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(limit) => PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX),
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            // A signal (SIGCHLD) landed on this thread; its byte is in the pipe.
            Err(Errno::EINTR) => return false,
            Err(err) => {
                println!("error: poll: {err}");
                thread::sleep(ERROR_PAUSE);
                return false;
            }
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|events| !events.is_empty());
        let woken = ready(&fds[0]);
        let readable = fds.get(1).is_some_and(ready);
        drop(fds);
        if woken {
            // Empty the wake-up pair: the byte has done its job.
            let mut sink = [0u8; 64];
            while matches!((&self.wake_reader).read(&mut sink), Ok(1..)) {}
        }
        readable
    }
}

// ANCHOR: job
/// One admitted request, as `process_request` gets it: Python's `(request,
/// client_address)` with the work to do already packed in `run`.
pub struct Job {
    number: u64,
    peers: String,
    /// TCP: the connection, so that a forked child can stop its reads on SIGTERM.
    socket: Option<Arc<TcpStream>>,
    /// Serves the request from start to end; its argument names who runs it, for the
    /// log. True if all went well.
    run: Box<dyn FnOnce(&str) -> bool + Send>,
}
// ANCHOR_END: job

// ANCHOR: concurrency
/// How requests are run: Python's mixins (`ThreadingMixIn`, `ForkingMixIn`). The
/// server calls these from its loop; the same three serve TCP and UDP.
pub trait Concurrency: Send {
    /// For the log: `threading: a thread per connection, at most 64 at once`.
    fn describe(&self, per: &str) -> String;

    /// Called once, before the first request (the forking server installs its
    /// SIGCHLD handler here).
    fn start(&mut self, _env: &Env) -> Result<(), String> {
        Ok(())
    }

    /// True while no more requests may start: the server then stops taking them (new
    /// clients wait in the listen backlog) until something ends.
    fn at_bound(&self, env: &Env) -> bool;

    /// Runs one request: here, on a thread of its own, or in a child process.
    fn process_request(&mut self, job: Job, env: &Env);

    /// After every wake-up of the loop: join finished threads, reap exited children.
    fn service_actions(&mut self, env: &Env);

    /// After the loop: give what still runs GRACE to finish, cut off the rest, and
    /// wait for all of it. Returns the end of the last log line.
    fn server_close(&mut self, env: &Env) -> &'static str;
}
// ANCHOR_END: concurrency

/// One request at a time, on the serving thread: Python's plain `TCPServer`.
pub struct Synchronous;

impl Concurrency for Synchronous {
    fn describe(&self, per: &str) -> String {
        format!("sync: one {per} at a time")
    }

    fn at_bound(&self, _env: &Env) -> bool {
        false
    }

    fn process_request(&mut self, job: Job, env: &Env) {
        let Job {
            number,
            socket,
            run,
            ..
        } = job;
        env.control.register(number, socket);
        run("");
        env.control.unregister(number);
    }

    fn service_actions(&mut self, _env: &Env) {}

    fn server_close(&mut self, _env: &Env) -> &'static str {
        ""
    }
}

/// A thread per request, at most `max_threads` at once: Python's `ThreadingMixIn`
/// (which has no bound).
pub struct Threading {
    max_threads: usize,
    threads: Vec<JoinHandle<()>>,
}

impl Threading {
    pub fn new(max_threads: usize) -> Threading {
        Threading {
            max_threads,
            threads: Vec::new(),
        }
    }
}

/// Runs when a request thread ends, even by a panic: the request leaves the map and
/// the serving loop is woken (it may be waiting for a free slot).
struct Done {
    control: Arc<Control>,
    number: u64,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.control.unregister(self.number);
    }
}

impl Concurrency for Threading {
    fn describe(&self, per: &str) -> String {
        format!(
            "threading: a thread per {per}, at most {} at once",
            self.max_threads
        )
    }

    fn at_bound(&self, env: &Env) -> bool {
        env.control.in_flight().len() >= self.max_threads
    }

    // ANCHOR: threading
    fn process_request(&mut self, job: Job, env: &Env) {
        let Job {
            number,
            peers,
            socket,
            run,
        } = job;
        // Registered here, before the thread exists, so that at_bound counts it at once.
        env.control.register(number, socket);
        let control = Arc::clone(&env.control);
        let name = format!("req-{number}");
        let label = format!(" (thread {name})");
        let spawned = thread::Builder::new().name(name).spawn(move || {
            let _done = Done { control, number };
            run(&label);
        });
        match spawned {
            Ok(handle) => self.threads.push(handle),
            // Out of threads or memory (EAGAIN): this request is dropped, the server goes on.
            Err(err) => {
                println!("error: {peers}: cannot start a thread: {err}");
                env.control.unregister(number);
            }
        }
    }
    // ANCHOR_END: threading

    fn service_actions(&mut self, _env: &Env) {
        let (finished, running): (Vec<_>, Vec<_>) = self
            .threads
            .drain(..)
            .partition(|handle| handle.is_finished());
        self.threads = running;
        for handle in finished {
            // A panic was caught inside the request already; this cannot block.
            let _ = handle.join();
        }
    }

    fn server_close(&mut self, env: &Env) -> &'static str {
        // shutdown() has cut every request's reads: most threads are ending already.
        let deadline = Instant::now() + GRACE;
        while !env.control.in_flight().is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                env.control.cut_all(Shutdown::Both);
                break;
            }
            env.wait(None, Some(left));
        }
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        ", all threads joined"
    }
}

/// A child process per request, at most `max_children` at once: Python's
/// `ForkingMixIn` (whose `max_children` is 40 too).
pub struct Forking {
    max_children: usize,
    children: BTreeSet<i32>,
}

impl Forking {
    pub fn new(max_children: usize) -> Forking {
        Forking {
            max_children,
            children: BTreeSet::new(),
        }
    }

    // ANCHOR: reap
    /// Collects every child that has exited: waitpid(-1, WNOHANG) returns one exited
    /// child's status and frees what the kernel kept of it (a zombie), or says that the
    /// children left are all still running (StillAlive), or that there are none (ECHILD).
    fn reap(&mut self, env: &Env) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            self.reaped(status, env);
        }
    }
    // ANCHOR_END: reap

    fn reaped(&mut self, status: WaitStatus, env: &Env) {
        let Some(pid) = status.pid() else { return };
        self.children.remove(&pid.as_raw());
        let how = match status {
            WaitStatus::Exited(_, code) => format!("exit status {code}"),
            WaitStatus::Signaled(_, signal, _) => format!("killed by {signal}"),
            other => format!("{other:?}"),
        };
        // A child that did not exit 0 is an error, logged even with --quiet.
        let failed = !matches!(status, WaitStatus::Exited(_, 0));
        if failed || !env.quiet {
            let left = match self.children.len() {
                1 => "1 child".to_string(),
                n => format!("{n} children"),
            };
            println!("reaped pid {pid}: {how} ({left} still running)");
        }
    }
}

/// The wake-up socket for the SIGCHLD handler; -1 when there is none.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// In a forked child: its connection, which SIGTERM and SIGINT stop reading; -1: none.
static CHILD_CONNECTION: AtomicI32 = AtomicI32::new(-1);

// ANCHOR: sigchld
/// The SIGCHLD handler: the self-pipe trick. A signal handler may interrupt any code,
/// even malloc or println holding a lock, so it may only call async-signal-safe
/// functions (man 7 signal-safety); write(2) is one. The byte wakes the serving
/// loop's poll(2), and the loop, as ordinary code, reaps.
extern "C" fn child_exited(_signal: libc::c_int) {
    // write(2) may change errno under the code this signal interrupted: put it back.
    let saved = Errno::last_raw();
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; `fd` is the wake-up socket, open for as
        // long as this handler is installed; the buffer is a valid 1-byte array.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
    Errno::set_raw(saved);
}

/// Installs `child_exited` for SIGCHLD (with `Some(wake-up)`), or restores the default.
fn watch_children(wake: Option<RawFd>) -> Result<(), String> {
    let handler = match wake {
        Some(fd) => {
            WAKE_FD.store(fd, Ordering::SeqCst);
            SigHandler::Handler(child_exited)
        }
        None => SigHandler::SigDfl,
    };
    // SA_RESTART: calls interrupted by SIGCHLD on other threads carry on by themselves.
    // SA_NOCLDSTOP: no signal when a child is merely stopped (Ctrl-Z).
    let action = SigAction::new(
        handler,
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler calls only async-signal-safe functions (see child_exited).
    unsafe { signal::sigaction(Signal::SIGCHLD, &action) }
        .map_err(|err| format!("cannot install the SIGCHLD handler: {err}"))?;
    if wake.is_none() {
        WAKE_FD.store(-1, Ordering::SeqCst);
    }
    Ok(())
}
// ANCHOR_END: sigchld

/// A forked child's SIGINT and SIGTERM handler: stop reading the connection, as
/// shutdown(SHUT_RD) did for lesson 06's threads. The handler's blocked read returns
/// 0, it finishes the reply in hand, and the child exits. shutdown(2) is
/// async-signal-safe.
extern "C" fn stop_reading(_signal: libc::c_int) {
    let saved = Errno::last_raw();
    let fd = CHILD_CONNECTION.load(Ordering::SeqCst);
    if fd >= 0 {
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Read);
    }
    Errno::set_raw(saved);
}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

impl Concurrency for Forking {
    fn describe(&self, per: &str) -> String {
        format!(
            "forking: a child process per {per}, at most {} at once",
            self.max_children
        )
    }

    fn start(&mut self, env: &Env) -> Result<(), String> {
        watch_children(Some(env.control.waker.as_raw_fd()))
    }

    fn at_bound(&self, _env: &Env) -> bool {
        self.children.len() >= self.max_children
    }

    // ANCHOR: fork
    fn process_request(&mut self, job: Job, env: &Env) {
        // The child gets a copy of everything, unwritten output included: flush it now,
        // or the child would print it a second time.
        let _ = io::stdout().flush();
        // Ctrl-C and SIGTERM wait (blocked) until the child has its own handlers.
        let mut old_mask = SigSet::empty();
        let _ = signal::pthread_sigmask(
            SigmaskHow::SIG_BLOCK,
            Some(&stop_signals()),
            Some(&mut old_mask),
        );
        // SAFETY: the child starts with this thread only. It takes no lock that our
        // other thread could hold at this moment: that is the signal thread, whose
        // shutdown() writes to the wake-up pair and takes only the in-flight and
        // loop-done locks, which the child never touches (see the chapter).
        match unsafe { fork() } {
            Ok(ForkResult::Child) => run_child(job, env, &old_mask),
            Ok(ForkResult::Parent { child }) => {
                self.children.insert(child.as_raw());
                // Dropping the job closes our copy of the connection; the child has its
                // own. Keep it, and the client never sees the connection end (the
                // socket lives while any process has it open), and we run out of
                // descriptors after about a thousand clients.
                drop(job);
            }
            // EAGAIN (too many processes) or ENOMEM: this client is dropped (and its
            // connection closed with the job); the server goes on.
            Err(err) => println!("error: {}: cannot fork: {err}", job.peers),
        }
        let _ = signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    }
    // ANCHOR_END: fork

    fn service_actions(&mut self, env: &Env) {
        self.reap(env);
    }

    // ANCHOR: forking_close
    fn server_close(&mut self, env: &Env) -> &'static str {
        // Ask every child to stop reading (their handler: see stop_reading).
        for pid in &self.children {
            let _ = signal::kill(Pid::from_raw(*pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        loop {
            self.reap(env);
            if self.children.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Still busy after GRACE (writing to a client that does not read):
                // SIGKILL cannot be caught, then a blocking waitpid per child.
                for pid in std::mem::take(&mut self.children) {
                    let pid = Pid::from_raw(pid);
                    let _ = signal::kill(pid, Signal::SIGKILL);
                    loop {
                        match waitpid(pid, None) {
                            Err(Errno::EINTR) => continue,
                            Ok(status) => self.reaped(status, env),
                            Err(_) => {}
                        }
                        break;
                    }
                }
                break;
            }
            // Woken by SIGCHLD as each child exits.
            env.wait(None, Some(left));
        }
        let _ = watch_children(None);
        ", all children reaped"
    }
    // ANCHOR_END: forking_close
}

// ANCHOR: child
/// The child process: serves one request, then `_exit`. Never returns.
fn run_child(job: Job, env: &Env, mask: &SigSet) -> ! {
    // The listening socket is the parent's: a child that kept it open would keep the
    // port in LISTEN after the parent is gone (the kernel would still queue clients
    // nobody accepts). The TcpListener value is never dropped here: we _exit.
    if let Some(listener) = env.listener {
        let _ = nix::unistd::close(listener);
    }
    // The parent's handlers for Ctrl-C and SIGTERM write to a pipe read by a thread
    // that exists only in the parent. Ours: stop reading (TCP), or die (UDP).
    let connection = job.socket.as_ref().map_or(-1, |socket| socket.as_raw_fd());
    CHILD_CONNECTION.store(connection, Ordering::SeqCst);
    let on_stop = if connection >= 0 {
        SigHandler::Handler(stop_reading)
    } else {
        SigHandler::SigDfl
    };
    let stop = SigAction::new(on_stop, SaFlags::SA_RESTART, SigSet::empty());
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: stop_reading calls only async-signal-safe functions.
    unsafe {
        let _ = signal::sigaction(Signal::SIGINT, &stop);
        let _ = signal::sigaction(Signal::SIGTERM, &stop);
        let _ = signal::sigaction(Signal::SIGCHLD, &default);
    }
    let _ = signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(mask), None);

    let ok = (job.run)(&format!(" (pid {})", std::process::id()));

    let _ = io::stdout().flush();
    // _exit(2), not exit(3) nor std::process::exit: those run the exit handlers the
    // parent registered and flush the C library's buffers, which are the parent's
    // copies. The kernel closes our descriptors, and the parent is sent SIGCHLD.
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}
// ANCHOR_END: child

/// What both servers share: the wake-up, the concurrency strategy, the counters.
struct Core {
    env: Env,
    concurrency: Box<dyn Concurrency>,
    logs: Logs,
    verify_request: Arc<VerifyRequest>,
    served: u64,
}

impl Core {
    fn new(
        options: &ServerOptions,
        mut concurrency: Box<dyn Concurrency>,
        listener: Option<RawFd>,
    ) -> Result<Core, String> {
        let failed = |err: io::Error| format!("cannot create the wake-up pair: {err}");
        let (wake_reader, waker) = UnixStream::pair().map_err(failed)?;
        wake_reader.set_nonblocking(true).map_err(failed)?;
        waker.set_nonblocking(true).map_err(failed)?;
        let control = Arc::new(Control {
            stopping: AtomicBool::new(false),
            waker,
            in_flight: Mutex::new(HashMap::new()),
            loop_done: Mutex::new(false),
            loop_done_changed: Condvar::new(),
        });
        let env = Env {
            control,
            wake_reader,
            quiet: options.quiet,
            listener,
        };
        concurrency.start(&env)?;
        Ok(Core {
            env,
            concurrency,
            logs: Logs {
                quiet: options.quiet,
                handle_error: Arc::clone(&options.handle_error),
            },
            verify_request: Arc::clone(&options.verify_request),
            served: 0,
        })
    }

    fn stopping(&self) -> bool {
        self.env.control.stopping.load(Ordering::SeqCst)
    }

    fn at_bound(&self) -> bool {
        self.concurrency.at_bound(&self.env)
    }

    /// One wait of the serving loop, then the strategy's housekeeping.
    fn wait(&mut self, socket: Option<BorrowedFd<'_>>, timeout: Option<Duration>) -> bool {
        let readable = self.env.wait(socket, timeout);
        self.concurrency.service_actions(&self.env);
        readable
    }

    fn process_request(
        &mut self,
        peers: String,
        socket: Option<Arc<TcpStream>>,
        run: Box<dyn FnOnce(&str) -> bool + Send>,
    ) {
        self.served += 1;
        let job = Job {
            number: self.served,
            peers,
            socket,
            run,
        };
        self.concurrency.process_request(job, &self.env);
    }

    fn close(&mut self, what: &str) -> String {
        let end = self.concurrency.server_close(&self.env);
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
    core: Core,
    factory: Arc<F>,
}

impl<F, H> TcpServer<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: Handler<StreamRequest>,
{
    // ANCHOR: tcp_bind
    /// socket, SO_REUSEADDR (if allowed), bind, listen: Python's `server_bind` and
    /// `server_activate`, done by its constructor. `factory` makes one handler per request.
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
        let core = Core::new(options, concurrency, Some(listener.as_raw_fd()))?;
        Ok(TcpServer {
            listener,
            address,
            core,
            factory: Arc::new(factory),
        })
    }
    // ANCHOR_END: tcp_bind

    // ANCHOR: handle_request
    /// Python's `_handle_request_noblock`: verify the client, then process the request
    /// the way the concurrency strategy does.
    fn handle_request(&mut self, stream: TcpStream, client_address: SocketAddr) {
        let peers = show::peers(&stream);
        if let Err(reason) = (self.core.verify_request)(client_address) {
            if !self.core.logs.quiet {
                println!("rejected {peers}: {reason}");
            }
            return; // dropping the stream closes the connection
        }
        // Linux gives accepted sockets blocking mode whatever the listener's; other
        // systems copy it. The handler wants blocking reads and writes.
        if let Err(err) = stream.set_nonblocking(false) {
            (self.core.logs.handle_error)(&peers, &RequestError::Io(err));
            return;
        }
        let socket = Arc::new(stream);
        let for_request = Arc::clone(&socket);
        let factory = Arc::clone(&self.factory);
        let logs = self.core.logs.clone();
        let request_peers = peers.clone();
        let run = Box::new(move |label: &str| {
            serve_stream(
                &*factory,
                for_request,
                client_address,
                request_peers,
                label,
                &logs,
            )
        });
        self.core.process_request(peers, Some(socket), run);
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
        format!("TCP, {}", self.core.concurrency.describe("connection"))
    }

    fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.core.env.control))
    }

    // ANCHOR: serve_forever
    fn serve_forever(&mut self) {
        while !self.core.stopping() {
            // At the bound: wait for a thread or a child to end (or for shutdown),
            // without accepting. New clients wait in the listen backlog meanwhile.
            if self.core.at_bound() {
                self.core.wait(None, None);
                continue;
            }
            if !self.core.wait(Some(self.listener.as_fd()), None) || self.core.stopping() {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, client_address)) => self.handle_request(stream, client_address),
                Err(err) if transient(&err) => {}
                Err(err) => {
                    // EMFILE and the like: the connection stays queued; try again soon.
                    println!("error: accept: {err}");
                    self.core.wait(None, Some(ERROR_PAUSE));
                }
            }
        }
        self.core.env.control.set_loop_done();
    }
    // ANCHOR_END: serve_forever

    fn server_close(mut self) -> String {
        let summary = self.core.close("client");
        drop(self.listener);
        summary
    }
}

/// A UDP server: Python's `UDPServer`. Each datagram is one request.
pub struct UdpServer<F> {
    socket: Arc<UdpSocket>,
    address: SocketAddr,
    core: Core,
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
        let core = Core::new(options, concurrency, None)?;
        Ok(UdpServer {
            socket: Arc::new(socket),
            address,
            core,
            factory: Arc::new(factory),
        })
    }

    fn handle_request(&mut self, data: Vec<u8>, client_address: SocketAddr) {
        if let Err(reason) = (self.core.verify_request)(client_address) {
            if !self.core.logs.quiet {
                println!("rejected {client_address}: {reason}");
            }
            return;
        }
        let request = DatagramRequest {
            data,
            client_address,
            socket: Arc::clone(&self.socket),
        };
        let factory = Arc::clone(&self.factory);
        let logs = self.core.logs.clone();
        let run = Box::new(move |_label: &str| serve_datagram(&*factory, request, &logs));
        self.core
            .process_request(client_address.to_string(), None, run);
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
        format!("UDP, {}", self.core.concurrency.describe("datagram"))
    }

    fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.core.env.control))
    }

    // ANCHOR: udp_serve_forever
    fn serve_forever(&mut self) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        while !self.core.stopping() {
            if self.core.at_bound() {
                // Datagrams queue in the socket's receive buffer meanwhile (and are
                // dropped by the kernel once it is full: UDP promises nothing).
                self.core.wait(None, None);
                continue;
            }
            if !self.core.wait(Some(self.socket.as_fd()), None) || self.core.stopping() {
                continue;
            }
            match self.socket.recv_from(&mut buffer) {
                Ok((size, sender)) => self.handle_request(buffer[..size].to_vec(), sender),
                Err(err) if transient(&err) => {}
                Err(err) => {
                    println!("error: recv_from: {err}");
                    self.core.wait(None, Some(ERROR_PAUSE));
                }
            }
        }
        self.core.env.control.set_loop_done();
    }
    // ANCHOR_END: udp_serve_forever

    fn server_close(mut self) -> String {
        self.core.close("datagram")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

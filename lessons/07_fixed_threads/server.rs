//! Lesson 07, the server: a fixed set of worker threads sharing one listening socket.
//!
//! The socket is created, bound and listened on once; `--threads N` workers then each
//! loop on accept(2) of that same socket and serve the connection they got. At most N
//! clients are served at once; the next waits in the listen backlog until a worker is
//! free. Memory and thread count are fixed up front.
//!
//!   terminal 1: cargo run --bin 07_fixed_threads_server -- --threads 4
//!   terminal 2: cargo run --bin 07_fixed_threads_client -- --conns 5

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::{bind_failed, exit_with_error, show, signal};

const DEFAULT_PORT: u16 = 8081;
const READ_SIZE: usize = 64 * 1024;
/// How long busy workers get to finish after Ctrl-C.
const GRACE: Duration = Duration::from_secs(1);

/// What the workers, the signal handler and the main thread share.
struct Shared {
    state: Mutex<State>,
    /// Signalled on shutdown and when a worker finishes a connection.
    changed: Condvar,
    stopping: AtomicBool,
    threads: usize,
    quiet: bool,
}

#[derive(Default)]
struct State {
    /// The connection each busy worker is serving, so that shutdown can reach it.
    busy: HashMap<usize, Arc<TcpStream>>,
    served: u64,
}

impl Shared {
    /// The lock, even after a panic in a worker: the state is always usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn main() {
    let args = Cli::new(
        "07_fixed_threads_server",
        "Lesson 07: an echo server with a fixed set of threads sharing one listener.",
        DEFAULT_PORT,
    )
    .value(
        "--threads",
        "N",
        "how many worker threads accept and serve (default 4)",
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let threads: usize = args.get_or("--threads", 4);
    if !(1..=1024).contains(&threads) {
        args.usage_error("--threads must be 1 to 1024");
    }
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // ANCHOR: listen_once
    // socket, bind, listen: once, here, before any worker exists. Every worker gets
    // a handle to this one socket and calls accept(2) on it; the kernel gives each
    // queued connection to exactly one of the threads waiting in accept.
    let listener = Arc::new(open_listener(addr));
    // ANCHOR_END: listen_once

    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        stopping: AtomicBool::new(false),
        threads,
        quiet: args.flag("--quiet"),
    });
    // ANCHOR: signal
    // Ctrl-C: mark the server as stopping, then shutdown(2) the listening socket. On
    // Linux that makes every accept(2) blocked on it, in every worker, return at once
    // (with EINVAL). Closing the socket instead would not wake them, and the number
    // could be reused by a new socket while they still use it.
    let for_signal = Arc::clone(&shared);
    let listener_for_signal = Arc::clone(&listener);
    signal::on_shutdown(move || {
        let _state = for_signal.state();
        for_signal.stopping.store(true, Ordering::SeqCst);
        for_signal.changed.notify_all();
        let _ = socket2::SockRef::from(&*listener_for_signal).shutdown(Shutdown::Read);
    })
    .unwrap_or_else(|message| exit_with_error(&message));
    // ANCHOR_END: signal
    // ANCHOR: spawn_workers
    // The workers start together, after the `listening on` line: a Barrier holds
    // them until main has printed it, so that no worker's log line can come first.
    let start_line = Arc::new(Barrier::new(threads + 1));
    let mut workers = Vec::with_capacity(threads);
    for number in 1..=threads {
        let listener = Arc::clone(&listener);
        let shared = Arc::clone(&shared);
        let start_line = Arc::clone(&start_line);
        let spawned = thread::Builder::new()
            .name(format!("worker-{number}"))
            .spawn(move || {
                start_line.wait();
                worker(number, &listener, &shared);
            });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(err) => exit_with_error(&format!("cannot start worker-{number}: {err}")),
        }
    }
    let bound = listener.local_addr().unwrap_or(addr);
    println!("listening on {bound}");
    if !shared.quiet {
        println!("{threads} workers waiting in accept()");
    }
    start_line.wait();
    // ANCHOR_END: spawn_workers

    wait_for_shutdown(&shared);
    for handle in workers {
        // A worker that panicked has been reported already (see `Busy`).
        let _ = handle.join();
    }
    let served = shared.state().served;
    println!(
        "shutting down: served {} with {threads} workers, all joined",
        show::count(served as usize, "client")
    );
}

/// socket, SO_REUSEADDR, bind, listen: lesson 01's four steps.
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
    TcpListener::from(socket)
}

// ANCHOR: worker
/// One worker: accept a connection, serve it to the end, accept the next.
fn worker(number: usize, listener: &TcpListener, shared: &Arc<Shared>) {
    let name = format!("worker-{number}");
    while !shared.stopping.load(Ordering::SeqCst) {
        // Every idle worker is blocked right here, in accept(2) on the same socket.
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) if shared.stopping.load(Ordering::SeqCst) => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                // EMFILE and the like: log, pause so that a lasting error does not
                // spin, and go on.
                println!("error: {name}: accept: {err}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let peers = show::peers(&stream);
        // Shared with the busy map, through which shutdown can end a blocked read.
        let stream = Arc::new(stream);
        let _busy = Busy::start(number, &stream, shared, &peers);
        if let Err(err) = echo(&stream, &name, &peers, shared.quiet) {
            println!("error: {name}: {peers}: {err}");
        }
    }
}
// ANCHOR_END: worker

/// Marks a worker busy with one connection while it lives; when it is dropped (the
/// connection is done, or the worker panicked), the worker is idle again.
struct Busy<'a> {
    number: usize,
    peers: String,
    shared: &'a Shared,
}

impl<'a> Busy<'a> {
    fn start(number: usize, stream: &Arc<TcpStream>, shared: &'a Shared, peers: &str) -> Self {
        let for_shutdown = Arc::clone(stream);
        let mut state = shared.state();
        state.busy.insert(number, for_shutdown);
        state.served += 1;
        if !shared.quiet {
            println!(
                "worker-{number}: connected {peers} (busy {} of {})",
                state.busy.len(),
                shared.threads
            );
        }
        Busy {
            number,
            peers: peers.to_string(),
            shared,
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        state.busy.remove(&self.number);
        if thread::panicking() {
            println!("error: worker-{} panicked", self.number);
        }
        if !self.shared.quiet {
            println!(
                "worker-{}: disconnected {} (busy {} of {})",
                self.number,
                self.peers,
                state.busy.len(),
                self.shared.threads
            );
        }
        self.shared.changed.notify_all();
    }
}

/// The whole life of one connection, in blocking calls: this worker is busy with it
/// until the client closes, however slow the client is.
fn echo(mut stream: &TcpStream, name: &str, peers: &str, quiet: bool) -> io::Result<()> {
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if !quiet {
            let data = show::bytes(&buffer[..n]);
            println!(
                "{name}: received {} from {peers}: {data}",
                show::count(n, "byte")
            );
        }
        stream.write_all(&buffer[..n])?;
    }
}

// ANCHOR: shut_down
/// The main thread waits here for Ctrl-C. Then: the workers' accept calls have been
/// woken by the signal handler; tell every busy worker's client there is no more to
/// read, wait up to GRACE for them to finish, and cut off whoever is still busy.
fn wait_for_shutdown(shared: &Shared) {
    let mut state = shared.state();
    while !shared.stopping.load(Ordering::SeqCst) {
        state = shared
            .changed
            .wait(state)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
    for stream in state.busy.values() {
        let _ = stream.shutdown(Shutdown::Read);
    }
    let deadline = Instant::now() + GRACE;
    while !state.busy.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        state = match shared.changed.wait_timeout(state, left) {
            Ok((state, _)) => state,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
    for stream in state.busy.values() {
        let _ = stream.shutdown(Shutdown::Both);
    }
}
// ANCHOR_END: shut_down

//! Lesson 06, the server: an echo server with one thread per connection.
//!
//! The main thread only accepts; each connection gets a thread of its own that
//! blocks in read and write as lesson 01 did, and blocking one thread blocks nobody
//! else. `--max-threads` bounds how many such threads may live at once.
//!
//!   terminal 1: cargo run --bin 06_threaded_server
//!   terminal 2: cargo run --bin 06_threaded_client -- --hold 10 hello
//!   terminal 3: cargo run --bin 06_threaded_client -- --conns 1 "served meanwhile"

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::{bind_failed, exit_with_error, show, signal};

const DEFAULT_PORT: u16 = 8080;
const READ_SIZE: usize = 64 * 1024;
/// How long live connections get to finish after Ctrl-C.
const GRACE: Duration = Duration::from_secs(1);

// ANCHOR: shared_state
/// What the accepting thread and the connection threads share.
struct Shared {
    clients: Mutex<Clients>,
    /// Signalled when a connection thread ends (or on shutdown), to wake the
    /// accepting thread waiting for a free slot.
    changed: Condvar,
    stopping: AtomicBool,
    quiet: bool,
}

#[derive(Default)]
struct Clients {
    /// The live connections, by number, so that shutdown can reach their sockets.
    live: HashMap<u64, Arc<TcpStream>>,
    total: u64,
}
// ANCHOR_END: shared_state

impl Shared {
    /// The lock, even if a connection thread panicked while holding it: the map and
    /// the counter are always in a usable state, so a poisoned lock is no reason to
    /// stop serving.
    fn clients(&self) -> MutexGuard<'_, Clients> {
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn main() {
    let args = Cli::new(
        "06_threaded_server",
        "Lesson 06: an echo server with one thread per connection.",
        DEFAULT_PORT,
    )
    .value(
        "--max-threads",
        "N",
        "at most N connection threads at once; more clients wait in the backlog (default 256)",
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let max_threads: usize = args.get_or("--max-threads", 256);
    if max_threads == 0 {
        args.usage_error("--max-threads must be at least 1");
    }
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));
    let listener = open_listener(addr);

    let shared = Arc::new(Shared {
        clients: Mutex::new(Clients::default()),
        changed: Condvar::new(),
        stopping: AtomicBool::new(false),
        quiet: args.flag("--quiet"),
    });
    // ANCHOR: signal
    // Ctrl-C: mark the server as stopping, then shut down the listening socket. On
    // Linux, shutdown(2) on a listener makes an accept(2) blocked in another thread
    // return at once (with EINVAL); nothing else would wake it.
    let waker = listener
        .try_clone()
        .unwrap_or_else(|err| exit_with_error(&format!("cannot duplicate the listener: {err}")));
    let for_signal = Arc::clone(&shared);
    signal::on_shutdown(move || {
        // Under the lock, so the accepting thread cannot miss the notification
        // between checking `stopping` and starting to wait for a free slot.
        let _clients = for_signal.clients();
        for_signal.stopping.store(true, Ordering::SeqCst);
        for_signal.changed.notify_all();
        let _ = socket2::SockRef::from(&waker).shutdown(Shutdown::Read);
    })
    .unwrap_or_else(|message| exit_with_error(&message));
    // ANCHOR_END: signal
    let bound = listener.local_addr().unwrap_or(addr);
    println!("listening on {bound}");

    let mut threads = Vec::new();
    accept_loop(&listener, &shared, max_threads, &mut threads);
    drop(listener);
    shut_down(&shared, threads);
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

// ANCHOR: accept_loop
fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    max_threads: usize,
    threads: &mut Vec<JoinHandle<()>>,
) {
    loop {
        // At the bound, stop accepting until a connection thread ends. New clients
        // then wait in the kernel's listen backlog (their connect succeeds, they
        // are answered later) instead of being refused.
        {
            let mut clients = shared.clients();
            while clients.live.len() >= max_threads && !shared.stopping.load(Ordering::SeqCst) {
                clients = shared
                    .changed
                    .wait(clients)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) if shared.stopping.load(Ordering::SeqCst) => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                // EMFILE and the like: log, pause so that a lasting error does not
                // spin a core, and go on.
                println!("error: accept: {err}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Join the threads that have ended, so the list does not grow forever.
        threads.retain(|handle| !handle.is_finished());
        spawn_connection(stream, shared, threads);
    }
}
// ANCHOR_END: accept_loop

// ANCHOR: spawn
fn spawn_connection(stream: TcpStream, shared: &Arc<Shared>, threads: &mut Vec<JoinHandle<()>>) {
    let peers = show::peers(&stream);
    // The socket is shared by the connection's thread and the live map, through
    // which shutdown can reach a thread blocked in read(2). Sharing the one socket
    // (`&TcpStream` can read and write) costs no second descriptor, as dup(2) would.
    let stream = Arc::new(stream);
    let for_shutdown = Arc::clone(&stream);
    let number = {
        let mut clients = shared.clients();
        clients.total += 1;
        let number = clients.total;
        clients.live.insert(number, for_shutdown);
        if !shared.quiet {
            println!(
                "connected {peers} (thread conn-{number}; live {}, total {})",
                clients.live.len(),
                clients.total
            );
        }
        number
    };
    let for_thread = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("conn-{number}"))
        .spawn(move || {
            // Dropped when the thread ends, normally or by a panic: either way the
            // connection leaves the live map and the accepting thread is told.
            let _leaving = Leaving {
                shared: Arc::clone(&for_thread),
                number,
                peers: peers.clone(),
            };
            if let Err(err) = echo(&stream, &peers, for_thread.quiet) {
                println!("error: {peers}: {err}");
            }
        });
    match spawned {
        Ok(handle) => threads.push(handle),
        // Out of threads or memory (EAGAIN): this client is dropped, the server goes on.
        Err(err) => {
            println!("error: cannot start a thread for conn-{number}: {err}");
            shared.clients().live.remove(&number);
        }
    }
}
// ANCHOR_END: spawn

/// Runs when a connection thread ends, even by a panic.
struct Leaving {
    shared: Arc<Shared>,
    number: u64,
    peers: String,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        let mut clients = self.shared.clients();
        clients.live.remove(&self.number);
        if thread::panicking() {
            println!(
                "error: thread conn-{} panicked; the server goes on",
                self.number
            );
        }
        if !self.shared.quiet {
            println!(
                "disconnected {} (thread conn-{}; live {})",
                self.peers,
                self.number,
                clients.live.len()
            );
        }
        self.shared.changed.notify_all();
    }
}

// ANCHOR: echo
/// The whole life of one connection, in blocking calls: only this thread waits.
fn echo(mut stream: &TcpStream, peers: &str, quiet: bool) -> io::Result<()> {
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        let n = match stream.read(&mut buffer) {
            // The client closed or half-closed: everything read has been echoed.
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if !quiet {
            let data = show::bytes(&buffer[..n]);
            println!("received {} from {peers}: {data}", show::count(n, "byte"));
        }
        // Blocks while the client does not read: that stops this thread reading
        // more, which is the backpressure, and holds no other client up.
        stream.write_all(&buffer[..n])?;
    }
}
// ANCHOR_END: echo

// ANCHOR: shut_down
/// Stop: the listener is closed already. Tell every live connection there is no more
/// to read (its thread finishes the echo in hand and ends), wait up to GRACE, cut off
/// whoever is still busy, then join every thread.
fn shut_down(shared: &Shared, threads: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + GRACE;
    {
        let mut clients = shared.clients();
        for stream in clients.live.values() {
            // shutdown(SHUT_RD): a thread blocked in read(2) returns 0 at once.
            let _ = stream.shutdown(Shutdown::Read);
        }
        while !clients.live.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            clients = match shared.changed.wait_timeout(clients, left) {
                Ok((clients, _)) => clients,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        for stream in clients.live.values() {
            // Still writing to a client that does not read: cut the connection; its
            // write(2) fails and the thread ends.
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
    for handle in threads {
        // A thread that panicked has already been reported by its Leaving guard.
        let _ = handle.join();
    }
    let total = shared.clients().total;
    println!(
        "shutting down: served {}, all threads joined",
        show::count(total as usize, "client")
    );
}
// ANCHOR_END: shut_down

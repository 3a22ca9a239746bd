//! Lesson 07, the server: a fixed set of worker threads sharing one listening socket.
//!
//! The socket is created, bound and listened on once; `--threads N` workers then each
//! loop on accept(2) of that same socket and serve the connection they got. At most N
//! clients are served at once; the next waits in the listen backlog until a worker is
//! free. Memory and thread count are fixed up front. Shutdown reaches the busy
//! workers through lesson 06's registry of live connections (`workbook::live`).
//!
//!   terminal 1: cargo run --bin 07_fixed_threads_server -- --threads 4
//!   terminal 2: cargo run --bin 07_fixed_threads_client -- --conns 5

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use workbook::cli::Cli;
use workbook::listener::{self, Accept};
use workbook::live::LiveConnections;
use workbook::log::RateLimitedLog;
use workbook::{exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 8081;
const READ_SIZE: usize = 64 * 1024;
/// How long busy workers get to finish after Ctrl-C.
/// Half a second: the contract is an exit within one second of Ctrl-C, and the grace,
/// the joins and the last log line must all fit in it.
const GRACE: Duration = Duration::from_millis(500);
/// After a failed accept(2) (EMFILE: out of descriptors), a worker waits this long
/// before its next try, so that a lasting failure does not spin a core.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// At most one `error: ... accept` line per this interval, for all workers together.
const ACCEPT_ERROR_INTERVAL: Duration = Duration::from_secs(1);

/// What the workers share (each holds an `Arc` to it): the one listening socket, the
/// registry of the connections being served, the limit on accept-error lines, and
/// the settings.
struct Pool {
    listener: TcpListener,
    connections: Arc<LiveConnections>,
    accept_errors: RateLimitedLog,
    threads: usize,
    quiet: bool,
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
    // socket, bind, listen: once, here, before any worker exists. Every worker shares
    // this one socket (in the `Pool`, through an `Arc`) and calls accept(2) on it; the
    // kernel gives each queued connection to exactly one of the threads waiting in
    // accept.
    let listener = listener::open(addr, 128, Accept::Blocking);
    // ANCHOR_END: listen_once
    let pool = Arc::new(Pool {
        listener,
        connections: LiveConnections::new(),
        accept_errors: RateLimitedLog::new(ACCEPT_ERROR_INTERVAL),
        threads,
        quiet: args.flag("--quiet"),
    });

    // ANCHOR: signal
    // Ctrl-C: end the input of every busy worker's connection (the registry), then
    // shutdown(2) the listening socket. On Linux that makes every accept(2) blocked
    // on it, in every worker, return at once (with EINVAL). Closing the socket instead
    // would not wake them, and the number could be reused by a new socket while they
    // still use it. The signal thread neither logs nor waits.
    let for_signal = Arc::clone(&pool);
    signal::on_shutdown(move || {
        for_signal.connections.begin_shutdown();
        let _ = socket2::SockRef::from(&for_signal.listener).shutdown(Shutdown::Read);
    })
    .unwrap_or_else(|message| exit_with_error(&message));
    // ANCHOR_END: signal

    // ANCHOR: spawn_workers
    // The workers start together, after the `listening on` line: a Barrier holds
    // them until main has queued it, so that no worker's line (an accept error, say)
    // can come first, and a test that reads that line finds every worker there.
    let start_line = Arc::new(Barrier::new(threads + 1));
    let mut workers = Vec::with_capacity(threads);
    for number in 1..=threads {
        let pool = Arc::clone(&pool);
        let start_line = Arc::clone(&start_line);
        let spawned = thread::Builder::new()
            .name(format!("worker-{number}"))
            .spawn(move || {
                start_line.wait();
                worker(&format!("worker-{number}"), &pool);
            });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(err) => exit_with_error(&format!("cannot start worker-{number}: {err}")),
        }
    }
    log::listening(pool.listener.local_addr().unwrap_or(addr));
    if !pool.quiet {
        log!("{threads} workers waiting in accept()");
    }
    start_line.wait();
    // ANCHOR_END: spawn_workers

    // ANCHOR: shut_down
    // The main thread waits for Ctrl-C. By then the signal thread has woken every
    // accept and ended the input of every busy worker's connection; wait up to GRACE
    // for them to finish the echo in hand, cut off whoever is still busy, join all.
    pool.connections.wait_for_shutdown();
    let cut_off = pool.connections.finish(GRACE);
    for handle in workers {
        // A worker that panicked has been reported already (by its registration).
        let _ = handle.join();
    }
    let served = show::count(pool.connections.total() as usize, "client");
    let cut_off = match cut_off {
        0 => String::new(),
        n => format!(
            ", {} cut off after the grace period",
            show::count(n, "client")
        ),
    };
    log::last_line(format!(
        "{}: served {served}{cut_off} with {threads} workers, all joined",
        log::SHUTTING_DOWN
    ));
    // ANCHOR_END: shut_down
}

// ANCHOR: worker
/// One worker: accept a connection, serve it to the end, accept the next.
fn worker(name: &str, pool: &Pool) {
    let connections = &pool.connections;
    while !connections.is_stopping() {
        // Every idle worker is blocked right here, in accept(2) on the same socket.
        let stream = match pool.listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) if connections.is_stopping() => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                // EMFILE and the like: log (one line a second for the whole pool, so
                // it names no worker), pause so that a lasting error does not spin,
                // and go on.
                pool.accept_errors
                    .line(format!("{} accept: {err}", log::ERROR));
                thread::sleep(ACCEPT_RETRY_PAUSE);
                continue;
            }
        };
        // Accepted but not yet registered: Ctrl-C now would not find this connection
        // in the registry. `register` checks for it under the registry's lock and
        // then ends the connection's input at once, so this worker cannot be left
        // waiting in read for a client that says nothing.
        let peers = show::peers(&stream);
        let stream = Arc::new(stream);
        let registered = connections.register(Some(Arc::clone(&stream)));
        if !pool.quiet {
            log!(
                "{name}: {} {peers} (busy {} of {})",
                log::CONNECTED,
                registered.live_now,
                pool.threads
            );
        }
        if let Err(err) = echo(&stream, name, &peers, pool.quiet) {
            log!("{} {name}: {peers}: {err}", log::ERROR);
        }
        drop(registered);
        if !pool.quiet {
            log!(
                "{name}: {} {peers} (busy {} of {})",
                log::DISCONNECTED,
                connections.live(),
                pool.threads
            );
        }
    }
}
// ANCHOR_END: worker

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
            log!(
                "{name}: {} {} from {peers}: {data}",
                log::RECEIVED,
                show::count(n, "byte")
            );
        }
        stream.write_all(&buffer[..n])?;
    }
}

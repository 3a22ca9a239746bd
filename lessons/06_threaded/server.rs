//! Lesson 06, the server: an echo server with one thread per connection.
//!
//! The main thread only accepts; each connection gets a thread of its own that
//! blocks in read and write as lesson 01 did, and blocking one thread blocks nobody
//! else. `--max-threads` bounds how many such threads may live at once. The live
//! connections are kept in a registry (`workbook::live`, taught here) through which
//! Ctrl-C reaches every thread, even one blocked in read(2).
//!
//!   terminal 1: cargo run --bin 06_threaded_server
//!   terminal 2: cargo run --bin 06_threaded_client -- --hold 10 hello
//!   terminal 3: cargo run --bin 06_threaded_client -- --conns 1 "served meanwhile"

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use workbook::cli::Cli;
use workbook::listener::{self, Accept};
use workbook::live::{LiveConnections, Registered};
use workbook::log::RateLimitedLog;
use workbook::{exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 8080;
const READ_SIZE: usize = 64 * 1024;
/// How long live connections get to finish after Ctrl-C.
/// Half a second: the contract is an exit within one second of Ctrl-C, and the grace,
/// the joins and the last log line must all fit in it.
const GRACE: Duration = Duration::from_millis(500);
/// After a failed accept(2) (EMFILE: out of descriptors), wait this long before the
/// next try, so that a lasting failure does not spin a core.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// At most one `error: accept` line per this interval; the rest are counted.
const ACCEPT_ERROR_INTERVAL: Duration = Duration::from_secs(1);

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
    let quiet = args.flag("--quiet");
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));
    let listener = Arc::new(listener::open(addr, 128, Accept::Blocking));
    let connections = LiveConnections::new();

    // ANCHOR: signal
    // Ctrl-C: end the input of every live connection (the registry does it, under its
    // lock, briefly), then shut down the listening socket. On Linux, shutdown(2) on a
    // listener makes an accept(2) blocked in another thread return at once (with
    // EINVAL); nothing else would wake it. This runs on the signal thread, so it
    // neither logs nor waits: the main thread writes the `shutting down` line.
    let for_signal = Arc::clone(&connections);
    let listener_for_signal = Arc::clone(&listener);
    signal::on_shutdown(move || {
        for_signal.begin_shutdown();
        let _ = socket2::SockRef::from(&*listener_for_signal).shutdown(Shutdown::Read);
    })
    .unwrap_or_else(|message| exit_with_error(&message));
    // ANCHOR_END: signal
    log::listening(listener.local_addr().unwrap_or(addr));

    let mut threads = Vec::new();
    accept_loop(&listener, &connections, max_threads, quiet, &mut threads);
    shut_down(&connections, threads);
}

// ANCHOR: accept_loop
fn accept_loop(
    listener: &TcpListener,
    connections: &Arc<LiveConnections>,
    max_threads: usize,
    quiet: bool,
    threads: &mut Vec<JoinHandle<()>>,
) {
    let accept_errors = RateLimitedLog::new(ACCEPT_ERROR_INTERVAL);
    // At the bound, stop accepting until a connection thread ends. New clients then
    // wait in the kernel's listen backlog (their connect succeeds, they are answered
    // later) instead of being refused. `wait_for_room` is false once Ctrl-C came.
    while connections.wait_for_room(max_threads) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) if connections.is_stopping() => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                // EMFILE and the like: log (not every time), pause, and go on.
                accept_errors.line(format!("{} accept: {err}", log::ERROR));
                thread::sleep(ACCEPT_RETRY_PAUSE);
                continue;
            }
        };
        // Forget the threads that have ended, so the list does not grow forever.
        threads.retain(|handle| !handle.is_finished());
        spawn_connection(stream, connections, quiet, threads);
    }
}
// ANCHOR_END: accept_loop

// ANCHOR: spawn
fn spawn_connection(
    stream: TcpStream,
    connections: &Arc<LiveConnections>,
    quiet: bool,
    threads: &mut Vec<JoinHandle<()>>,
) {
    let peers = show::peers(&stream);
    // The socket is shared by the connection's thread and the registry, through which
    // shutdown can reach a thread blocked in read(2). Sharing the one socket
    // (`&TcpStream` can read and write) costs no second descriptor, as dup(2) would.
    let stream = Arc::new(stream);
    // If Ctrl-C came since accept returned, the registry cuts this connection's input
    // at once: its thread ends instead of waiting in read for a client that says
    // nothing (the race that `workbook::live` closes).
    let registered = connections.register(Some(Arc::clone(&stream)));
    let number = registered.number;
    if !quiet {
        log!(
            "{} {peers} (thread conn-{number}; live {}, total {number})",
            log::CONNECTED,
            registered.live_now
        );
    }
    let for_thread = Arc::clone(connections);
    let spawned = thread::Builder::new()
        .name(format!("conn-{number}"))
        .spawn(move || serve(&stream, registered, &for_thread, &peers, quiet));
    match spawned {
        Ok(handle) => threads.push(handle),
        // Out of threads or memory (EAGAIN): the closure, and with it the socket and
        // the registration, is dropped; this client is closed, the server goes on.
        Err(err) => log!(
            "{} cannot start a thread for conn-{number}: {err}",
            log::ERROR
        ),
    }
}

/// The connection's thread. `registered` is held until the echo ends: dropping it
/// (also when the thread panics) takes the connection out of the registry.
fn serve(
    stream: &TcpStream,
    registered: Registered,
    connections: &LiveConnections,
    peers: &str,
    quiet: bool,
) {
    if let Err(err) = echo(stream, peers, quiet) {
        log!("{} {peers}: {err}", log::ERROR);
    }
    let number = registered.number;
    drop(registered);
    if !quiet {
        log!(
            "{} {peers} (thread conn-{number}; live {})",
            log::DISCONNECTED,
            connections.live()
        );
    }
}
// ANCHOR_END: spawn

// ANCHOR: echo
/// The whole life of one connection, in blocking calls: only this thread waits.
fn echo(mut stream: &TcpStream, peers: &str, quiet: bool) -> io::Result<()> {
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        let n = match stream.read(&mut buffer) {
            // The client closed or half-closed, or Ctrl-C ended the input:
            // everything read has been echoed.
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if !quiet {
            let data = show::bytes(&buffer[..n]);
            log!(
                "{} {} from {peers}: {data}",
                log::RECEIVED,
                show::count(n, "byte")
            );
        }
        // Blocks while the client does not read: that stops this thread reading
        // more, which is the backpressure, and holds no other client up.
        stream.write_all(&buffer[..n])?;
    }
}
// ANCHOR_END: echo

// ANCHOR: shut_down
/// Stop: the signal thread has ended every live connection's input already, and no
/// connection comes in any more. Wait up to GRACE for the threads to finish the echo
/// in hand, cut off whoever is still busy, then join every thread.
fn shut_down(connections: &LiveConnections, threads: Vec<JoinHandle<()>>) {
    let cut_off = connections.finish(GRACE);
    for handle in threads {
        // A thread that panicked has been reported already (by its registration).
        let _ = handle.join();
    }
    let served = show::count(connections.total() as usize, "client");
    let cut_off = match cut_off {
        0 => String::new(),
        n => format!(
            ", {} cut off after the grace period",
            show::count(n, "client")
        ),
    };
    log::last_line(format!(
        "{}: served {served}{cut_off}, all threads joined",
        log::SHUTTING_DOWN
    ));
}
// ANCHOR_END: shut_down

//! Lesson 18, the server: the echo server once more, now on tokio, with one task per
//! connection. A task reads like lesson 06's thread (read, then write, in a loop) and
//! runs like lesson 08's handler (one epoll loop, a few threads, serving them all).
//!
//!   terminal 1: cargo run --bin 18_async_server                     (multi-thread runtime)
//!               cargo run --bin 18_async_server -- --runtime current (one thread)
//!               cargo run --bin 18_async_server -- --reactor mio     (mio, no tokio)
//!   terminal 2: cargo run --bin 18_async_client -- --conns 3 hello
//!
//! `--reactor mio` runs the same echo on mio directly (mio_server.rs): the epoll loop
//! that tokio is built on, with nothing on top, to compare with lesson 08's.

mod mio_server;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;
use workbook::cli::Cli;
use workbook::listener::{self, Accept};
use workbook::log::RateLimitedLog;
use workbook::{exit_with_error, log, show};

const DEFAULT_PORT: u16 = 10018;
/// Each connection's one buffer: what one read(2) takes and one write echoes. A
/// task holds this much and no more, however fast its client sends and however
/// slowly it reads.
const READ_SIZE: usize = 16 * 1024;
/// How long, after Ctrl-C, the server waits for every connection task to get its
/// turn, see the stop and return (dropping its echo in hand: nothing is finished);
/// tasks still not done then are aborted. The contract is an exit within one
/// second, and the last line must fit in it too.
const GRACE: Duration = Duration::from_millis(500);
/// After a failed accept(2) (EMFILE: out of descriptors), wait this long before the
/// next try, so that a lasting failure does not spin a core.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
/// At most one `error: accept` line per this interval; the rest are counted.
const ACCEPT_ERROR_INTERVAL: Duration = Duration::from_secs(1);

fn main() {
    let args = Cli::new(
        "18_async_server",
        "Lesson 18: an echo server on tokio, one task per connection.",
        DEFAULT_PORT,
    )
    .value(
        "--runtime",
        "KIND",
        "multi: tokio's work-stealing runtime, a worker thread per core (default); \
         current: everything on this one thread",
    )
    .value(
        "--reactor",
        "KIND",
        "tokio: tasks and async/await (default); mio: the same echo on mio's event loop, \
         with no tokio (one thread)",
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let quiet = args.flag("--quiet");
    let runtime_kind: String = args.get_or("--runtime", "multi".to_string());
    let reactor: String = args.get_or("--reactor", "tokio".to_string());
    if !matches!(runtime_kind.as_str(), "multi" | "current") {
        args.usage_error("--runtime must be multi or current");
    }
    if !matches!(reactor.as_str(), "tokio" | "mio") {
        args.usage_error("--reactor must be tokio or mio");
    }
    if reactor == "mio" && args.get::<String>("--runtime").is_some() {
        args.usage_error("--runtime is for --reactor tokio (mio has no runtime: one loop)");
    }
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // socket, SO_REUSEADDR, bind, listen (lessons 01-02), non-blocking (lesson 04):
    // the same listening socket as lesson 08's. tokio and mio take it as it is.
    let listener = listener::open(addr, 1024, Accept::NonBlocking);
    if reactor == "mio" {
        mio_server::run(listener, quiet);
        return;
    }

    // ANCHOR: runtime
    // The runtime: an epoll instance (the reactor, lesson 08's loop) and the threads
    // that poll tasks. `current` runs both on this thread, as lesson 08 does;
    // `multi` starts a worker per core that steal tasks from each other's queues.
    let built = match runtime_kind.as_str() {
        "current" => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_io()
    .enable_time()
    .build();
    let runtime =
        built.unwrap_or_else(|err| exit_with_error(&format!("cannot start the runtime: {err}")));
    let summary = runtime.block_on(serve(listener, addr, &runtime_kind, quiet));
    // Every task has ended or been cut off already; nothing is left to wait for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    // ANCHOR_END: runtime
    log::last_line(format!("{} (signal): {summary}", log::SHUTTING_DOWN));
}

// ANCHOR: serve
/// The accept loop, as a task: waits for a connection or a signal, whichever comes
/// first, and gives each connection a task of its own.
async fn serve(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    runtime_kind: &str,
    quiet: bool,
) -> String {
    // tokio's own SIGINT/SIGTERM handlers: the handler only writes a byte to a pipe
    // that the reactor watches (the self-pipe of lesson 05), so nothing is logged
    // on a signal thread. Installed before `listening on`: a signal that comes
    // right after that line is not missed.
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
        (Err(err), _) | (_, Err(err)) => {
            exit_with_error(&format!("cannot install the SIGINT/SIGTERM handler: {err}"))
        }
    };
    // Registers the listening socket with the reactor (epoll_ctl, EPOLL_CTL_ADD).
    let listener = TcpListener::from_std(listener).unwrap_or_else(|err| {
        exit_with_error(&format!("cannot watch the listening socket: {err}"))
    });
    log::listening(listener.local_addr().unwrap_or(addr));
    if !quiet {
        log!("runtime: tokio, {runtime_kind}-thread");
    }
    // The stop signal every connection task watches: false until Ctrl-C.
    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let accept_errors = RateLimitedLog::new(ACCEPT_ERROR_INTERVAL);
    let mut served = 0usize;
    loop {
        // Forget the tasks that have ended, so the set does not grow forever.
        while tasks.try_join_next().is_some() {}
        // select!: whichever future is ready first wins; the others are dropped
        // (cancelled) and made anew on the next turn of the loop.
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    served += 1;
                    let stopping = stopping.clone();
                    tasks.spawn(connection(stream, served, stopping, quiet));
                }
                // That client reset its connection before we took it: go on.
                Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => {}
                // EMFILE/ENFILE and the like would come back at once: log (not every
                // time) and pause, still listening for Ctrl-C meanwhile.
                Err(err) => {
                    accept_errors.line(format!(
                        "{} accept: {err}; pausing accept for {} ms",
                        log::ERROR,
                        ACCEPT_PAUSE.as_millis()
                    ));
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_PAUSE) => {}
                        _ = interrupt.recv() => break,
                        _ = terminate.recv() => break,
                    }
                }
            },
        }
    }
    drop(listener);
    shut_down(stop, tasks, served).await
}
// ANCHOR_END: serve

// ANCHOR: shut_down
/// Ctrl-C came: no more connections are accepted. Every task is told; at its next
/// turn each one drops its echo future (cancellation in Rust is dropping a future)
/// and returns, which closes its socket. A task that does not get its turn within
/// GRACE (a busy runtime) is aborted: the same drop, from outside.
async fn shut_down(stop: watch::Sender<bool>, mut tasks: JoinSet<Ended>, served: usize) -> String {
    let _ = stop.send(true);
    // Each task says how it ended: only the ones the stop cut were still open. (A
    // task that had not yet seen its client's close is not one of them.)
    let mut open = 0;
    let finished = tokio::time::timeout(GRACE, async {
        while let Some(ended) = tasks.join_next().await {
            open += usize::from(matches!(ended, Ok(Ended::Cut)));
        }
    })
    .await;
    let cut_off = match finished {
        Ok(()) => String::new(),
        Err(_) => {
            let n = tasks.len();
            open += n;
            tasks.shutdown().await;
            format!(
                ", {} cut off after the grace period",
                show::count(n, "client")
            )
        }
    };
    format!(
        "served {}, closed {} still open{cut_off}",
        show::count(served, "client"),
        show::count(open, "connection")
    )
}
// ANCHOR_END: shut_down

/// How a connection's task ended: on its own (the client closed, or an error), or
/// cut by the stop while its client was still there.
enum Ended {
    OnItsOwn,
    Cut,
}

// ANCHOR: connection
/// One connection's task: its whole life, written as if it were the only one.
async fn connection(
    mut stream: TcpStream,
    number: usize,
    mut stopping: watch::Receiver<bool>,
    quiet: bool,
) -> Ended {
    let peers = show::peers(&stream);
    if !quiet {
        log!("{} {peers} (task {number})", log::CONNECTED);
    }
    // TCP_NODELAY (lesson 02): an echo of more than READ_SIZE goes out in several
    // writes, and Nagle's algorithm would hold each small one back until the
    // client's (delayed, up to 40 ms) ACK of the previous. The load lab found it:
    // 1,100 echoes/s of 64 KiB, each about 44 ms, before this line.
    if let Err(err) = stream.set_nodelay(true) {
        log!("{} {peers}: cannot set TCP_NODELAY: {err}", log::ERROR);
    }
    let mut echoing = false;
    let ended = tokio::select! {
        ended = echo(&mut stream, &peers, quiet, &mut echoing) => Some(ended),
        // Ctrl-C: stop reading at once. The echo in hand, if any, is dropped with
        // the `echo` future; the socket closes when this task returns.
        _ = stopping.wait_for(|stopping| *stopping) => None,
    };
    let how = match ended {
        Some(_) => Ended::OnItsOwn,
        // Cut in the middle of an echo, or waiting to read from a client still there.
        None if echoing || client_still_there(&stream) => Ended::Cut,
        None => Ended::OnItsOwn,
    };
    match ended {
        Some(Err(err)) => log!("{} {peers}: {err}", log::DISCONNECTED),
        _ if !quiet => log!("{} {peers} (task {number})", log::DISCONNECTED),
        _ => {}
    }
    how
}

/// At the stop, for a task waiting to read: its client may have closed just before,
/// the FIN not yet seen by the task. A peek that does not wait then reads 0 bytes
/// (or fails with the reset); EAGAIN, or bytes waiting, mean the client is there.
fn client_still_there(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let peeked = recv(
        stream.as_raw_fd(),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    );
    matches!(peeked, Ok(1) | Err(Errno::EAGAIN))
}
// ANCHOR_END: connection

// ANCHOR: echo
/// Lesson 06's echo loop, with `.await` where that one blocked: at each `.await`
/// the task gives its thread back to the runtime until the socket is ready.
/// `echoing` is true while an echo is in hand (read, not yet all written).
async fn echo(
    stream: &mut TcpStream,
    peers: &str,
    quiet: bool,
    echoing: &mut bool,
) -> io::Result<()> {
    // One fixed buffer per connection (on the heap, with the task).
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        // read(2); on EAGAIN the task registers interest and sleeps until epoll
        // reports the socket readable.
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            // The client closed or half-closed: everything read has been echoed.
            return Ok(());
        }
        if !quiet {
            let data = show::bytes(&buffer[..n]);
            log!(
                "{} {} from {peers}: {data}",
                log::RECEIVED,
                show::count(n, "byte")
            );
        }
        // write(2) until all is sent. A client that does not read makes this wait,
        // and a waiting task reads nothing more: the backpressure, in one line.
        *echoing = true;
        stream.write_all(&buffer[..n]).await?;
        *echoing = false;
    }
}
// ANCHOR_END: echo

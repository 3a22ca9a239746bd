//! Lesson 17, the server: a server that misbehaves on purpose, one way at a time.
//!
//! `--misbehave MODE` picks the failure (never-accept, reset, close, silent, slow,
//! no-read, wait-first; see misbehave.rs); without it the server is well-behaved: it
//! greets with `ready\n` and echoes. Each connection gets a thread (lesson 06's
//! model, bounded by `--max-threads`) and is held at most `--hold` seconds, so that
//! no client it misleads waits for ever; Ctrl-C stops it within a second in every
//! mode, with clients connected.
//!
//!   terminal 1: cargo run --bin 17_failures_server -- --misbehave reset
//!   terminal 2: cargo run --bin 17_failures_client -- hello
//!   anywhere:   cargo run --bin 17_failures_client -- --all

// ANCHOR: modules
/// The modes, shared with the client (which reproduces them in-process).
mod misbehave;
// ANCHOR_END: modules

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use misbehave::{MODES, Mode};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use workbook::cli::Cli;
use workbook::listener::{self, Accept};
use workbook::live::LiveConnections;
use workbook::{exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 10017;
/// How long live connections get to end after Ctrl-C (the contract: exit within 1 s).
const GRACE: Duration = Duration::from_millis(500);
/// The no-read mode's receive buffer: small, so that a client fills it quickly.
const NO_READ_RCVBUF: usize = 4096;

/// How every connection is served.
#[derive(Clone, Copy)]
struct Serving {
    mode: Mode,
    /// The longest a connection is held.
    hold: Duration,
    /// Log only errors (no connected, disconnected, or what the mode does).
    quiet: bool,
}

fn main() {
    let mode_names: Vec<&str> = MODES.iter().map(|(name, _)| *name).collect();
    let args = Cli::new(
        "17_failures_server",
        "Lesson 17: a server that misbehaves on purpose (well-behaved without --misbehave).",
        DEFAULT_PORT,
    )
    .value(
        "--misbehave",
        "MODE",
        "never-accept, reset, close, silent, slow, no-read or wait-first \
         (default: greet with \"ready\\n\", then echo)",
    )
    .value(
        "--hold",
        "SECS",
        "hold each connection at most SECS seconds, then close it (default 30)",
    )
    .value(
        "--max-threads",
        "N",
        "at most N connections served at once (default 64)",
    )
    .switch(
        "--quiet",
        "log only errors and the start, mode and stop lines",
    )
    .parse();
    let mode = match args.get::<String>("--misbehave") {
        None => Mode::WellBehaved,
        Some(name) => Mode::from_name(&name).unwrap_or_else(|| {
            args.usage_error(&format!(
                "unknown mode '{name}': the modes are {}",
                mode_names.join(", ")
            ))
        }),
    };
    let hold_secs: u64 = args.get_or("--hold", 30);
    if !(1..=86_400).contains(&hold_secs) {
        args.usage_error("--hold must be from 1 second to 86400 (a day)");
    }
    let hold = Duration::from_secs(hold_secs);
    let max_threads: usize = args.get_or("--max-threads", 64);
    if max_threads == 0 {
        args.usage_error("--max-threads must be at least 1");
    }
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // ANCHOR: listen
    // never-accept: a backlog of 1. Linux then completes 2 handshakes (backlog + 1)
    // into the accept queue and drops the SYNs that come after: those clients sit in
    // SYN-SENT, resending the SYN, until their connect times out.
    let backlog = if mode == Mode::NeverAccept { 1 } else { 128 };
    let listener = listener::open(addr, backlog, Accept::NonBlocking);
    if mode == Mode::NoRead {
        // Inherited by each accepted socket: the server's side holds about 4 KiB, so
        // its buffer is full after a few KiB. The client's own send buffer still
        // takes megabytes (about 2 MB here) unless the client shrinks it too, as the
        // write-blocks case does.
        if let Err(err) = socket2::SockRef::from(&listener).set_recv_buffer_size(NO_READ_RCVBUF) {
            exit_with_error(&format!("cannot set SO_RCVBUF: {err}"));
        }
    }
    // ANCHOR_END: listen
    // Ctrl-C writes a byte into this socket; the main loop polls it with the listener.
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    log::listening(listener.local_addr().unwrap_or(addr));
    log!("mode {}: {}", mode.name(), mode.about());

    let connections = LiveConnections::new();
    let mut threads = Vec::new();
    let serving = Serving {
        mode,
        hold,
        quiet: args.flag("--quiet"),
    };
    if mode == Mode::NeverAccept {
        never_accept(&listener, &wakeup, hold);
    } else {
        accept_loop(
            &listener,
            &wakeup,
            &connections,
            serving,
            max_threads,
            &mut threads,
        );
    }
    shut_down(&connections, threads);
}

// ANCHOR: never_accept
/// never-accept: wait for Ctrl-C without calling accept(2). Every `hold`, whoever is
/// queued is accepted and reset, so that no client waits for ever (and the queue
/// fills again with the next two).
fn never_accept(listener: &TcpListener, wakeup: &UnixStream, hold: Duration) {
    while !wait_readable(wakeup, hold) {
        let mut released = 0;
        while let Ok((stream, _)) = listener.accept() {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            released += 1;
        }
        if released > 0 {
            log!(
                "never-accept: reset {} queued for up to {} s",
                show::count(released, "connection"),
                hold.as_secs()
            );
        }
    }
}
// ANCHOR_END: never_accept

/// Waits until `socket` is readable (true) or `timeout` passes (false). A signal
/// interrupts poll(2) (EINTR): then it waits again for the time left.
fn wait_readable<S: AsFd>(socket: &S, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) if Instant::now() >= deadline => return false,
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
}

// ANCHOR: accept_loop
/// Accepts until Ctrl-C: poll(2) on the listener and the wake-up socket, so that a
/// signal ends the wait at once; each connection gets a thread that misbehaves.
fn accept_loop(
    listener: &TcpListener,
    wakeup: &UnixStream,
    connections: &Arc<LiveConnections>,
    serving: Serving,
    max_threads: usize,
    threads: &mut Vec<JoinHandle<()>>,
) {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wakeup.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => {
                log!("{} poll: {err}", log::ERROR);
                return;
            }
        }
        if fds[1].any().unwrap_or(false) {
            return;
        }
        // Non-blocking: a client that reset before we got here leaves nothing to
        // accept, and we must not wait in accept(2) for the next one.
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                log!("{} accept: {err}", log::ERROR);
                // EMFILE: the client stays queued; wait a little for a thread to end.
                if wait_readable(wakeup, Duration::from_millis(100)) {
                    return;
                }
                continue;
            }
        };
        threads.retain(|handle| !handle.is_finished());
        if connections.live() >= max_threads {
            log!(
                "{} {}: {max_threads} connections already; closed",
                log::ERROR,
                show::peers(&stream)
            );
            continue;
        }
        spawn_connection(stream, connections, serving, threads);
    }
}
// ANCHOR_END: accept_loop

fn spawn_connection(
    stream: TcpStream,
    connections: &Arc<LiveConnections>,
    serving: Serving,
    threads: &mut Vec<JoinHandle<()>>,
) {
    let Serving { mode, hold, quiet } = serving;
    let peers = show::peers(&stream);
    let stream = Arc::new(stream);
    // Registered, so that Ctrl-C reaches this thread even while it waits in read(2).
    let registered = connections.register(Some(Arc::clone(&stream)));
    let stopping_of = Arc::clone(connections);
    if !quiet {
        log!("{} {peers} (mode {})", log::CONNECTED, mode.name());
    }
    let spawned = thread::Builder::new()
        .name(format!("conn-{}", registered.number))
        .spawn(move || {
            let note = |line: String| {
                if !quiet {
                    log!("{peers}: {line}");
                }
            };
            let stopping = || stopping_of.is_stopping();
            if let Err(err) = misbehave::serve(mode, &stream, hold, &stopping, &note) {
                log!("{} {peers}: {err}", log::ERROR);
            }
            drop(registered);
            if !quiet {
                log!("{} {peers}", log::DISCONNECTED);
            }
        });
    match spawned {
        Ok(handle) => threads.push(handle),
        Err(err) => log!("{} cannot start a thread: {err}", log::ERROR),
    }
}

/// Ctrl-C: end every connection's input, give them GRACE, cut off the rest, join.
fn shut_down(connections: &LiveConnections, threads: Vec<JoinHandle<()>>) {
    connections.begin_shutdown();
    let cut_off = connections.finish(GRACE);
    for handle in threads {
        let _ = handle.join();
    }
    log::last_line(format!(
        "{}: served {}, {cut_off} cut off",
        log::SHUTTING_DOWN,
        show::count(connections.total() as usize, "connection")
    ));
}

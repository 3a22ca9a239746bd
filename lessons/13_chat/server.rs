//! Lesson 13, the server: a chat room on TCP 10013 that anyone can join, with this
//! lesson's client or with `nc 127.0.0.1 10013`.
//!
//!   terminal 1: cargo run --bin 13_chat_server
//!   terminal 2: cargo run --bin 13_chat_client -- --name ada
//!   terminal 3: nc 127.0.0.1 10013
//!
//! One thread serves everyone with poll(2), as in lesson 05: a line from one client
//! becomes lines queued for the others (room.rs), and each queue goes out as its
//! socket takes it. A client whose queue and socket buffers fill up is not reading
//! (or not fast enough): it is dropped, and nobody waits for it. `--bot` runs the
//! tutorial's menu bot instead of the room.

// ANCHOR: modules
/// `--bot`: the menu bot.
mod bot;
/// What a line does: a name, a message for the room, or a command.
mod chat;
/// The command table: name -> handler and help.
mod commands;
/// Lines on a byte stream: split across reads, too long, not UTF-8.
mod lines;
/// Everyone connected, and the bounded queue of lines for each.
mod room;
// ANCHOR_END: modules

use std::io::{self, Read};
use std::net::{Shutdown, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use lines::Line;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use room::{Room, State};
use workbook::cli::Cli;
use workbook::listener::{self, Accept};
use workbook::{exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 10013;
/// The most one read(2) takes from one client per round.
const READ_SIZE: usize = 16 * 1024;
/// After accept(2) fails for lack of descriptors, stop watching the listener this
/// long (lesson 05): the pending connection would keep it readable, and the loop spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
/// The line everyone gets on Ctrl-C.
const SHUTTING_DOWN: &str = "* server shutting down";

fn main() {
    let args = Cli::new(
        "13_chat_server",
        "Lesson 13: a chat room (join with 13_chat_client or `nc 127.0.0.1 10013`); \
         --bot runs the tutorial's menu bot instead.",
        DEFAULT_PORT,
    )
    .switch(
        "--bot",
        "the menu bot instead of the room: 1, 2 or exit, each client on its own",
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // socket, SO_REUSEADDR, bind, listen (lessons 01-02), non-blocking (lesson 04).
    let listener = listener::open(addr, 128, Accept::NonBlocking);
    // Ctrl-C and SIGTERM make this socket readable; poll watches it with the others.
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    log::listening(listener.local_addr().unwrap_or(addr));
    if args.flag("--bot") && !args.flag("--quiet") {
        log!("menu bot: each client gets the menu");
    }

    let mut room = Room::new(args.flag("--bot"), args.flag("--quiet"));
    let reason = run(&listener, &wakeup, &mut room);
    shut_down(room, reason);
}

// ANCHOR: run
/// The event loop: wait for any socket, serve what is ready, send what was queued.
fn run(listener: &TcpListener, wakeup: &UnixStream, room: &mut Room) -> &'static str {
    let mut read_buffer = vec![0u8; READ_SIZE];
    let mut accept_paused_until: Option<Instant> = None;
    loop {
        // [wake-up, listener, member 0, member 1, ...]: read from members in the
        // room, write to those with lines queued. A pause that is over is forgotten
        // (else the next timeout would be 0 for ever, and the loop spin).
        if accept_paused_until.is_some_and(|until| Instant::now() >= until) {
            accept_paused_until = None;
        }
        let accepting = accept_paused_until.is_none();
        let mut fds = Vec::with_capacity(2 + room.members.len());
        fds.push(PollFd::new(wakeup.as_fd(), PollFlags::POLLIN));
        let listen_for = if accepting {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        fds.push(PollFd::new(listener.as_fd(), listen_for));
        for member in &room.members {
            let mut events = PollFlags::empty();
            if member.state == State::Open {
                events |= PollFlags::POLLIN;
            }
            if !member.outbox.is_empty() {
                events |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(member.stream.as_fd(), events));
        }
        match poll(&mut fds, next_timeout(room, accept_paused_until)) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(err) => {
                log!("{} poll failed: {err}", log::ERROR);
                return "poll failed";
            }
        }
        let revents = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
        let woken = !revents(&fds[0]).is_empty();
        let can_accept = revents(&fds[1]).contains(PollFlags::POLLIN);
        let ready: Vec<PollFlags> = fds[2..].iter().map(revents).collect();
        drop(fds);

        if woken {
            return "signal";
        }
        for (who, events) in ready.into_iter().enumerate() {
            serve(room, who, events, &mut read_buffer);
        }
        if can_accept && !accept_all(listener, room) {
            accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
        }
        let open = room.members.len();
        send_and_close(room);
        if room.members.len() < open {
            // A descriptor was freed: if accepting was paused, try again now.
            accept_paused_until = None;
        }
    }
}
// ANCHOR_END: run

/// The longest poll may wait: until a leaving client's time is up, or accepting
/// resumes; otherwise for ever (a signal wakes it).
fn next_timeout(room: &Room, accept_paused_until: Option<Instant>) -> PollTimeout {
    let leaving = room.members.iter().filter_map(|member| match member.state {
        State::Leaving(deadline) => Some(deadline),
        _ => None,
    });
    match leaving.chain(accept_paused_until).min() {
        None => PollTimeout::NONE,
        // Rounded up to a whole millisecond, so that the wait does not end just early.
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            PollTimeout::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
        }
    }
}

// ANCHOR: serve
/// What poll said member `who` is ready for.
fn serve(room: &mut Room, who: usize, events: PollFlags, read_buffer: &mut [u8]) {
    let broken = events.intersects(PollFlags::POLLERR | PollFlags::POLLHUP);
    match room.members[who].state {
        State::Open if events.contains(PollFlags::POLLIN) || broken => {
            read_from(room, who, read_buffer);
        }
        // Not read any more: an error or hang-up means its last lines cannot go out.
        State::Leaving(_) if broken => room.close(who, "gone"),
        _ => {}
    }
    if events.contains(PollFlags::POLLOUT) {
        write_to(room, who);
    }
}

/// One read(2), and what each whole line in it does.
fn read_from(room: &mut Room, who: usize, read_buffer: &mut [u8]) {
    let result = room.members[who].stream.read(read_buffer);
    match result {
        Ok(0) => {
            // The client closed its side (Ctrl-D, `nc -N`, or gone): a last line
            // without `\n` still counts; then it leaves, once its replies are sent.
            if let Some(line) = room.members[who].input.finish() {
                on_line(room, who, line);
            }
            chat::leave(room, who, None);
        }
        Ok(n) => {
            let lines = room.members[who].input.feed(&read_buffer[..n]);
            for line in lines {
                // After /quit (or being dropped) the rest of what it sent is ignored.
                if room.members[who].state != State::Open {
                    break;
                }
                on_line(room, who, line);
            }
        }
        Err(err) if is_transient(&err) => {}
        // ECONNRESET and the like: this client is gone; the room goes on.
        Err(err) => {
            if !room.quiet {
                log!("{}: {err}", room.members[who].peers);
            }
            room.close(who, "connection lost");
        }
    }
}

fn on_line(room: &mut Room, who: usize, line: Line) {
    if room.bot {
        bot::on_line(room, who, line);
    } else {
        chat::on_line(room, who, line);
    }
}

/// write(2) what member `who` has queued, as much as the kernel takes now.
fn write_to(room: &mut Room, who: usize) {
    let member = &mut room.members[who];
    if matches!(member.state, State::Closed(_)) || member.outbox.is_empty() {
        return;
    }
    if let Err(err) = member.outbox.write_to(&member.stream) {
        // EPIPE or ECONNRESET: gone. (Rust programs ignore SIGPIPE: an error, not death.)
        if !room.quiet {
            log!("{}: {err}", member.peers);
        }
        room.close(who, "connection lost");
    }
}
// ANCHOR_END: serve

// ANCHOR: accept
/// accept(2) every queued connection. False when descriptors ran out (EMFILE).
fn accept_all(listener: &TcpListener, room: &mut Room) -> bool {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                log!("{} accept: {err}", log::ERROR);
                if matches!(
                    err.raw_os_error().map(Errno::from_raw),
                    Some(Errno::EMFILE | Errno::ENFILE)
                ) {
                    return false;
                }
                continue;
            }
        };
        // Accepted sockets do not inherit O_NONBLOCK: without it, one write to a
        // client that does not read would stop the whole room.
        if let Err(err) = stream.set_nonblocking(true) {
            log!("{} cannot make a socket non-blocking: {err}", log::ERROR);
            continue;
        }
        let peers = show::peers(&stream);
        if !room.quiet {
            log!(
                "{} {peers} ({} open)",
                log::CONNECTED,
                room.members.len() + 1
            );
        }
        let who = room.add(stream, peers);
        if room.bot {
            bot::greet(room, who);
        } else {
            chat::greet(room, who);
        }
    }
}
// ANCHOR_END: accept

// ANCHOR: send_and_close
/// The end of every round: write what was queued (most lines go out in the round
/// they were made, without waiting for POLLOUT), tell the room who was dropped or
/// lost (which queues more lines: again), then close whoever is done.
fn send_and_close(room: &mut Room) {
    loop {
        for who in 0..room.members.len() {
            write_to(room, who);
        }
        if !room.announce() {
            break;
        }
    }
    let now = Instant::now();
    for member in &mut room.members {
        if let State::Leaving(deadline) = member.state {
            if member.outbox.is_empty() {
                member.state = State::Closed("left");
            } else if now >= deadline {
                member.state = State::Closed("left (its last lines were not read)");
            }
        }
    }
    let quiet = room.quiet;
    room.members.retain(|member| {
        let State::Closed(why) = member.state else {
            return true;
        };
        if !quiet {
            let name = member.name.as_deref().unwrap_or("no name");
            log!("{} {} ({name}): {why}", log::DISCONNECTED, member.peers);
        }
        // Dropping the member closes its socket.
        false
    });
}
// ANCHOR_END: send_and_close

// ANCHOR: shut_down
/// Ctrl-C: everyone gets `* server shutting down` if their socket takes it right now,
/// then every socket is closed. Nothing here waits for a client: one whose send
/// buffer is full simply does not get the line.
fn shut_down(mut room: Room, reason: &str) {
    let open = room.members.len();
    for member in &mut room.members {
        member.outbox.push(SHUTTING_DOWN);
        let _ = member.outbox.write_to(&member.stream);
        // FIN after what was written; then read what the client sent that we have
        // not read, because closing with unread data sends a reset (RST), which may
        // make the client lose the last line.
        let _ = member.stream.shutdown(Shutdown::Write);
        let mut unread = [0u8; 4096];
        let _ = (&member.stream).read(&mut unread);
    }
    let served = room.served;
    drop(room);
    log::last_line(format!(
        "{} ({reason}): served {}, closed {} still open",
        log::SHUTTING_DOWN,
        show::count(served, "client"),
        show::count(open, "connection")
    ));
}
// ANCHOR_END: shut_down

/// `WouldBlock` (the readiness was stale) and `Interrupted` (a signal came first):
/// nothing wrong with the client.
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

//! A small event loop (a "reactor") on epoll(7), in the spirit of Python's asyncore
//! (removed in Python 3.12) and of the selector event loop under asyncio.
//!
//! Each socket is owned by a [`Handler`]: it says what it wants (`readable()`,
//! `writable()`) and the loop calls it back when the kernel says that is possible
//! (`handle_accept`, `handle_read`, `handle_write`), when it asked for a timer
//! (`handle_timeout`), when a callback fails (`handle_error`) and when it is removed
//! (`handle_close`). The loop re-registers a socket with epoll only when its wants
//! change, not once per event.
//!
//! The one handler every server on it needs is here too: the [`Acceptor`], which
//! accepts connections and hands each to a function that makes its handler.
//!
//! Lesson 08's echo server uses it, and so does lesson 09 (`#[path]` includes this
//! file there: one reactor, two lessons).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use workbook::{log, show};

/// A handler's number in the loop; epoll hands it back with each event.
type Token = u64;
/// Token 0 is the shutdown wake-up socket; handlers get 1, 2, 3, ... never reused,
/// so a late event for a removed handler can never reach a new one.
const WAKE_UP: Token = 0;

// ANCHOR: handler
/// A socket and what to do with it. Every method but `fd` has a default, as the
/// methods of asyncore's `dispatcher` do.
pub trait Handler {
    /// The socket this handler owns.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Is this a listening socket? Then readable means "a connection to accept".
    fn accepting(&self) -> bool {
        false
    }
    /// Does the handler want to hear that the socket is readable?
    fn readable(&self) -> bool {
        true
    }
    /// ... writable? Only while it has something to write.
    fn writable(&self) -> bool {
        false
    }
    fn handle_accept(&mut self, _loop: &mut Context) -> io::Result<()> {
        Ok(())
    }
    fn handle_read(&mut self, _loop: &mut Context) -> io::Result<()> {
        Ok(())
    }
    fn handle_write(&mut self, _loop: &mut Context) -> io::Result<()> {
        Ok(())
    }
    /// The time given to [`Context::wake_at`] has come.
    fn handle_timeout(&mut self, _loop: &mut Context) -> io::Result<()> {
        Ok(())
    }
    /// A callback returned this error; the handler is closed next.
    fn handle_error(&mut self, _error: io::Error) {}
    /// The handler is being removed from the loop; its socket closes when it is dropped.
    fn handle_close(&mut self) {}
}
// ANCHOR_END: handler

/// What a callback may ask of the loop.
pub struct Context {
    edge_triggered: bool,
    added: Vec<Box<dyn Handler>>,
    wake_at: Option<Instant>,
    close: bool,
}

impl Context {
    /// Adds a new handler (an acceptor adds one per connection).
    pub fn add(&mut self, handler: Box<dyn Handler>) {
        self.added.push(handler);
    }
    /// Removes this handler after the callback returns.
    pub fn close(&mut self) {
        self.close = true;
    }
    /// Calls this handler's `handle_timeout` at `when` (or soon after).
    pub fn wake_at(&mut self, when: Instant) {
        self.wake_at = Some(when);
    }
    /// In edge-triggered mode a handler must read (and write, and accept) until
    /// `WouldBlock`: the kernel reports only changes, not what is still waiting.
    pub fn edge_triggered(&self) -> bool {
        self.edge_triggered
    }
}

// ANCHOR: interest
/// What to ask epoll about for this handler.
fn interest(handler: &dyn Handler, edge_triggered: bool) -> EpollFlags {
    let mut flags = EpollFlags::empty();
    if handler.readable() {
        flags |= EpollFlags::EPOLLIN;
    }
    if handler.writable() {
        flags |= EpollFlags::EPOLLOUT;
    }
    if edge_triggered {
        flags |= EpollFlags::EPOLLET;
    }
    flags
}
// ANCHOR_END: interest

struct Entry {
    handler: Box<dyn Handler>,
    /// What epoll currently watches for this socket.
    registered: EpollFlags,
}

pub struct Reactor {
    epoll: Epoll,
    handlers: HashMap<Token, Entry>,
    next_token: Token,
    timers: BinaryHeap<Reverse<(Instant, Token)>>,
    edge_triggered: bool,
}

impl Reactor {
    /// `edge_triggered`: register every socket with EPOLLET.
    pub fn new(edge_triggered: bool) -> io::Result<Reactor> {
        // epoll_create1(2): the interest list lives in the kernel from now on; we
        // change it with epoll_ctl and never hand the whole list over again.
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        Ok(Reactor {
            epoll,
            handlers: HashMap::new(),
            next_token: WAKE_UP + 1,
            timers: BinaryHeap::new(),
            edge_triggered,
        })
    }

    /// How many handlers are in the loop.
    pub fn len(&self) -> usize {
        self.handlers.len()
    }

    // ANCHOR: add
    /// epoll_ctl(EPOLL_CTL_ADD): watch a new handler's socket.
    pub fn add(&mut self, handler: Box<dyn Handler>) -> io::Result<()> {
        let token = self.next_token;
        self.next_token += 1;
        let registered = interest(handler.as_ref(), self.edge_triggered);
        self.epoll
            .add(handler.fd(), EpollEvent::new(registered, token))?;
        self.handlers.insert(
            token,
            Entry {
                handler,
                registered,
            },
        );
        Ok(())
    }
    // ANCHOR_END: add

    // ANCHOR: run
    /// Runs until `stop` becomes readable (the shutdown wake-up socket).
    pub fn run(&mut self, stop: &impl AsFd) -> io::Result<()> {
        self.epoll
            .add(stop.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE_UP))?;
        let mut events = vec![EpollEvent::empty(); 1024];
        loop {
            let timeout = match self.timers.peek() {
                Some(Reverse((when, _))) => {
                    let left = when.saturating_duration_since(Instant::now());
                    // Rounded up to whole milliseconds, so we do not wake just before.
                    let millis = left.as_micros().div_ceil(1000);
                    EpollTimeout::try_from(millis).unwrap_or(EpollTimeout::MAX)
                }
                None => EpollTimeout::NONE,
            };
            // epoll_wait(2) returns only the descriptors that are ready: its cost does
            // not grow with the idle ones, unlike select and poll.
            let ready = match self.epoll.wait(&mut events, timeout) {
                Ok(ready) => ready,
                Err(Errno::EINTR) => continue,
                Err(err) => return Err(err.into()),
            };
            for event in &events[..ready] {
                if event.data() == WAKE_UP {
                    return Ok(());
                }
                self.dispatch(event.data(), event.events());
            }
            self.fire_timers();
        }
    }
    // ANCHOR_END: run

    // ANCHOR: dispatch
    /// Calls one handler for one event, then applies what it asked for.
    fn dispatch(&mut self, token: Token, events: EpollFlags) {
        // Removed earlier in this round (its events can still be in the batch).
        let Some(entry) = self.handlers.get_mut(&token) else {
            return;
        };
        let handler = &mut entry.handler;
        let mut context = Context {
            edge_triggered: self.edge_triggered,
            added: Vec::new(),
            wake_at: None,
            close: false,
        };
        // An error or hang-up is reported as readable: the read returns the error
        // (ECONNRESET) or 0, and the handler deals with it as with any read.
        let broken = events.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP);
        let mut result = Ok(());
        if events.contains(EpollFlags::EPOLLIN) || broken {
            result = if handler.accepting() {
                handler.handle_accept(&mut context)
            } else {
                handler.handle_read(&mut context)
            };
        }
        if result.is_ok() && !context.close && (events.contains(EpollFlags::EPOLLOUT) || broken) {
            result = handler.handle_write(&mut context);
        }
        self.settle(token, result, context);
    }
    // ANCHOR_END: dispatch

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((when, token))) = self.timers.peek().copied() {
            if when > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.handlers.get_mut(&token) else {
                continue;
            };
            let mut context = Context {
                edge_triggered: self.edge_triggered,
                added: Vec::new(),
                wake_at: None,
                close: false,
            };
            let result = entry.handler.handle_timeout(&mut context);
            self.settle(token, result, context);
        }
    }

    // ANCHOR: settle
    /// After a callback: report an error, close, or update the interest if the
    /// handler's wants changed; then add the handlers it created.
    fn settle(&mut self, token: Token, result: io::Result<()>, context: Context) {
        if let Some(entry) = self.handlers.get_mut(&token) {
            let mut close = context.close;
            if let Err(error) = result {
                entry.handler.handle_error(error);
                close = true;
            }
            let wanted = interest(entry.handler.as_ref(), self.edge_triggered);
            if !close && wanted != entry.registered {
                // epoll_ctl(EPOLL_CTL_MOD) only now, when the wants changed. (In
                // edge-triggered mode this also re-arms: a socket that is ready
                // already is reported again.)
                let mut event = EpollEvent::new(wanted, token);
                match self.epoll.modify(entry.handler.fd(), &mut event) {
                    Ok(()) => entry.registered = wanted,
                    Err(err) => {
                        entry.handler.handle_error(err.into());
                        close = true;
                    }
                }
            }
            if close {
                self.remove(token);
            }
        }
        if let Some(when) = context.wake_at {
            self.timers.push(Reverse((when, token)));
        }
        for handler in context.added {
            if let Err(err) = self.add(handler) {
                // Only when epoll itself fails (ENOMEM, ENOSPC): that socket is dropped.
                log!("{} cannot watch a new socket: {err}", log::ERROR);
            }
        }
    }
    // ANCHOR_END: settle

    fn remove(&mut self, token: Token) {
        if let Some(mut entry) = self.handlers.remove(&token) {
            // epoll_ctl(EPOLL_CTL_DEL) before close(2): closing alone would remove it
            // too, unless another descriptor still refers to the same socket.
            let _ = self.epoll.delete(entry.handler.fd());
            entry.handler.handle_close();
        }
    }
}

/// How long accepting pauses after EMFILE/ENFILE (or another error that would repeat).
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);

// ANCHOR: acceptor
/// The listening socket's handler: every readable event is connections to accept.
/// Each one, made non-blocking, goes to `new_connection` with its peers (both
/// addresses, for the log), which returns the connection's handler.
pub struct Acceptor<F> {
    listener: TcpListener,
    /// Out of descriptors: not watching the listener until a timer says try again.
    paused: bool,
    new_connection: F,
}

impl<F> Acceptor<F>
where
    F: FnMut(TcpStream, String) -> Box<dyn Handler>,
{
    /// `listener` must be non-blocking (`listener::open` with `Accept::NonBlocking`).
    pub fn new(listener: TcpListener, new_connection: F) -> Acceptor<F> {
        Acceptor {
            listener,
            paused: false,
            new_connection,
        }
    }
}

impl<F> Handler for Acceptor<F>
where
    F: FnMut(TcpStream, String) -> Box<dyn Handler>,
{
    fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
    fn accepting(&self) -> bool {
        true
    }
    fn readable(&self) -> bool {
        !self.paused
    }
    fn handle_accept(&mut self, event_loop: &mut Context) -> io::Result<()> {
        // Until WouldBlock: one event may stand for many connections, and in
        // edge-triggered mode no new event comes for those already queued.
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let peers = show::peers(&stream);
                    if let Err(err) = stream.set_nonblocking(true) {
                        // That one connection is dropped; the listener stays.
                        log!("{} {peers}: cannot make it non-blocking: {err}", log::ERROR);
                        continue;
                    }
                    event_loop.add((self.new_connection)(stream, peers));
                }
                Err(err) => match Errno::from_raw(err.raw_os_error().unwrap_or(0)) {
                    Errno::EAGAIN => return Ok(()),
                    Errno::EINTR => continue,
                    // That client reset its connection before we took it: try the next.
                    Errno::ECONNABORTED => log!("{} accept: {err}", log::ERROR),
                    // EMFILE/ENFILE (out of descriptors), ENOBUFS/ENOMEM, or anything
                    // else the next accept would meet again: pause, do not spin.
                    _ => {
                        log!(
                            "{} accept: {err}; pausing accept for {} ms",
                            log::ERROR,
                            ACCEPT_PAUSE.as_millis()
                        );
                        // readable() is false now, so the loop stops watching the
                        // listener (one epoll_ctl) until the timer below.
                        self.paused = true;
                        event_loop.wake_at(Instant::now() + ACCEPT_PAUSE);
                        return Ok(());
                    }
                },
            }
        }
    }
    fn handle_timeout(&mut self, _loop: &mut Context) -> io::Result<()> {
        // Watch the listener again. In edge-triggered mode, re-registering reports the
        // connections that queued up meanwhile: nothing is lost.
        self.paused = false;
        Ok(())
    }
}
// ANCHOR_END: acceptor

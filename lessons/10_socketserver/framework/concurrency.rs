//! The framework, part 3: how requests are run, Python's mixins. The serving loop of
//! part 2 waits in [`ServerContext::wait`] and hands every admitted request to a
//! [`Concurrency`]: [`Synchronous`] runs it on the serving thread, [`Threading`] on a
//! thread of its own, and `Forking` (part 4, forking.rs) in a child process.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use workbook::live::LiveConnections;
use workbook::log;

use super::GRACE;
use super::servers::{ERROR_PAUSE, ServerState};

/// What a concurrency strategy may use from its server.
pub struct ServerContext {
    state: Arc<ServerState>,
    /// The read end of the wake-up pair.
    wake_reader: UnixStream,
    /// A write end of the wake-up pair, for the SIGCHLD handler and forked children.
    pub waker: UnixStream,
    pub quiet: bool,
    /// The listening socket, which a forked child closes at once (TCP only).
    pub listener: Option<RawFd>,
}

impl ServerContext {
    /// The wake-up pair, and the registry of the requests served in this process,
    /// which writes a byte to its own copy of the write end (a dup(2)) each time a
    /// request leaves or shutdown begins.
    pub fn new(quiet: bool, listener: Option<RawFd>) -> Result<ServerContext, String> {
        let failed = |err: io::Error| format!("cannot create the wake-up pair: {err}");
        let (wake_reader, waker) = UnixStream::pair().map_err(failed)?;
        wake_reader.set_nonblocking(true).map_err(failed)?;
        waker.set_nonblocking(true).map_err(failed)?;
        let registry_waker = waker.try_clone().map_err(failed)?;
        let connections = LiveConnections::with_waker(registry_waker);
        Ok(ServerContext {
            state: Arc::new(ServerState::new(connections)),
            wake_reader,
            waker,
            quiet,
            listener,
        })
    }

    /// What the loop, the request threads and shutdown() share.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// The requests being served, in this process.
    pub fn connections(&self) -> &Arc<LiveConnections> {
        self.state.connections()
    }
}

// ANCHOR: wait
impl ServerContext {
    /// Sleeps in poll(2) until `socket` is readable (returns true), something wakes the
    /// server (a shutdown, a request that ended, a child that exited or logged), or
    /// `timeout` has passed.
    pub fn wait(&self, socket: Option<BorrowedFd<'_>>, timeout: Option<Duration>) -> bool {
        let mut fds = vec![PollFd::new(self.wake_reader.as_fd(), PollFlags::POLLIN)];
        if let Some(socket) = socket {
            fds.push(PollFd::new(socket, PollFlags::POLLIN));
        }
        match poll(&mut fds, poll_timeout(timeout)) {
            Ok(_) => {}
            // A signal (SIGCHLD) landed on this thread; its byte is in the pipe.
            Err(Errno::EINTR) => return false,
            Err(err) => {
                workbook::log!("{} poll: {err}", log::ERROR);
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

/// poll(2) takes whole milliseconds. Rounded down, a wait of 0.7 ms would be no wait
/// at all, and a loop waiting for a deadline would spin through its last millisecond:
/// round up.
fn poll_timeout(timeout: Option<Duration>) -> PollTimeout {
    match timeout {
        None => PollTimeout::NONE,
        Some(limit) => {
            PollTimeout::try_from(limit.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
        }
    }
}
// ANCHOR_END: wait

// ANCHOR: admitted_request
/// One admitted request, as `process_request` gets it: Python's `(request,
/// client_address)` with the work to do already packed in `run`.
pub struct AdmittedRequest {
    /// Both ends, for the log.
    pub peers: String,
    /// TCP: the connection, so that shutdown can stop its reads (or, in a forked
    /// child, SIGTERM can). None for a datagram.
    pub socket: Option<Arc<TcpStream>>,
    /// Serves the request from start to end; its argument names who runs it, for the
    /// log. True if all went well.
    pub run: Box<dyn FnOnce(&str) -> bool + Send>,
}
// ANCHOR_END: admitted_request

// ANCHOR: concurrency
/// How requests are run: Python's mixins (`ThreadingMixIn`, `ForkingMixIn`). The
/// server calls these from its loop; the same three serve TCP and UDP.
pub trait Concurrency: Send {
    /// For the log: `threading: a thread per connection, at most 64 at once`.
    fn describe(&self, per: &str) -> String;

    /// Called once, before the first request (the forking server installs its
    /// SIGCHLD handler here).
    fn start(&mut self, _context: &ServerContext) -> Result<(), String> {
        Ok(())
    }

    /// True while no more requests may start: the server then stops taking them (new
    /// clients wait in the listen backlog) until something ends.
    fn at_bound(&self, context: &ServerContext) -> bool;

    /// Runs one request: here, on a thread of its own, or in a child process.
    fn process_request(&mut self, request: AdmittedRequest, context: &ServerContext);

    /// After every wake-up of the loop: join finished threads, reap exited children.
    fn service_actions(&mut self, context: &ServerContext);

    /// After the loop: give what still runs GRACE to finish, cut off the rest, and
    /// wait for all of it. Returns the end of the last log line.
    fn server_close(&mut self, context: &ServerContext) -> &'static str;
}
// ANCHOR_END: concurrency

// ANCHOR: synchronous
/// One request at a time, on the serving thread: Python's plain `TCPServer`.
pub struct Synchronous;

impl Concurrency for Synchronous {
    fn describe(&self, per: &str) -> String {
        format!("sync: one {per} at a time")
    }

    fn at_bound(&self, _context: &ServerContext) -> bool {
        false
    }

    fn process_request(&mut self, request: AdmittedRequest, context: &ServerContext) {
        // Registered while it runs, so that shutdown() can cut its reads.
        let _registered = context.connections().register(request.socket);
        (request.run)("");
    }

    fn service_actions(&mut self, _context: &ServerContext) {}

    fn server_close(&mut self, _context: &ServerContext) -> &'static str {
        ""
    }
}
// ANCHOR_END: synchronous

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

impl Concurrency for Threading {
    fn describe(&self, per: &str) -> String {
        format!(
            "threading: a thread per {per}, at most {} at once",
            self.max_threads
        )
    }

    fn at_bound(&self, context: &ServerContext) -> bool {
        context.connections().live() >= self.max_threads
    }

    // ANCHOR: threading
    fn process_request(&mut self, request: AdmittedRequest, context: &ServerContext) {
        let AdmittedRequest { peers, socket, run } = request;
        // Registered here, before the thread exists, so that at_bound counts it at
        // once. The guard goes with the thread: when the thread ends, even by a panic,
        // the request leaves the registry, and the loop is woken (it may be waiting
        // for a free slot).
        let registered = context.connections().register(socket);
        let name = format!("req-{}", registered.number);
        let label = format!(" (thread {name})");
        let spawned = thread::Builder::new().name(name).spawn(move || {
            let _registered = registered;
            run(&label);
        });
        match spawned {
            Ok(handle) => self.threads.push(handle),
            // Out of threads or memory (EAGAIN): this request is dropped (the closure,
            // and the guard in it, with it), the server goes on.
            Err(err) => workbook::log!("{} {peers}: cannot start a thread: {err}", log::ERROR),
        }
    }
    // ANCHOR_END: threading

    fn service_actions(&mut self, _context: &ServerContext) {
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

    // ANCHOR: threading_close
    fn server_close(&mut self, context: &ServerContext) -> &'static str {
        // shutdown() has cut every request's reads: most threads are ending already.
        // Whoever is still busy after GRACE is cut off (shutdown(SHUT_RDWR)), so that
        // every join below returns.
        context.connections().finish(GRACE);
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        ", all threads joined"
    }
    // ANCHOR_END: threading_close
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeouts_round_up_to_whole_milliseconds() {
        let millis = |timeout| i32::from(poll_timeout(timeout));
        assert_eq!(millis(Some(Duration::ZERO)), 0);
        assert_eq!(millis(Some(Duration::from_nanos(1))), 1);
        assert_eq!(millis(Some(Duration::from_micros(700))), 1);
        assert_eq!(millis(Some(Duration::from_micros(1500))), 2);
        assert_eq!(millis(Some(Duration::from_millis(100))), 100);
        assert_eq!(millis(Some(Duration::from_secs(1 << 40))), i32::MAX);
        assert!(poll_timeout(None).is_none());
    }
}

//! The live connections of a threaded server (lessons 06, 07, 10), kept so that
//! shutdown can reach every thread, even one blocked in read(2) on its client.
//!
//! Lesson 06 teaches it. A thread that serves a connection registers the socket and
//! keeps the returned [`Registered`] guard while it serves; dropping the guard (the
//! connection ended, or the thread panicked) removes it. Shutdown then goes:
//! [`LiveConnections::begin_shutdown`] (shutdown(SHUT_RD) on every socket: each
//! blocked read returns 0, each thread finishes the echo in hand),
//! [`LiveConnections::finish`] (wait up to a grace period, then shutdown(SHUT_RDWR)
//! on whoever is still busy: their blocked write fails).
//!
//! The race it closes: a thread that has just accepted a connection but has not yet
//! registered it when shutdown sweeps the map would be missed, and would then block
//! in read until its client left (minutes, maybe). So `stopping` and the map share one
//! lock: a socket registered after the sweep finds `stopping` set and has its reads
//! cut at once (and its writes too, if it comes after `finish` has cut off the rest).

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

// ANCHOR: live
/// The connections being served, by number, with their sockets.
pub struct LiveConnections {
    state: Mutex<State>,
    /// Signalled when a connection leaves and when shutdown begins.
    changed: Condvar,
    /// Written to (one byte) when a connection leaves or shutdown begins, for a
    /// server loop that waits in poll(2) rather than on the condition variable.
    waker: Option<UnixStream>,
}

struct State {
    /// `None` for a request without a socket of its own (a UDP datagram).
    live: HashMap<u64, Option<LiveSocket>>,
    total: u64,
    stopping: bool,
    /// [`LiveConnections::finish`] has cut off whoever was left.
    grace_over: bool,
}

/// Held by the thread serving one connection; dropping it unregisters it.
pub struct Registered {
    connections: Arc<LiveConnections>,
    /// 1 for the first connection the server registered, 2 for the next...
    pub number: u64,
    /// How many were live right after this one joined.
    pub live_now: usize,
}
// ANCHOR_END: live

impl LiveConnections {
    pub fn new() -> Arc<LiveConnections> {
        LiveConnections::build(None)
    }

    /// Like [`new`](Self::new), and a byte is written to `waker` (non-blocking) each
    /// time a connection leaves or shutdown begins.
    pub fn with_waker(waker: UnixStream) -> Arc<LiveConnections> {
        LiveConnections::build(Some(waker))
    }

    fn build(waker: Option<UnixStream>) -> Arc<LiveConnections> {
        Arc::new(LiveConnections {
            state: Mutex::new(State {
                live: HashMap::new(),
                total: 0,
                stopping: false,
                grace_over: false,
            }),
            changed: Condvar::new(),
            waker,
        })
    }

    /// The lock, even if a serving thread panicked while holding it: the map and the
    /// counters are always in a usable state, so that is no reason to stop serving.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.changed.notify_all();
        if let Some(waker) = &self.waker {
            // A full buffer means a wake-up is pending already.
            let _ = (&*waker).write(&[1]);
        }
    }

    // ANCHOR: register
    /// Adds a connection (its socket, or `None`), numbered in order of arrival.
    /// If shutdown has begun, its reads are cut at once (see the module's race); if
    /// the grace period is over too, its writes as well.
    pub fn register(self: &Arc<Self>, socket: Option<Arc<TcpStream>>) -> Registered {
        self.register_socket(socket.map(LiveSocket::Tcp))
    }

    /// [`register`](Self::register) for a local (AF_UNIX) stream connection (lesson 16).
    pub fn register_local(self: &Arc<Self>, socket: Arc<UnixStream>) -> Registered {
        self.register_socket(Some(LiveSocket::Local(socket)))
    }

    fn register_socket(self: &Arc<Self>, socket: Option<LiveSocket>) -> Registered {
        let mut state = self.state();
        if let Some(socket) = &socket {
            if state.grace_over {
                let _ = socket.shutdown(Shutdown::Both);
            } else if state.stopping {
                let _ = socket.shutdown(Shutdown::Read);
            }
        }
        state.total += 1;
        let number = state.total;
        state.live.insert(number, socket);
        Registered {
            connections: Arc::clone(self),
            number,
            live_now: state.live.len(),
        }
    }
    // ANCHOR_END: register

    // ANCHOR: begin_shutdown
    /// Ctrl-C: from now on nothing new is served, and every live connection sees the
    /// end of its input: shutdown(SHUT_RD) makes a read(2) blocked in another thread
    /// return 0 at once. Takes the lock only briefly (no thread ever logs or blocks
    /// while holding it), so it is safe from the signal thread.
    pub fn begin_shutdown(&self) {
        let mut state = self.state();
        state.stopping = true;
        for socket in state.live.values().flatten() {
            let _ = socket.shutdown(Shutdown::Read);
        }
        drop(state);
        self.changed();
    }
    // ANCHOR_END: begin_shutdown

    pub fn is_stopping(&self) -> bool {
        self.state().stopping
    }

    /// Blocks until shutdown has begun.
    pub fn wait_for_shutdown(&self) {
        let mut state = self.state();
        while !state.stopping {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Blocks until fewer than `max` connections are live; false if shutdown began.
    pub fn wait_for_room(&self, max: usize) -> bool {
        let mut state = self.state();
        while state.live.len() >= max && !state.stopping {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        !state.stopping
    }

    // ANCHOR: finish
    /// After [`begin_shutdown`](Self::begin_shutdown): waits up to `grace` for every
    /// connection to leave, then cuts off whoever is still there with
    /// shutdown(SHUT_RDWR) (a thread blocked writing to a client that does not read
    /// gets an error and ends). Returns how many were cut off.
    pub fn finish(&self, grace: Duration) -> usize {
        let deadline = Instant::now() + grace;
        let mut state = self.state();
        while !state.live.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = match self.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        state.grace_over = true;
        for socket in state.live.values().flatten() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        state.live.len()
    }
    // ANCHOR_END: finish

    /// How many connections are live now.
    pub fn live(&self) -> usize {
        self.state().live.len()
    }

    /// How many connections were ever registered.
    pub fn total(&self) -> u64 {
        self.state().total
    }
}

/// A registered connection's socket: TCP, or a local (AF_UNIX) stream. All the
/// registry ever does with it is shutdown(2), which works the same on both.
enum LiveSocket {
    Tcp(Arc<TcpStream>),
    Local(Arc<UnixStream>),
}

impl LiveSocket {
    fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            LiveSocket::Tcp(socket) => socket.shutdown(how),
            LiveSocket::Local(socket) => socket.shutdown(how),
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::log!(
                "{} connection {}: its thread panicked; the server goes on",
                crate::log::ERROR,
                self.number
            );
        }
        self.connections.state().live.remove(&self.number);
        self.connections.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn registered_after_shutdown_began_sees_end_of_input_at_once() {
        let connections = LiveConnections::new();
        connections.begin_shutdown();
        let (_client, server) = pair();
        let server = Arc::new(server);
        let _registered = connections.register(Some(Arc::clone(&server)));
        let mut buffer = [0u8; 16];
        // Without the check in `register` this read would block until the client left.
        assert_eq!((&*server).read(&mut buffer).unwrap(), 0);
    }

    #[test]
    fn registered_after_the_grace_period_cannot_write() {
        let connections = LiveConnections::new();
        connections.begin_shutdown();
        assert_eq!(connections.finish(Duration::ZERO), 0);
        let (_client, server) = pair();
        let server = Arc::new(server);
        let _registered = connections.register(Some(Arc::clone(&server)));
        // A client that keeps sending could keep a thread that only lost its reads
        // echoing for ever (Linux still returns data that arrives after SHUT_RD);
        // with its writes cut too, the first echo fails and the thread ends.
        assert!((&*server).write_all(b"late").is_err());
    }

    #[test]
    fn shutdown_wakes_a_blocked_reader_and_finish_waits_for_it() {
        let connections = LiveConnections::new();
        let (_client, server) = pair();
        let server = Arc::new(server);
        let registered = connections.register(Some(Arc::clone(&server)));
        assert_eq!(registered.live_now, 1);
        let reader = std::thread::spawn(move || {
            let _registered = registered;
            let mut buffer = [0u8; 16];
            (&*server).read(&mut buffer).unwrap()
        });
        connections.begin_shutdown();
        assert_eq!(connections.finish(Duration::from_secs(10)), 0);
        assert_eq!(reader.join().unwrap(), 0);
        assert_eq!(connections.live(), 0);
        assert_eq!(connections.total(), 1);
    }
}

//! The shutdown signal: Ctrl-C (SIGINT) in the terminal, or SIGTERM from `kill`.

/// Runs `on_signal` on a thread of its own each time SIGINT or SIGTERM arrives.
///
/// The `ctrlc` crate installs the signal handlers. The handler itself only posts a
/// semaphore (`sem_post(3)`, one of the few calls a signal handler may safely make);
/// a thread of ctrlc's waits on that semaphore and calls `on_signal`. So `on_signal`
/// runs as ordinary code on an ordinary thread, but it should still be short: it must
/// not log (the log may be what is stuck) nor take a lock that a thread can hold for
/// long. Set a flag, wake the main loop, shut down a socket; let the main thread
/// write the `shutting down` line.
pub fn on_shutdown<F>(on_signal: F) -> Result<(), String>
where
    F: FnMut() + Send + 'static,
{
    ctrlc::set_handler(on_signal)
        .map_err(|err| format!("cannot install the SIGINT/SIGTERM handler: {err}"))
}

/// The self-pipe trick: returns a socket that becomes readable when SIGINT or SIGTERM
/// arrives, for a server to watch in the same `select`/`poll` call as its
/// connections, so that a signal wakes the loop at once (no polling timeout).
///
/// It is one end of a connected pair of Unix sockets (a pipe would do as well); on
/// a signal, ctrlc's thread (woken by the semaphore its signal handler posts, see
/// [`on_shutdown`]) writes a byte into the other end. Both ends are non-blocking, so
/// the writer never waits, and the reader can drain it without blocking. In a C
/// program the signal handler itself would write the byte: `write(2)` is
/// async-signal-safe.
// ANCHOR: shutdown_wakeup
pub fn shutdown_wakeup() -> Result<std::os::unix::net::UnixStream, String> {
    use std::io::Write;
    let failed = |err: std::io::Error| format!("cannot create the shutdown wake-up pair: {err}");
    let (reader, mut writer) = std::os::unix::net::UnixStream::pair().map_err(failed)?;
    reader.set_nonblocking(true).map_err(failed)?;
    writer.set_nonblocking(true).map_err(failed)?;
    on_shutdown(move || {
        // A full buffer (WouldBlock) means a wake-up is already pending: nothing to do.
        let _ = writer.write(&[1]);
    })?;
    Ok(reader)
}
// ANCHOR_END: shutdown_wakeup

use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use socket2::Socket;

// ANCHOR: wake_on_shutdown
/// Ctrl-C for a server whose main thread blocks in accept(2), then in recv(2) and
/// send(2) on one client at a time (lessons 01 and 02), so that the main thread
/// itself can log the last line and return.
///
/// A signal does not make those calls return (the handler runs on a thread of its
/// own), but shutdown(2) on a socket, from any thread, wakes every call blocked on
/// it: accept(2) on a listener that is shut down fails (EINVAL, on Linux), recv(2)
/// returns 0 as at end of file, send(2) fails with EPIPE. That is all the signal
/// thread does: it neither logs nor waits for anything.
pub struct WakeOnShutdown {
    /// A second descriptor (dup(2)) of the listening socket.
    listener: Socket,
    /// One lock for both, held only for a moment and never while logging, so that
    /// a client accepted just as the signal comes is either shut down by the signal
    /// thread or told by [`client_arrived`](Self::client_arrived) not to serve.
    state: Mutex<ClientBeingServed>,
}

struct ClientBeingServed {
    stopping: bool,
    client: Option<Arc<TcpStream>>,
}

impl WakeOnShutdown {
    /// Installs the SIGINT/SIGTERM handler that shuts down `listener` and the client
    /// being served.
    pub fn install<S: AsFd>(listener: &S) -> Result<Arc<WakeOnShutdown>, String> {
        let listener = listener
            .as_fd()
            .try_clone_to_owned()
            .map_err(|err| format!("cannot duplicate the listening socket: {err}"))?;
        let wake = Arc::new(WakeOnShutdown {
            listener: Socket::from(listener),
            state: Mutex::new(ClientBeingServed {
                stopping: false,
                client: None,
            }),
        });
        let on_signal = Arc::clone(&wake);
        on_shutdown(move || on_signal.shut_down_sockets())?;
        Ok(wake)
    }

    /// On the signal thread: mark the stop, and wake the main thread wherever it waits.
    fn shut_down_sockets(&self) {
        let mut state = self.state();
        state.stopping = true;
        let _ = self.listener.shutdown(Shutdown::Both);
        if let Some(client) = &state.client {
            let _ = client.shutdown(Shutdown::Both);
        }
    }

    /// Has SIGINT or SIGTERM come? Then the server stops instead of going on.
    pub fn stopping(&self) -> bool {
        self.state().stopping
    }

    /// The main thread is about to serve `client`. False when the signal has come
    /// already: then it must not (nothing would wake it from recv).
    pub fn client_arrived(&self, client: &Arc<TcpStream>) -> bool {
        let mut state = self.state();
        state.client = Some(Arc::clone(client));
        !state.stopping
    }

    /// The client is gone: forget it, so that its socket closes when the main thread
    /// drops it.
    pub fn client_left(&self) {
        self.state().client = None;
    }

    fn state(&self) -> MutexGuard<'_, ClientBeingServed> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
// ANCHOR_END: wake_on_shutdown

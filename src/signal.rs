//! The shutdown signal: Ctrl-C (SIGINT) in the terminal, or SIGTERM from `kill`.

/// Runs `on_signal` on a thread of its own each time SIGINT or SIGTERM arrives.
///
/// The `ctrlc` crate installs the signal handlers; the handler itself only writes a
/// byte to a pipe (about all a signal handler may safely do), and a thread reading
/// that pipe calls `on_signal`. So `on_signal` is ordinary code: it may print, take
/// locks, or end the process with `std::process::exit`.
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
/// It is one end of a connected pair of Unix sockets (a pipe would do as well); the
/// handler writes a byte into the other end. Both ends are non-blocking, so the
/// handler never waits, and the reader can drain it without blocking.
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

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

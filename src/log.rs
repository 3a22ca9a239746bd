//! The servers' log: one plain line at a time on stdout, written so that stdout can
//! never hurt the server.
//!
//! `println!` is wrong for a server. It panics when stdout is a closed pipe
//! (`server | head -1`: "failed printing to stdout: Broken pipe"), and it blocks
//! when stdout is a pipe that nobody reads (a stalled terminal, a fifo): the thread
//! that prints stops serving, and if it holds a lock, so does every thread that
//! wants that lock, the Ctrl-C thread too.
//!
//! So a server never writes to stdout itself. [`line`] (and the [`log!`](crate::log!)
//! macro) puts the line in a queue and returns at once; one writer thread takes lines
//! from the queue and writes them, ignoring errors. When the queue is full (stdout
//! stalled, or much slower than the server), new lines are counted and dropped, and
//! the writer says how many when it catches up. [`last_line`] queues the
//! `shutting down` line and waits a little for the writer, never more than
//! [`LAST_LINE_WAIT`], so a server still stops within its second.
//!
//! The words that tests look for are declared once, below: reword one here and every
//! server and test follows.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

// ANCHOR: words
/// The first line of every server: `listening on 127.0.0.1:8009`.
pub const LISTENING_ON: &str = "listening on";
/// The last line of every server: `shutting down ...`.
pub const SHUTTING_DOWN: &str = "shutting down";
/// A client arrived: `connected 127.0.0.1:54012 -> 127.0.0.1:8009 ...`.
pub const CONNECTED: &str = "connected";
/// Data arrived: `received 6 bytes from 127.0.0.1:54012 -> ...: "hello\n"`.
pub const RECEIVED: &str = "received";
/// A client is gone: `disconnected 127.0.0.1:54012 -> 127.0.0.1:8009 ...`.
pub const DISCONNECTED: &str = "disconnected";
/// One client's failure (the server goes on): `error: ...`.
pub const ERROR: &str = "error:";
// ANCHOR_END: words

/// Lines waiting for the writer; more are dropped (and counted) until it catches up.
pub const QUEUE_LINES: usize = 16 * 1024;
/// The longest [`last_line`] waits for the writer before the server exits anyway.
pub const LAST_LINE_WAIT: Duration = Duration::from_millis(300);

struct Queue {
    lines: VecDeque<String>,
    /// Lines dropped because the queue was full, not yet reported.
    dropped: u64,
    /// The writer is writing a line right now (taken off the queue, not yet written).
    writing: bool,
}

struct Log {
    queue: Mutex<Queue>,
    /// Signalled when a line is queued (the writer waits on it) and when the queue
    /// empties (`last_line` waits on it).
    changed: Condvar,
}

impl Log {
    /// The lock, even if a thread panicked holding it: the queue is always usable.
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The log, and its writer thread, started on first use.
fn log() -> &'static Log {
    static LOG: OnceLock<&'static Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let log: &'static Log = Box::leak(Box::new(Log {
            queue: Mutex::new(Queue {
                lines: VecDeque::new(),
                dropped: 0,
                writing: false,
            }),
            changed: Condvar::new(),
        }));
        // If no thread can be started, lines simply stay queued (and then dropped):
        // the server still serves.
        let _ = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_forever(log));
        log
    })
}

/// The writer thread: the only code in a server that writes to stdout.
fn write_forever(log: &'static Log) {
    let mut stdout = std::io::stdout();
    loop {
        let (line, dropped) = {
            let mut queue = log.queue();
            queue.writing = false;
            log.changed.notify_all();
            while queue.lines.is_empty() && queue.dropped == 0 {
                queue = log
                    .changed
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            queue.writing = true;
            let dropped = std::mem::take(&mut queue.dropped);
            (queue.lines.pop_front(), dropped)
        };
        // ANCHOR: write
        // Outside the lock: this write may block for as long as stdout is stalled,
        // and nobody else waits for it. Errors (EPIPE: stdout was closed) are ignored;
        // the server's work does not depend on its log.
        if dropped > 0 {
            let _ = writeln!(
                stdout,
                "({dropped} log lines dropped: stdout was not keeping up)"
            );
        }
        if let Some(line) = line {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
        // ANCHOR_END: write
    }
}

// ANCHOR: line
/// Queues one line for stdout and returns at once; never panics, never blocks on
/// stdout. Use it through [`log!`](crate::log!).
pub fn line(text: String) {
    let log = log();
    let mut queue = log.queue();
    if queue.lines.len() >= QUEUE_LINES {
        queue.dropped += 1;
    } else {
        queue.lines.push_back(text);
    }
    log.changed.notify_all();
}
// ANCHOR_END: line

/// The first line of every server, `listening on IP:PORT`, with the address bound.
pub fn listening(addr: SocketAddr) {
    line(format!("{LISTENING_ON} {addr}"));
}

/// Queues the server's last line (it should begin with [`SHUTTING_DOWN`]) and waits
/// until the writer has written everything, at most [`LAST_LINE_WAIT`]: a stalled
/// stdout must not keep a stopping server alive. When stdout is merely slow and the
/// backlog has not drained by half that time, the lines still waiting are dropped
/// (and counted), so that the count and the last line go out next: the last line is
/// the one a reader must see.
pub fn last_line(text: String) {
    let log = log();
    let started = Instant::now();
    let mut queue = log.queue();
    // The last line is never dropped: make room for it if need be.
    if queue.lines.len() >= QUEUE_LINES {
        queue.lines.pop_front();
        queue.dropped += 1;
    }
    queue.lines.push_back(text);
    log.changed.notify_all();
    let mut backlog_dropped = false;
    while !queue.lines.is_empty() || queue.writing || queue.dropped > 0 {
        let waited = started.elapsed();
        if waited >= LAST_LINE_WAIT {
            return;
        }
        if !backlog_dropped && waited >= LAST_LINE_WAIT / 2 && queue.lines.len() > 1 {
            let last = queue.lines.pop_back();
            queue.dropped += queue.lines.len() as u64;
            queue.lines.clear();
            queue.lines.extend(last);
            backlog_dropped = true;
        }
        let left = if waited < LAST_LINE_WAIT / 2 {
            LAST_LINE_WAIT / 2 - waited
        } else {
            LAST_LINE_WAIT - waited
        };
        queue = match log.changed.wait_timeout(queue, left) {
            Ok((queue, _)) => queue,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

/// `log!("connected {peers}")`: formats a line and queues it with [`line`].
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(format!($($arg)*))
    };
}

// ANCHOR: rate_limited
/// A log line that can repeat without end (accept(2) failing with EMFILE in every
/// worker, every 100 ms): at most one line per `interval` is queued, the others are
/// counted, and the next line that is written says how many were left out. Without
/// it, 64 workers out of descriptors log 640 lines a second and bury everything else.
pub struct RateLimitedLog {
    interval: Duration,
    state: Mutex<RateLimitedState>,
}

struct RateLimitedState {
    /// When the last line was queued; `None` before the first.
    last: Option<Instant>,
    /// Lines left out since then.
    left_out: u64,
}

impl RateLimitedLog {
    pub const fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog {
            interval,
            state: Mutex::new(RateLimitedState {
                last: None,
                left_out: 0,
            }),
        }
    }

    /// Queues `text` (see [`line`]) unless a line went out less than `interval` ago;
    /// then only counts it.
    pub fn line(&self, text: String) {
        match self.admit(Instant::now()) {
            None => {}
            Some(0) => line(text),
            Some(left_out) => line(format!("{text} (and {left_out} more like it, not shown)")),
        }
    }

    /// Whether a line at `now` goes out, and if so, how many were left out before it.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state
            .last
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            state.left_out += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.left_out))
    }
}
// ANCHOR_END: rate_limited

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_lets_one_line_out_per_interval_and_counts_the_rest() {
        let log = RateLimitedLog::new(Duration::from_secs(1));
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(log.admit(at(0)), Some(0));
        assert_eq!(log.admit(at(100)), None);
        assert_eq!(log.admit(at(999)), None);
        assert_eq!(log.admit(at(1000)), Some(2));
        assert_eq!(log.admit(at(1500)), None);
        assert_eq!(log.admit(at(9000)), Some(1));
    }
}

//! The framework, part 4: `Forking`, a child process per request (Python's
//! `ForkingMixIn`). In reading order: the fork; what the child does (its own signal
//! handlers, its log, `_exit`); how the parent learns that a child has exited (SIGCHLD)
//! and collects it (reaping); and how a forking server stops.

use std::collections::BTreeSet;
use std::ffi::c_int;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::socket::{self, MsgFlags};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use workbook::log;

use super::GRACE;
use super::concurrency::{AdmittedRequest, Concurrency, ServerContext};
use crate::log_words::REAPED;

/// The longest log line a child can send to its parent (they are much shorter:
/// `show::bytes` shortens what it shows).
const MAX_LOG_LINE: usize = 64 * 1024;

/// A child process per request, at most `max_children` at once: Python's
/// `ForkingMixIn` (whose `max_children` is 40 too).
pub struct Forking {
    max_children: usize,
    children: BTreeSet<i32>,
    /// Set up by `start`: how the children's log lines reach the parent.
    child_logs: Option<ChildLogs>,
}

/// A pair of connected datagram sockets: each child sends its log lines, one datagram
/// per line, to `to_parent` (its inherited copy); the parent reads them from
/// `from_children` and logs them.
struct ChildLogs {
    from_children: UnixDatagram,
    to_parent: UnixDatagram,
    buffer: Vec<u8>,
}

impl Forking {
    pub fn new(max_children: usize) -> Forking {
        Forking {
            max_children,
            children: BTreeSet::new(),
            child_logs: None,
        }
    }
}

impl Concurrency for Forking {
    fn describe(&self, per: &str) -> String {
        format!(
            "forking: a child process per {per}, at most {} at once",
            self.max_children
        )
    }

    fn start(&mut self, context: &ServerContext) -> Result<(), String> {
        let failed = |err: std::io::Error| format!("cannot create the children's log pair: {err}");
        let (from_children, to_parent) = UnixDatagram::pair().map_err(failed)?;
        from_children.set_nonblocking(true).map_err(failed)?;
        self.child_logs = Some(ChildLogs {
            from_children,
            to_parent,
            buffer: vec![0u8; MAX_LOG_LINE],
        });
        watch_children(Some(context.waker.as_raw_fd()))
    }

    fn at_bound(&self, _context: &ServerContext) -> bool {
        self.children.len() >= self.max_children
    }

    // ANCHOR: fork
    fn process_request(&mut self, request: AdmittedRequest, context: &ServerContext) {
        let to_parent = self
            .child_logs
            .as_ref()
            .map_or(-1, |logs| logs.to_parent.as_raw_fd());
        // Ctrl-C and SIGTERM wait (blocked) until the child has its own handlers.
        let mut old_mask = SigSet::empty();
        let _ = signal::pthread_sigmask(
            SigmaskHow::SIG_BLOCK,
            Some(&stop_signals()),
            Some(&mut old_mask),
        );
        // SAFETY: the child starts with this thread only, a copy of a process that
        // has two more: the signal thread and the log's writer thread. A lock that one
        // of them holds at this moment stays held in the child for ever, so the child
        // takes none of theirs: it never uses `workbook::log` or stdout (its lines go to
        // the parent, see `log_line`) nor the registry of live requests (which
        // shutdown() locks). glibc's fork takes care of the allocator's locks.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => run_child(request, context, to_parent, &old_mask),
            Ok(ForkResult::Parent { child }) => {
                self.children.insert(child.as_raw());
                // Dropping the request closes our copy of the connection; the child has
                // its own. Keep it, and the client never sees the connection end (the
                // socket lives while any process has it open), and we run out of
                // descriptors after about a thousand clients.
                drop(request);
            }
            // EAGAIN (too many processes) or ENOMEM: this client is dropped (and its
            // connection closed with the request); the server goes on.
            Err(err) => workbook::log!("{} {}: cannot fork: {err}", log::ERROR, request.peers),
        }
        let _ = signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    }
    // ANCHOR_END: fork

    fn service_actions(&mut self, context: &ServerContext) {
        self.relay_child_logs();
        self.reap(context);
    }

    // ANCHOR: forking_close
    fn server_close(&mut self, context: &ServerContext) -> &'static str {
        // Ask every child to stop reading (their handler: see stop_reading).
        for pid in &self.children {
            let _ = signal::kill(Pid::from_raw(*pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        loop {
            self.relay_child_logs();
            self.reap(context);
            if self.children.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Still busy after GRACE (writing to a client that does not read):
                // SIGKILL cannot be caught, then a blocking waitpid per child.
                self.relay_child_logs();
                for pid in std::mem::take(&mut self.children) {
                    let pid = Pid::from_raw(pid);
                    let _ = signal::kill(pid, Signal::SIGKILL);
                    loop {
                        match waitpid(pid, None) {
                            Err(Errno::EINTR) => continue,
                            Ok(status) => self.reaped(status, context),
                            Err(_) => {}
                        }
                        break;
                    }
                }
                break;
            }
            // Woken by SIGCHLD as each child exits.
            context.wait(None, Some(left));
        }
        self.relay_child_logs();
        let _ = watch_children(None);
        ", all children reaped"
    }
    // ANCHOR_END: forking_close
}

/// In a forked child: its connection, which SIGTERM and SIGINT stop reading; -1: none.
static CHILD_CONNECTION: AtomicI32 = AtomicI32::new(-1);
/// In a forked child: where its log lines go (the parent); -1 in the server itself.
static LOG_TO_PARENT: AtomicI32 = AtomicI32::new(-1);

// ANCHOR: child
/// The child process: serves one request, then `_exit`. Never returns.
fn run_child(
    request: AdmittedRequest,
    context: &ServerContext,
    to_parent: RawFd,
    mask: &SigSet,
) -> ! {
    // The listening socket is the parent's: a child that kept it open would keep the
    // port in LISTEN after the parent is gone (the kernel would still queue clients
    // nobody accepts). The TcpListener value is never dropped here: we _exit.
    if let Some(listener) = context.listener {
        let _ = nix::unistd::close(listener);
    }
    LOG_TO_PARENT.store(to_parent, Ordering::SeqCst);
    // The parent's handlers for Ctrl-C and SIGTERM write to a pipe read by a thread
    // that exists only in the parent. Ours: stop reading (TCP), or die (UDP).
    let connection = request
        .socket
        .as_ref()
        .map_or(-1, |socket| socket.as_raw_fd());
    CHILD_CONNECTION.store(connection, Ordering::SeqCst);
    let on_stop = if connection >= 0 {
        SigHandler::Handler(stop_reading)
    } else {
        SigHandler::SigDfl
    };
    let stop = SigAction::new(on_stop, SaFlags::SA_RESTART, SigSet::empty());
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: stop_reading calls only async-signal-safe functions.
    unsafe {
        let _ = signal::sigaction(Signal::SIGINT, &stop);
        let _ = signal::sigaction(Signal::SIGTERM, &stop);
        let _ = signal::sigaction(Signal::SIGCHLD, &default);
    }
    let _ = signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(mask), None);

    let ok = (request.run)(&format!(" (pid {})", std::process::id()));

    // _exit(2), not exit(3) nor std::process::exit: those run the exit handlers the
    // parent registered and flush buffers (the C library's, Rust's stdout) that in
    // the child are copies of the parent's. The kernel closes our descriptors, and
    // the parent is sent SIGCHLD. (nix has no wrapper for _exit.)
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { nix::libc::_exit(if ok { 0 } else { 1 }) }
}
// ANCHOR_END: child

// ANCHOR: child_log
/// `log_line` in a forked child: sends `line` to the parent, wakes it, and returns
/// true; in the server's own process, returns false (and `log_line` logs as usual).
///
/// Why not log in the child? `workbook::log` queues lines for a writer thread, and the
/// child has no such thread (fork copies only the thread that calls it); worse, the
/// queue's lock may have been held by that thread at the moment of the fork, and then
/// it is held for ever in the child. Why not write(2) to stdout directly? On a stalled
/// stdout the write blocks, and the child's client waits with it (O_NONBLOCK on
/// stdout would change it for the parent and the terminal too). A datagram sent with
/// MSG_DONTWAIT never waits, arrives whole, and the parent logs it as its own.
pub fn send_to_parent(line: &str) -> bool {
    let to_parent = LOG_TO_PARENT.load(Ordering::SeqCst);
    if to_parent < 0 {
        return false;
    }
    // Errors are ignored: if the parent is that far behind (EAGAIN), the line is lost.
    if socket::send(to_parent, line.as_bytes(), MsgFlags::MSG_DONTWAIT).is_ok() {
        wake_parent();
    }
    true
}

impl Forking {
    /// In the parent, after every wake-up: logs what the children have sent.
    fn relay_child_logs(&mut self) {
        let Some(logs) = &mut self.child_logs else {
            return;
        };
        loop {
            match logs.from_children.recv(&mut logs.buffer) {
                Ok(size) => log::line(String::from_utf8_lossy(&logs.buffer[..size]).into_owned()),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                // WouldBlock: nothing more for now.
                Err(_) => return,
            }
        }
    }
}
// ANCHOR_END: child_log

impl Forking {
    // ANCHOR: reap
    /// Collects every child that has exited: waitpid(-1, WNOHANG) returns one exited
    /// child's status and frees what the kernel kept of it (a zombie), or says that the
    /// children left are all still running (StillAlive), or that there are none (ECHILD).
    fn reap(&mut self, context: &ServerContext) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            self.reaped(status, context);
        }
    }
    // ANCHOR_END: reap

    fn reaped(&mut self, status: WaitStatus, context: &ServerContext) {
        let Some(pid) = status.pid() else { return };
        self.children.remove(&pid.as_raw());
        let how = match status {
            WaitStatus::Exited(_, code) => format!("exit status {code}"),
            WaitStatus::Signaled(_, signal, _) => format!("killed by {signal}"),
            other => format!("{other:?}"),
        };
        // A child that did not exit 0 is an error, logged even with --quiet.
        let failed = !matches!(status, WaitStatus::Exited(_, 0));
        if failed || !context.quiet {
            let left = match self.children.len() {
                1 => "1 child".to_string(),
                n => format!("{n} children"),
            };
            workbook::log!("{REAPED} {pid}: {how} ({left} still running)");
        }
    }
}

/// The wake-up socket of the serving loop, for the SIGCHLD handler and for a child
/// that has sent a log line; -1 when there is none.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// Writes a byte to the wake-up: send(2) is async-signal-safe, and MSG_DONTWAIT means
/// it never waits (a full buffer: a wake-up is pending already).
fn wake_parent() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let _ = socket::send(fd, &[1], MsgFlags::MSG_DONTWAIT);
    }
}

// ANCHOR: sigchld
/// The SIGCHLD handler: the self-pipe trick. A signal handler may interrupt any code,
/// even malloc or a log line holding a lock, so it may only call async-signal-safe
/// functions (man 7 signal-safety); send(2) is one. The byte wakes the serving
/// loop's poll(2), and the loop, as ordinary code, reaps and logs.
extern "C" fn child_exited(_signal: c_int) {
    // send(2) may change errno under the code this signal interrupted: put it back.
    let saved = Errno::last_raw();
    wake_parent();
    Errno::set_raw(saved);
}

/// Installs `child_exited` for SIGCHLD (with `Some(wake-up)`), or restores the default.
fn watch_children(wake: Option<RawFd>) -> Result<(), String> {
    let handler = match wake {
        Some(fd) => {
            WAKE_FD.store(fd, Ordering::SeqCst);
            SigHandler::Handler(child_exited)
        }
        None => SigHandler::SigDfl,
    };
    // SA_RESTART: calls interrupted by SIGCHLD on other threads carry on by themselves.
    // SA_NOCLDSTOP: no signal when a child is merely stopped (Ctrl-Z).
    let action = SigAction::new(
        handler,
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler calls only async-signal-safe functions (see child_exited).
    unsafe { signal::sigaction(Signal::SIGCHLD, &action) }
        .map_err(|err| format!("cannot install the SIGCHLD handler: {err}"))?;
    if wake.is_none() {
        WAKE_FD.store(-1, Ordering::SeqCst);
    }
    Ok(())
}
// ANCHOR_END: sigchld

/// A forked child's SIGINT and SIGTERM handler: stop reading the connection, as
/// shutdown(SHUT_RD) did for lesson 06's threads. The handler's blocked read returns
/// 0, it finishes the reply in hand, and the child exits. shutdown(2) is
/// async-signal-safe.
extern "C" fn stop_reading(_signal: c_int) {
    let saved = Errno::last_raw();
    let fd = CHILD_CONNECTION.load(Ordering::SeqCst);
    if fd >= 0 {
        let _ = socket::shutdown(fd, socket::Shutdown::Read);
    }
    Errno::set_raw(saved);
}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

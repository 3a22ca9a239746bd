//! `cargo run -- run NN [CLIENT ARGS]`: a lesson's server and client in one terminal.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::lessons::Lesson;
use crate::{error, lesson_arg, usage_error};

/// How long the server may take to print `listening on` (a first build is not counted).
const START_WAIT: Duration = Duration::from_secs(10);
/// How long the client may run before it is stopped.
const CLIENT_WAIT: Duration = Duration::from_secs(60);
/// The contract says a server exits within a second of SIGINT; allow a little more.
const STOP_WAIT: Duration = Duration::from_secs(3);
/// After the client's end, the server's lines are still shown until its output has
/// been quiet this long (see `settle`)...
const SETTLE_QUIET: Duration = Duration::from_millis(50);
/// ... but no longer than this in all, for a server that logs without pause.
const SETTLE_CAP: Duration = Duration::from_millis(300);

/// The programs this run started, so that a closed stdout (`run 05 | head`) stops
/// them instead of leaving them running with nobody to stop them.
/// Each with whether it runs the program under a tracer (then its child gets the signal).
/// A program leaves the list when it is reaped (`try_reap`): its pid may then be
/// given to another process, which must not get our signal.
static STARTED: Mutex<Vec<(u32, bool)>> = Mutex::new(Vec::new());

/// Prints `text`; if stdout is gone, sends SIGINT to the programs started (a server
/// stops on it by the contract, a client ends) and exits quietly.
fn show(text: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        stop_started();
        remove_private_dir();
        std::process::exit(0);
    }
}

/// SIGINT to the programs this run started (a traced one's own process, not its
/// strace): a server stops on it by the contract, a client ends, and each strace
/// ends with the program it traces.
fn stop_started() {
    let started = STARTED.lock().map(|pids| pids.clone()).unwrap_or_default();
    for (pid, traced) in started {
        let _ = kill(Pid::from_raw(to_signal(pid, traced) as i32), Signal::SIGINT);
    }
}

/// SIGINT or SIGTERM to the workbook stops the programs it started before it ends.
/// Ctrl-C in a terminal reaches the whole process group, but SIGTERM (`kill`, a CI
/// job's timeout) reaches only the workbook: without this the server, the client
/// and their straces went on running, owned by init.
fn stop_on_signal() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // ctrlc runs this on a thread of its own, so it may lock and print.
        let installed = ctrlc::set_handler(|| {
            stop_started();
            remove_private_dir();
            let _ = writeln!(
                std::io::stderr(),
                "workbook │ stopped by a signal; the server and the client were sent SIGINT"
            );
            std::process::exit(130);
        });
        if let Err(err) = installed {
            let _ = writeln!(std::io::stderr(), "warning: {err}");
        }
    });
}

/// A line from one of the two programs.
enum Event {
    Line(&'static str, String),
    Closed(&'static str),
}

/// How `run_with` starts the two programs: as they are (`run`), or under a tracer
/// (`trace`, src/bin/workbook/trace.rs).
pub trait Launch {
    /// The command that starts `exe`; `who` is "server" or "client".
    fn command(&self, exe: &Path, who: &'static str) -> Command {
        let _ = who;
        Command::new(exe)
    }
    /// Whether `command` starts a tracer that starts the program: then SIGINT goes to
    /// the tracer's child (strace ignores SIGINT while it runs a program).
    fn traces(&self) -> bool {
        false
    }
    /// How long the client may run before it is stopped.
    fn client_wait(&self) -> Duration {
        CLIENT_WAIT
    }
    /// The server, the client and the client's default arguments for `lesson`.
    fn programs(&self, lesson: &Lesson) -> Result<Programs, String> {
        if let Some(why) = lesson.not_a_pair {
            return Err(why.to_string());
        }
        Ok(Programs {
            server_bin: format!("{}_server", lesson.name),
            client_bin: format!("{}_client", lesson.name),
            client_args: lesson.client_args.iter().map(|a| a.to_string()).collect(),
        })
    }
}

/// The two programs a run starts.
pub struct Programs {
    pub server_bin: String,
    pub client_bin: String,
    /// What the client gets when the user gives nothing.
    pub client_args: Vec<String>,
}

/// The process to send SIGINT to for the program started as `pid`: its child if it
/// is a tracer (the first; itself if it has none yet).
fn to_signal(pid: u32, traced: bool) -> u32 {
    if !traced {
        return pid;
    }
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(pid)
}

/// `run`: the programs as they are.
pub struct Direct;
impl Launch for Direct {}

pub fn run(args: &[String]) -> i32 {
    run_with(args, &Direct)
}

/// Runs lesson `args[0]`'s server and client, started by `launch`; the exit status.
pub fn run_with(args: &[String], launch: &dyn Launch) -> i32 {
    stop_on_signal();
    let lesson = match lesson_arg(args.first()) {
        Ok(lesson) => lesson,
        Err(status) => return status,
    };
    let programs = match launch.programs(lesson) {
        Ok(programs) => programs,
        Err(why) => return error(&why),
    };
    let mut server_args: Vec<String> = Vec::new();
    let mut client_args: Vec<String> = Vec::new();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        if arg == "--server-args" {
            match rest.next() {
                Some(value) => server_args.extend(value.split_whitespace().map(str::to_string)),
                None => return usage_error("--server-args needs a value, e.g. \"--mode forking\""),
            }
        } else {
            client_args.push(arg.clone());
        }
    }
    if client_args.is_empty() {
        client_args = programs.client_args;
    }
    // A TLS lesson's client must trust the CA its server made (or was given): pass
    // it, as a learner would, unless the user chose one.
    if lesson.protocol.starts_with("TLS") && !client_args.iter().any(|arg| arg == "--ca") {
        let cert_dir = server_args
            .iter()
            .position(|arg| arg == "--cert-dir")
            .and_then(|at| server_args.get(at + 1))
            .map(PathBuf::from)
            .unwrap_or_else(workbook::tls::default_cert_dir);
        let ca = workbook::tls::ca_file(&cert_dir);
        client_args.splice(0..0, ["--ca".to_string(), ca.display().to_string()]);
    }
    let Programs {
        server_bin,
        client_bin,
        ..
    } = programs;
    if let Err(message) = build(&[&server_bin, &client_bin]) {
        return error(&message);
    }
    let Some(bin_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
    else {
        return error("cannot tell where the built programs are");
    };

    // A lesson on an AF_UNIX path (16) gets a private directory for this run, so that
    // it neither collides with a server the learner runs on the default path nor
    // with another `run`; removed at the end.
    let private = match private_place(lesson, &server_args) {
        Ok(private) => private,
        Err(message) => return error(&message),
    };
    if let Some(dir) = &private {
        server_args.push("--path".into());
        server_args.push(
            dir.join(format!("{}.sock", lesson.name))
                .display()
                .to_string(),
        );
        if let Ok(mut place) = PRIVATE_DIR.lock() {
            *place = Some(dir.clone());
        }
    }
    let status = run_pair(
        &server_bin,
        &client_bin,
        &bin_dir,
        &server_args,
        &client_args,
        launch,
    );
    remove_private_dir();
    status
}

/// The private directory of this run, if it made one.
static PRIVATE_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

fn remove_private_dir() {
    if let Some(dir) = PRIVATE_DIR.lock().ok().and_then(|mut dir| dir.take()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// For a lesson on an AF_UNIX path whose server was given no place of its own
/// (`--path`, `--abstract`, `--udp`): a new directory under the temporary directory,
/// mode 0700, with a name no one else has made.
fn private_place(
    lesson: &crate::lessons::Lesson,
    server_args: &[String],
) -> Result<Option<PathBuf>, String> {
    let placed = ["--path", "--abstract", "--udp"];
    if !lesson.transport.starts_with("AF_UNIX")
        || server_args.iter().any(|arg| placed.contains(&arg.as_str()))
    {
        return Ok(None);
    }
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "workbook-run-{}-{}-{nanos}",
        lesson.name,
        std::process::id()
    ));
    // create, not create_all: it fails if the name exists (made by someone else).
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    Ok(Some(dir))
}

/// Starts the server, then the client against it, shows both, stops the server.
fn run_pair(
    server_bin: &str,
    client_bin: &str,
    bin_dir: &std::path::Path,
    server_args: &[String],
    client_args: &[String],
    launch: &dyn Launch,
) -> i32 {
    let (events, received) = mpsc::channel();
    let mut server = match launch
        .command(&bin_dir.join(server_bin), "server")
        .args(server_args)
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => return error(&format!("cannot start {server_bin}: {err}")),
    };
    if let Ok(mut started) = STARTED.lock() {
        started.push((server.id(), launch.traces()));
    }
    let server_pipes = forward(&mut server, "server", &events);
    let listening = match wait_for_port(&received) {
        Ok(listening) => listening,
        Err(message) => {
            stop(&mut server, launch);
            drop(server_pipes);
            drain(&received, Duration::from_millis(200));
            return error(&message);
        }
    };
    let address_args = listening.client_args();
    show(&format!(
        "workbook │ {client_bin} {} {}\n",
        client_args.join(" "),
        address_args.join(" ")
    ));
    let mut client = match launch
        .command(&bin_dir.join(client_bin), "client")
        .args(client_args)
        .args(&address_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            stop(&mut server, launch);
            return error(&format!("cannot start {client_bin}: {err}"));
        }
    };
    if let Ok(mut started) = STARTED.lock() {
        started.push((client.id(), launch.traces()));
    }
    forward(&mut client, "client", &events);
    drop(events);

    // Show both programs' lines as they come, until the client has ended.
    let client_wait = launch.client_wait();
    let deadline = Instant::now() + client_wait;
    let mut client_streams_open = 2;
    while client_streams_open > 0 {
        match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event::Line(who, line)) => show(&format!("{who} │ {line}\n")),
            Ok(Event::Closed("client")) => client_streams_open -= 1,
            Ok(Event::Closed(_)) => {}
            Err(RecvTimeoutError::Timeout) => {
                show(&format!(
                    "workbook │ the client ran for {} s: stopping it\n",
                    client_wait.as_secs()
                ));
                kill_program(&mut client, launch);
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if client_streams_open == 0 {
        catch_up(&server_pipes, &received);
        settle(&received);
    }
    // The server's pipes hold a sender each: drop them, so the channel ends with
    // the server.
    drop(server_pipes);
    let client_status = wait_reaped(&mut client);
    show(&format!(
        "workbook │ client {}; stopping the server with SIGINT (Ctrl-C)\n",
        describe(client_status)
    ));
    let server_status = stop(&mut server, launch);
    drain(&received, Duration::from_millis(500));
    show(&format!("workbook │ server {}\n", describe(server_status)));
    client_status.and_then(|status| status.code()).unwrap_or(1)
}

/// `cargo build --bin A --bin B`, so an edited lesson is never run stale.
fn build(bins: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.arg("build").arg("--quiet");
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    for bin in bins {
        command.args(["--bin", bin]);
    }
    let status = command
        .current_dir(crate::package_dir())
        .status()
        .map_err(|err| format!("cannot run cargo build: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo build of {} failed (see above)",
            bins.join(" and ")
        ))
    }
}

/// One of a program's output pipes. A thread of its own forwards each line to the
/// channel as it comes; when the client has ended, `catch_up` reads the server's
/// pipes too, so that what the server wrote before the client's end is shown
/// before it. Two threads may read, so reading (and the line it may leave half
/// done) is under the lock; the waiting for data is not.
struct Pipe {
    who: &'static str,
    file: File,
    events: Sender<Event>,
    /// The start of a line whose end has not come yet; `None` once the pipe is closed.
    partial: Mutex<Option<Vec<u8>>>,
}

impl Pipe {
    /// Reads what the pipe holds now, without waiting, and forwards its whole lines
    /// (at end of file, the rest too, then `Closed`). At most a few reads: a program
    /// that writes without pause does not keep the caller here.
    fn read_ready(&self) {
        let mut partial = self
            .partial
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut buffer = [0u8; 64 * 1024];
        for _ in 0..16 {
            let Some(line) = partial.as_mut() else { return };
            let mut ready = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            if !matches!(poll(&mut ready, PollTimeout::ZERO), Ok(n) if n > 0) {
                return;
            }
            let got = match (&self.file).read(&mut buffer) {
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => 0,
                Ok(got) => got,
            };
            line.extend_from_slice(&buffer[..got]);
            while let Some(end) = line.iter().position(|&byte| byte == b'\n') {
                let whole: Vec<u8> = line.drain(..=end).collect();
                self.send_line(&whole[..end]);
            }
            if got == 0 {
                if !line.is_empty() {
                    let rest = std::mem::take(line);
                    self.send_line(&rest);
                }
                *partial = None;
                let _ = self.events.send(Event::Closed(self.who));
                return;
            }
        }
    }

    fn send_line(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line).into_owned();
        let _ = self.events.send(Event::Line(self.who, text));
    }

    fn is_closed(&self) -> bool {
        self.partial
            .lock()
            .map(|partial| partial.is_none())
            .unwrap_or(true)
    }
}

/// Sends each line of the child's stdout and stderr, then `Closed`, to `events`;
/// returns the two pipes (for `catch_up`).
fn forward(child: &mut Child, who: &'static str, events: &Sender<Event>) -> Vec<Arc<Pipe>> {
    let mut pipes = Vec::new();
    let outputs: [Option<OwnedFd>; 2] = [
        child.stdout.take().map(OwnedFd::from),
        child.stderr.take().map(OwnedFd::from),
    ];
    for fd in outputs.into_iter().flatten() {
        pipes.push(forward_pipe(fd, who, events));
    }
    pipes
}

/// A thread that forwards the lines of one pipe as they come.
fn forward_pipe(fd: OwnedFd, who: &'static str, events: &Sender<Event>) -> Arc<Pipe> {
    let pipe = Arc::new(Pipe {
        who,
        file: File::from(fd),
        events: events.clone(),
        partial: Mutex::new(Some(Vec::new())),
    });
    let reader = Arc::clone(&pipe);
    thread::spawn(move || {
        while !reader.is_closed() {
            // Wait outside the lock for data (or the end), then read it.
            let mut ready = [PollFd::new(reader.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut ready, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => reader.read_ready(),
                Err(_) => return,
            }
        }
    });
    pipe
}

/// The client has ended: forward what the server's pipes hold already, whichever
/// thread was going to read it. Its lines were written before the client's end, and
/// are shown before it. (Lines the server has logged and its writer thread not yet
/// written come within `settle`'s wait, or, rarely, after it.)
fn catch_up(pipes: &[Arc<Pipe>], received: &Receiver<Event>) {
    for pipe in pipes {
        pipe.read_ready();
    }
    for event in received.try_iter() {
        if let Event::Line(who, line) = event {
            show(&format!("{who} │ {line}\n"));
        }
    }
}

/// After the catch-up: shows the server's lines still coming until its output has
/// been quiet for SETTLE_QUIET (at most SETTLE_CAP in all). A server logs through a
/// writer thread (`workbook::log`), so a line it logged before the client's end may
/// reach its pipe a little after it, on a busy machine; without this wait such a line
/// was shown after `client exited`. Display only: nothing waits on it.
fn settle(received: &Receiver<Event>) {
    let cap = Instant::now() + SETTLE_CAP;
    loop {
        let left = cap.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match received.recv_timeout(SETTLE_QUIET.min(left)) {
            Ok(Event::Line(who, line)) => show(&format!("{who} │ {line}\n")),
            Ok(Event::Closed(_)) => {}
            // Quiet for SETTLE_QUIET, or every pipe closed.
            Err(_) => return,
        }
    }
}

/// Where the server said it listens.
enum Listening {
    /// `listening on IP:PORT`: the client gets `--port PORT`.
    Port(u16),
    /// `listening on unix:PATH` or `unix:@NAME` (lesson 16): the client gets
    /// `--path PATH` or `--abstract NAME`.
    Local(String),
}

impl Listening {
    fn client_args(&self) -> Vec<String> {
        match self {
            Listening::Port(port) => vec!["--port".into(), port.to_string()],
            Listening::Local(place) => match place.strip_prefix('@') {
                Some(name) => vec!["--abstract".into(), name.into()],
                None => vec!["--path".into(), place.clone()],
            },
        }
    }
}

/// Shows the server's lines until `listening on IP:PORT` (or `unix:PATH`).
fn wait_for_port(received: &Receiver<Event>) -> Result<Listening, String> {
    let deadline = Instant::now() + START_WAIT;
    loop {
        match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event::Line(who, line)) => {
                show(&format!("{who} │ {line}\n"));
                let Some(addr) = line.strip_prefix(workbook::log::LISTENING_ON) else {
                    continue;
                };
                let addr = addr.trim();
                if let Some(place) = addr.strip_prefix("unix:") {
                    return Ok(Listening::Local(place.to_string()));
                }
                if let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    return Ok(Listening::Port(port));
                }
            }
            Ok(Event::Closed(_)) => {
                return Err("the server ended before it printed `listening on`".into());
            }
            Err(_) => {
                return Err(format!(
                    "the server printed no `listening on` line within {} s",
                    START_WAIT.as_secs()
                ));
            }
        }
    }
}

/// Ctrl-C for the server (the program `launch` started it under, if any, passes it
/// on), then its exit status (killed if it does not stop in time).
fn stop(server: &mut Child, launch: &dyn Launch) -> Option<ExitStatus> {
    let pid = to_signal(server.id(), launch.traces());
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
    let deadline = Instant::now() + STOP_WAIT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = try_reap(server) {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    kill_program(server, launch);
    let _ = wait_reaped(server);
    None
}

/// Reaps `child` if it has ended, and takes it off STARTED in the same step (under
/// the list's lock, which `stop_started` takes too): no signal goes to its pid once
/// the kernel may have given that pid to another process.
fn try_reap(child: &mut Child) -> std::io::Result<Option<ExitStatus>> {
    let mut started = STARTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let status = child.try_wait()?;
    if status.is_some() {
        started.retain(|&(pid, _)| pid != child.id());
    }
    Ok(status)
}

/// Waits for `child` to end and reaps it (`try_reap`, every 10 ms: a blocking
/// wait(2) under the lock would hold up a Ctrl-C meanwhile).
fn wait_reaped(child: &mut Child) -> Option<ExitStatus> {
    loop {
        match try_reap(child) {
            Ok(Some(status)) => return Some(status),
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
}

/// SIGKILL for the program `child` runs (the traced one first: a tracer's death
/// might leave it running, untraced).
fn kill_program(child: &mut Child, launch: &dyn Launch) {
    let target = to_signal(child.id(), launch.traces());
    if target != child.id() {
        let _ = kill(Pid::from_raw(target as i32), Signal::SIGKILL);
    }
    let _ = child.kill();
}

/// Shows the lines still coming, for up to `limit`.
fn drain(received: &Receiver<Event>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while let Ok(event) = received.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if let Event::Line(who, line) = event {
            show(&format!("{who} │ {line}\n"));
        }
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("ended by a signal ({status})"),
        },
        None => format!(
            "did not stop within {} s and was killed",
            STOP_WAIT.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests here run one at a time: a program one starts (fork, then exec)
    /// holds the other's pipe ends for a moment, and that pipe's end is checked.
    static ALONE: Mutex<()> = Mutex::new(());

    fn lines(received: &Receiver<Event>) -> Vec<String> {
        received
            .try_iter()
            .map(|event| match event {
                Event::Line(who, line) => format!("{who}: {line}"),
                Event::Closed(who) => format!("{who} closed"),
            })
            .collect()
    }

    /// What a program wrote before the catch-up is in the channel when the catch-up
    /// returns, whether its pipe's thread had read it, was reading it, or had not
    /// yet run: `run NN` used to show `client exited` before server lines that were
    /// already written, when the server's reader thread had not had its turn.
    #[test]
    fn a_catch_up_forwards_every_line_already_written() {
        let _alone = ALONE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for _ in 0..200 {
            let (read_end, write_end) = nix::unistd::pipe().unwrap();
            let (events, received) = mpsc::channel();
            let mut writer = File::from(write_end);
            writer.write_all(b"one\ntwo\r\nthr").unwrap();
            let pipe = forward_pipe(read_end, "server", &events);
            pipe.read_ready();
            assert_eq!(lines(&received), ["server: one", "server: two"]);
            // The end of the last line, and the end of the pipe.
            writer.write_all(b"ee\nfour").unwrap();
            drop(writer);
            pipe.read_ready();
            assert_eq!(
                lines(&received),
                ["server: three", "server: four", "server closed"]
            );
        }
    }

    /// A program leaves STARTED once it is reaped: its pid may go to another
    /// process then, which a later Ctrl-C or closed stdout must not signal.
    #[test]
    fn a_reaped_program_is_no_longer_signalled() {
        let _alone = ALONE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        STARTED.lock().unwrap().push((pid, false));
        let status = wait_reaped(&mut child);
        assert!(status.is_some_and(|status| status.success()));
        assert!(
            !STARTED
                .lock()
                .unwrap()
                .iter()
                .any(|&(started, _)| started == pid),
            "pid {pid} still in STARTED after it was reaped"
        );
    }
}

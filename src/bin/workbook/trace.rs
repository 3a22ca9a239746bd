//! `cargo run -- trace NN [CLIENT ARGS]`: runs a lesson's server and client as `run NN`
//! does, each under `strace`, and draws the socket calls they made as a sequence
//! diagram (an SVG picture, and text on the terminal). `trace --book` redraws the
//! pictures the chapters show (book/src/traces/NN.svg).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use workbook::strace::{parse, picture};

use crate::lessons::{self, Lesson};
use crate::run::{self, Launch, Programs};
use crate::{error, package_dir, print_or_exit, usage_error};

/// The calls strace records (`?`: a name this kernel or strace may not know is skipped).
/// clone and fork only tell a new thread from a new process; they are not drawn.
const CALLS: &str = "trace=socket,socketpair,bind,listen,accept,accept4,connect,\
                     read,readv,recvfrom,recvmsg,?recvmmsg,write,writev,sendto,sendmsg,?sendmmsg,\
                     shutdown,close,?select,pselect6,?poll,ppoll,?epoll_create,epoll_create1,\
                     epoll_ctl,?epoll_wait,epoll_pwait,?epoll_pwait2,setsockopt,getsockopt,\
                     getsockname,getpeername,?io_uring_enter,clone,?clone3,?fork,?vfork";
/// How long a traced client may run (strace slows it; the picture needs little).
const CLIENT_WAIT: Duration = Duration::from_secs(10);
/// The most both trace files may grow to while the programs run (the disk).
const MOST_FILE_BYTES: u64 = 64 << 20;
/// The most of a trace file read (a runaway program cannot fill the memory).
const MOST_BYTES: u64 = 4 << 20;
/// The most calls printed on the terminal.
const MOST_CALLS_PRINTED: usize = 3000;
/// The lessons whose chapters show a trace (`trace --book`).
const BOOK_LESSONS: std::ops::RangeInclusive<u32> = 1..=17;

/// Starts each program under strace, writing its trace to `files`.
struct Strace {
    files: Files,
}

/// Where strace writes the two raw traces (kept for the curious, replaced by the next
/// trace of the same lesson): target/traces/NN_topic.server.strace and .client.strace.
struct Files {
    server: PathBuf,
    client: PathBuf,
}

impl Files {
    fn of(lesson: &Lesson) -> Files {
        let dir = package_dir().join("target").join("traces");
        Files {
            server: dir.join(format!("{}.server.strace", lesson.name)),
            client: dir.join(format!("{}.client.strace", lesson.name)),
        }
    }
}

impl Launch for Strace {
    fn command(&self, exe: &Path, who: &'static str) -> Command {
        // -f: every thread and child process, each line with its pid; -ttt: when each
        // call began, in seconds since the epoch (the two programs' traces share one
        // clock, and a run over midnight still sorts); -T: how long it took; -s 40:
        // the first 40 bytes of each buffer.
        let mut command = Command::new("strace");
        command
            .args(["-f", "-ttt", "-T", "-s", "40", "-e", CALLS, "-o"])
            .arg(if who == "server" {
                &self.files.server
            } else {
                &self.files.client
            })
            .arg("--")
            .arg(exe);
        command
    }

    fn traces(&self) -> bool {
        true
    }

    fn client_wait(&self) -> Duration {
        CLIENT_WAIT
    }

    fn programs(&self, lesson: &Lesson) -> Result<Programs, String> {
        if lesson.number == 11 {
            // The load runner has no server of its own: a small load on lesson 08's.
            return Ok(Programs {
                server_bin: "08_event_loop_server".into(),
                client_bin: "11_load_test_client".into(),
                client_args: ["--conns", "2", "--requests", "2", "--threads", "1"]
                    .map(String::from)
                    .to_vec(),
            });
        }
        Launch::programs(&run::Direct, lesson)
    }
}

pub fn command(args: &[String]) -> i32 {
    if !strace_available() {
        return error(
            "strace is not installed: install it (Debian, Ubuntu: sudo apt-get install strace; \
             .ci/run does) and run this again",
        );
    }
    if let Err(why) = strace_can_trace() {
        return error(&format!(
            "strace cannot trace a program here ({why}): ptrace(2) is forbidden, e.g. in a \
             container without CAP_SYS_PTRACE or with kernel.yama.ptrace_scope=3"
        ));
    }
    match args.first().map(String::as_str) {
        Some("--book") if args.len() == 1 => book(),
        Some("--book") => usage_error("trace --book takes no other arguments"),
        _ => {
            let mut svg = None;
            let mut rest = Vec::new();
            let mut args = args.iter();
            while let Some(arg) = args.next() {
                if arg == "--svg" {
                    match args.next() {
                        Some(file) => svg = Some(PathBuf::from(file)),
                        None => return usage_error("--svg needs a file name"),
                    }
                } else {
                    rest.push(arg.clone());
                }
            }
            let lesson = match crate::lesson_arg(rest.first()) {
                Ok(lesson) => lesson,
                Err(status) => return status,
            };
            let svg = svg.unwrap_or_else(|| {
                let svg = package_dir()
                    .join("target")
                    .join("traces")
                    .join(format!("{}.svg", lesson.name));
                // An earlier run's picture must not be taken for this one's if it fails
                // (a picture named with --svg, e.g. the book's, is kept).
                let _ = std::fs::remove_file(&svg);
                svg
            });
            trace(lesson, &rest, &svg, true)
        }
    }
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Traces `true`: where ptrace(2) is forbidden strace is installed but cannot work.
fn strace_can_trace() -> Result<(), String> {
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=none",
            "-o",
            "/dev/null",
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| err.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(stderr
            .lines()
            .next()
            .unwrap_or("it failed")
            .trim()
            .to_string())
    }
}

/// Redraws book/src/traces/NN.svg for the chapters.
fn book() -> i32 {
    let mut status = 0;
    for number in BOOK_LESSONS {
        let Some(lesson) = lessons::LESSONS.iter().find(|l| l.number == number) else {
            continue;
        };
        let svg = package_dir()
            .join("book/src/traces")
            .join(format!("{:02}.svg", lesson.number));
        let args = vec![format!("{:02}", lesson.number)];
        if trace(lesson, &args, &svg, false) != 0 {
            status = 1;
        }
    }
    status
}

/// Runs the pair under strace, prints the calls (all of them if `print_all`, else
/// a count), writes the picture to `svg`.
fn trace(lesson: &Lesson, args: &[String], svg: &Path, print_all: bool) -> i32 {
    let files = Files::of(lesson);
    // A trace left by an earlier run must not be read as this one's.
    for file in [&files.server, &files.client] {
        let _ = std::fs::remove_file(file);
        if let Some(dir) = file.parent() {
            if let Err(err) = std::fs::create_dir_all(dir) {
                return error(&format!("cannot create {}: {err}", dir.display()));
            }
        }
    }
    // A busy client can make strace write tens of megabytes a second: past
    // MOST_FILE_BYTES the client is stopped, as if it had run out of time.
    let running = AtomicBool::new(true);
    let too_big = AtomicBool::new(false);
    let watched = [files.server.clone(), files.client.clone()];
    let (status, files) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while running.load(Ordering::Relaxed) {
                let size: u64 = watched
                    .iter()
                    .filter_map(|file| std::fs::metadata(file).ok())
                    .map(|meta| meta.len())
                    .sum();
                if size > MOST_FILE_BYTES && !too_big.swap(true, Ordering::Relaxed) {
                    stop_traced_client();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let launch = Strace { files };
        let status = run::run_with(args, &launch);
        running.store(false, Ordering::Relaxed);
        (status, launch.files)
    });
    let (Some((server, server_cut)), Some((client, client_cut))) =
        (read_bounded(&files.server), read_bounded(&files.client))
    else {
        if status != 0 {
            // The build failed or the server did not start: the error is said above,
            // and there is no client's trace to draw.
            return status;
        }
        return error("strace wrote no trace (see above)");
    };
    let (server, server_unread) = parse::parse(&server);
    let (client, client_unread) = parse::parse(&client);
    let mut diagram = picture::diagram(&server, &client);
    let total = diagram.steps.len();
    diagram.cut_to(MOST_CALLS_PRINTED);
    let shown_args = args[1..].join(" ");
    let command = format!(
        "cargo run -- trace {:02}{}{shown_args}",
        lesson.number,
        if shown_args.is_empty() { "" } else { " " }
    );
    let mut text = String::new();
    if too_big.load(Ordering::Relaxed) {
        text.push_str(&format!(
            "workbook │ the traces passed {} MB: the client was stopped there\n",
            MOST_FILE_BYTES >> 20
        ));
    }
    if server_cut || client_cut {
        text.push_str(&format!(
            "workbook │ the traces were cut at {} MB each: the calls after that are not read, \
             and the two files are cut at different moments, so the last calls shown may be \
             one side's only\n",
            MOST_BYTES >> 20
        ));
    }
    if server_unread + client_unread > 0 {
        text.push_str(&format!(
            "workbook │ {} of strace's output not understood and left out\n",
            lines(server_unread + client_unread)
        ));
    }
    text.push_str(&format!(
        "workbook │ the socket calls of both programs ({total}{}), as strace saw them:\n",
        if server_cut || client_cut {
            " in the part read"
        } else {
            ""
        }
    ));
    if print_all {
        text.push_str(&diagram.text());
    }
    diagram.cut_to(picture::MOST_CALLS_SHOWN);
    let title = format!("lesson {}: {command}", lesson.name);
    let note = format!(
        "the socket calls of the server and the client under strace -f; redraw: {}",
        if print_all {
            command.clone()
        } else {
            "cargo run -- trace --book".to_string()
        }
    );
    if let Some(parent) = svg.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(err) = std::fs::write(svg, diagram.svg(&title, &note)) {
        return error(&format!("cannot write {}: {err}", svg.display()));
    }
    text.push_str(&format!(
        "workbook │ strace's own output: {} and {}\nworkbook │ picture: {}\n",
        files.server.display(),
        files.client.display(),
        svg.display()
    ));
    print_or_exit(&text);
    status
}

/// SIGINT for the traced client: a child of one of the straces this program started.
fn stop_traced_client() {
    let children = |pid: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .map(|text| {
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for tracer in children(std::process::id()) {
        for traced in children(tracer) {
            let command = std::fs::read(format!("/proc/{traced}/cmdline")).unwrap_or_default();
            let program = command.split(|b| *b == 0).next().unwrap_or_default();
            if program.ends_with(b"_client") {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(traced as i32),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
        }
    }
}

/// A trace file's first MOST_BYTES, up to the last whole line, and whether it was
/// cut there; None if there is none.
fn read_bounded(path: &Path) -> Option<(String, bool)> {
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MOST_BYTES + 1).read_to_end(&mut bytes).ok()?;
    let cut = bytes.len() as u64 > MOST_BYTES;
    if cut {
        // The line cut in two is not a line strace wrote wrong: leave it out.
        bytes.truncate(MOST_BYTES as usize);
        let whole = bytes
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |at| at + 1);
        bytes.truncate(whole);
    }
    Some((String::from_utf8_lossy(&bytes).into_owned(), cut))
}

/// "1 line", "2 lines".
fn lines(count: usize) -> String {
    format!("{count} line{}", if count == 1 { "" } else { "s" })
}

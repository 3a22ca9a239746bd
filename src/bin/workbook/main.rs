//! The workbook's front door: `cargo run` shows the map of lessons, and
//!
//!   cargo run -- run 05 [CLIENT ARGS]     one lesson's server and client in one terminal
//!   cargo run -- check 05 [--port P]      the lesson's protocol checks against any server
//!   cargo run -- exercise [05.3] [--hint] an exercise's check: passed, or not yet
//!   cargo run -- trace 05 [CLIENT ARGS]   `run 05` under strace: its system calls drawn
//!
//! It is a tool around the lessons, not a lesson: nothing here needs reading to learn
//! sockets.

mod exercises;
mod lessons;
mod run;
mod trace;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lessons::{LESSONS, Lesson};
use workbook::protocol::{self, Target};

const USAGE: &str = "\
usage: cargo run [-- COMMAND]

  (no command)                     the map: every lesson, its protocol and commands
  run NN [CLIENT ARGS]             build lesson NN, start its server on a free port, run its
                                   client against it, show both outputs, stop the server
      --server-args \"ARGS\"         extra arguments for the server (e.g. \"--mode forking\")
  check NN [--host H] [--port P]   run lesson NN's protocol checks against a server already
                                   running there (default 127.0.0.1 and the lesson's port)
      --list                       list the checks and exit
      --only NAME,...              run only these checks
      --junit FILE                 also write the results as JUnit XML (for graders)
      --timeout SECS               the longest any one wait may take (default 10)
      --ca FILE                    a TLS server (14): the CA to trust (default: the one the
                                   lesson 14 server made, target/14_tls_certs/ca.pem)
      --server-name NAME           a TLS server (14): the name its certificate must carry
                                   (default localhost)
      --path PATH [--dgram]        lesson 16: the server's AF_UNIX socket file (stream, or
                                   datagram with --dgram; default: the server's default
                                   path) instead of --host/--port (its --udp server)
      --misbehave MODE             lesson 17: check a server started with --misbehave MODE
  exercise                         every exercise and whether it is done yet
  exercise NN.K [--hint]           check one exercise (or show its hint)
  trace NN [CLIENT ARGS]           like run, each program under strace: prints the socket
                                   calls both made and draws them as a sequence diagram
                                   (target/traces/NN_topic.svg, beside strace's own
                                   output; needs strace)
      --svg FILE                   draw it there instead
      --server-args \"ARGS\"         as for run
  trace --book                     redraw the chapters' pictures, book/src/traces/01-17.svg
  -h, --help                       this text
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let status = match args.first().map(String::as_str) {
        None => show_map(),
        Some("-h" | "--help" | "help") => {
            print_or_exit(USAGE);
            0
        }
        Some("run") => run::run(&args[1..]),
        Some("check") => check(&args[1..]),
        Some("exercise" | "exercises") => exercises::command(&args[1..]),
        Some("trace") => trace::command(&args[1..]),
        Some(other) => usage_error(&format!("unknown command '{other}'")),
    };
    std::process::exit(status);
}

/// The package's folder (where `lessons/`, `tests/` and `book/` are). `cargo run`
/// tells the program at run time; the folder it was compiled in is only the
/// fallback: a copy of the workbook (`cp -a`, target/ and all) may reuse a binary
/// compiled in the original, and must still build and test the copy.
pub fn package_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.join("lessons").is_dir())
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
    })
}

/// Prints `text`; a closed stdout (`cargo run | head`) ends the program quietly.
pub fn print_or_exit(text: &str) {
    let mut out = io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// `error: ...` on stderr; returns the exit status 1 for the caller to use.
pub fn error(message: &str) -> i32 {
    let _ = writeln!(io::stderr(), "error: {message}");
    1
}

/// A usage error: the message and the usage on stderr, exit status 2.
pub fn usage_error(message: &str) -> i32 {
    let _ = write!(io::stderr(), "workbook: error: {message}\n\n{USAGE}");
    2
}

/// The lesson named by `text` (`05`, `5`, `05_poll`), or an `error:` status.
pub fn lesson_arg(text: Option<&String>) -> Result<&'static Lesson, i32> {
    let Some(text) = text else {
        return Err(usage_error("which lesson? give its number, e.g. 05"));
    };
    lessons::find(text).ok_or_else(|| {
        error(&format!(
            "no lesson '{text}': the lessons are {}",
            LESSONS
                .iter()
                .map(|lesson| format!("{:02}", lesson.number))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

// The map.

fn show_map() -> i32 {
    let folders = lesson_folders();
    let all_exercises = exercises::all();
    let mut text = String::from(
        "socket-workbook: runnable network-programming lessons. Each lesson is a server,\n\
         a client, a chapter of the book and a test.\n\n",
    );
    for folder in &folders {
        let Some(lesson) = lessons::find(folder) else {
            text.push_str(&format!(
                "{folder}  (a lesson folder the front door does not know yet)\n\n"
            ));
            continue;
        };
        let checked: Vec<&exercises::Exercise> = all_exercises
            .iter()
            .filter(|exercise| exercise.lesson == lesson.number)
            .collect();
        let count = checked.len();
        text.push_str(&format!("{:02}  {}\n", lesson.number, lesson.topic));
        text.push_str(&format!(
            "    protocol: {}, {}\n",
            lesson.transport, lesson.protocol
        ));
        if lesson.not_a_pair.is_none() {
            text.push_str(&format!(
                "    terminal 1: cargo run --bin {}_server\n    terminal 2: cargo run --bin {}_client{}\n",
                lesson.name,
                lesson.name,
                client_example(lesson)
            ));
            text.push_str(&format!(
                "    one terminal: cargo run -- run {:02}\n",
                lesson.number
            ));
        } else {
            text.push_str(&format!(
                "    run: cargo run --release --bin {}_server\n",
                lesson.name
            ));
        }
        text.push_str(&format!("    chapter: book/src/{}.md", lesson.name));
        if let Some(first) = checked.first() {
            text.push_str(&format!(
                "; exercises with a check: {count} (cargo run -- exercise {:02}.{})",
                lesson.number, first.number
            ));
        }
        text.push_str("\n\n");
    }
    text.push_str(
        "Next things to try:\n\
         \x20 1. cargo run -- run 01          the first server and client, in this terminal\n\
         \x20 2. cargo run -- check 05 --port 8009\n\
         \x20                                 put a server of yours (any language) through lesson 05's checks\n\
         \x20 3. cargo run -- exercise        the exercises, and which are done\n\
         \x20 4. cargo run -- trace 05        run 05 under strace: its system calls, drawn\n\
         The tests: cargo test (one lesson: cargo test --test 05_poll).\n",
    );
    print_or_exit(&text);
    0
}

fn client_example(lesson: &Lesson) -> String {
    if lesson.client_args.is_empty() {
        String::new()
    } else {
        format!(" -- {}", lesson.client_args.join(" "))
    }
}

/// The lesson folders that exist, in order (`lessons/NN_topic`).
fn lesson_folders() -> Vec<String> {
    let mut folders: Vec<String> = std::fs::read_dir(package_dir().join("lessons"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.path().is_dir())
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|name| {
                    name.len() > 3 && name.as_bytes()[..2].iter().all(u8::is_ascii_digit)
                })
                .collect()
        })
        .unwrap_or_default();
    folders.sort();
    folders
}

// Conformance checks against any server.

struct CheckOptions {
    host: Option<String>,
    port: Option<u16>,
    list: bool,
    only: Option<Vec<String>>,
    junit: Option<PathBuf>,
    timeout: Duration,
    ca: Option<PathBuf>,
    server_name: Option<String>,
    /// Lesson 16: an AF_UNIX socket file instead of an IP address and port.
    path: Option<PathBuf>,
    dgram: bool,
    misbehave: Option<String>,
}

fn parse_check_options(args: &[String]) -> Result<CheckOptions, String> {
    let mut options = CheckOptions {
        host: None,
        port: None,
        list: false,
        only: None,
        junit: None,
        timeout: Duration::from_secs(10),
        ca: None,
        server_name: None,
        path: None,
        dgram: false,
        misbehave: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--host" => options.host = Some(value("--host")?),
            "--port" => {
                let text = value("--port")?;
                let port: u16 = text
                    .parse()
                    .ok()
                    .filter(|port| *port > 0)
                    .ok_or_else(|| format!("invalid port '{text}': expected 1 to 65535"))?;
                options.port = Some(port);
            }
            "--list" => options.list = true,
            "--only" => {
                options.only = Some(value("--only")?.split(',').map(str::to_string).collect())
            }
            "--junit" => options.junit = Some(PathBuf::from(value("--junit")?)),
            "--path" => options.path = Some(PathBuf::from(value("--path")?)),
            "--dgram" => options.dgram = true,
            "--timeout" => {
                let text = value("--timeout")?;
                let seconds: f64 = text
                    .parse()
                    .ok()
                    .filter(|s| (0.1..=600.0).contains(s))
                    .ok_or_else(|| format!("invalid timeout '{text}': 0.1 to 600 seconds"))?;
                options.timeout = Duration::from_secs_f64(seconds);
            }
            "--ca" => options.ca = Some(PathBuf::from(value("--ca")?)),
            "--server-name" => options.server_name = Some(value("--server-name")?),
            "--misbehave" => options.misbehave = Some(value("--misbehave")?),
            other => return Err(format!("unknown option '{other}' for check")),
        }
    }
    Ok(options)
}

fn default_port(lesson: &Lesson) -> Option<u16> {
    lesson
        .transport
        .split_whitespace()
        .nth(1)
        .and_then(|port| port.parse().ok())
}

fn check(args: &[String]) -> i32 {
    let lesson = match lesson_arg(args.first()) {
        Ok(lesson) => lesson,
        Err(status) => return status,
    };
    let options = match parse_check_options(&args[1..]) {
        Ok(options) => options,
        Err(message) => return usage_error(&message),
    };
    if options.path.is_some() && (options.host.is_some() || options.port.is_some()) {
        return usage_error("--path names the server; --host and --port do not go with it");
    }
    let local_lesson = lesson.transport.starts_with("AF_UNIX");
    if options.dgram && !local_lesson {
        return usage_error("--dgram is for an AF_UNIX datagram server (lesson 16)");
    }
    // Lesson 16 with no place given: the path its server takes with no --path.
    let mut options = options;
    let mut default_place = false;
    if local_lesson
        && options.path.is_none()
        && options.host.is_none()
        && options.port.is_none()
        // `--list` alone lists all three transports' checks.
        && (options.dgram || !options.list)
    {
        options.path = Some(protocol::local::default_path());
        default_place = true;
    }
    if options.path.is_some() && !local_lesson {
        return usage_error(&format!(
            "lesson {:02} does not listen on an AF_UNIX path: give --host/--port",
            lesson.number
        ));
    }
    // Which checks depends on the transport (lesson 16 has three).
    let local = options
        .path
        .as_deref()
        .map(|path| Target::unix(path, options.dgram));
    let placeholder = Target::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    let checks = match &options.misbehave {
        None => protocol::checks_for(lesson.number, local.as_ref().unwrap_or(&placeholder)),
        Some(mode) => match protocol::mode_checks(lesson.number, mode) {
            Some(checks) => Some(checks),
            None => {
                let modes = protocol::modes(lesson.number);
                return usage_error(&if modes.is_empty() {
                    format!("lesson {:02} has no --misbehave modes", lesson.number)
                } else {
                    format!("no mode '{mode}': the modes are {}", modes.join(", "))
                });
            }
        },
    };
    let Some(checks) = checks else {
        return error(&format!(
            "lesson {:02} has no protocol to check: {}",
            lesson.number,
            lesson.not_a_pair.unwrap_or("it is not a server")
        ));
    };
    if options.list {
        let mut text = String::new();
        if local.is_none() && lesson.transport.starts_with("AF_UNIX") {
            // Lesson 16 without --path: its three transports, each with its checks.
            let path = Path::new("PATH");
            for (heading, target) in [
                (
                    "--path PATH (an AF_UNIX stream server)",
                    Target::unix(path, false),
                ),
                (
                    "--path PATH --dgram (an AF_UNIX datagram server)",
                    Target::unix(path, true),
                ),
                ("--port PORT (its --udp server)", placeholder.clone()),
            ] {
                text.push_str(&format!("{heading}:\n"));
                for check in protocol::checks_for(lesson.number, &target).unwrap_or_default() {
                    text.push_str(&format!("  {:26} {}\n", check.name, check.about));
                }
            }
        } else {
            for check in checks {
                text.push_str(&format!("{:28} {}\n", check.name, check.about));
            }
        }
        print_or_exit(&text);
        return 0;
    }
    let selected: Vec<protocol::Check> = match &options.only {
        None => checks.to_vec(),
        Some(names) => {
            if let Some(unknown) = names.iter().find(|n| !checks.iter().any(|c| c.name == *n)) {
                return usage_error(&format!(
                    "lesson {:02} has no check '{unknown}' (see --list)",
                    lesson.number
                ));
            }
            checks
                .iter()
                .filter(|c| names.iter().any(|n| n == c.name))
                .copied()
                .collect()
        }
    };
    // How to start the lesson's server where the checks look: for the hints.
    let server_command = |target: &Target, dgram: bool| {
        let mut flags = Vec::new();
        if dgram {
            flags.push("--dgram".to_string());
        }
        if !default_place {
            flags.push(format!("--path {}", path_of(target).display()));
        }
        match flags.is_empty() {
            true => format!("cargo run --bin {}_server", lesson.name),
            false => format!(
                "cargo run --bin {}_server -- {}",
                lesson.name,
                flags.join(" ")
            ),
        }
    };
    let mut target = match local {
        Some(target) if target.datagram => {
            // connect(2) on a datagram socket reaches only a datagram socket: a
            // stream server there gives EPROTOTYPE, nobody ECONNREFUSED or ENOENT.
            let reached = std::os::unix::net::UnixDatagram::unbound()
                .and_then(|socket| socket.connect(path_of(&target)));
            if let Err(err) = reached {
                let hint = if err.raw_os_error() == Some(nix::libc::EPROTOTYPE) {
                    "a stream server is there: leave out --dgram".to_string()
                } else {
                    format!(
                        "start a datagram server there, e.g. {}",
                        server_command(&target, true)
                    )
                };
                return error(&format!(
                    "cannot reach a datagram server at {} ({err}): {hint}",
                    path_of(&target).display()
                ));
            }
            target
        }
        Some(target) => {
            if let Err(err) = std::os::unix::net::UnixStream::connect(path_of(&target)) {
                return error(&format!(
                    "cannot connect to {} ({err}): start a stream server there, e.g. {} \
                     (a datagram server needs --dgram)",
                    path_of(&target).display(),
                    server_command(&target, false)
                ));
            }
            target
        }
        None => match ip_target(lesson, &options) {
            Ok(target) => target,
            Err(status) => return status,
        },
    };
    target.timeout = options.timeout;
    // A TLS lesson: the checks verify the server as any client must, so they need
    // the CA to trust and the name to ask for.
    if lesson.protocol.starts_with("TLS") {
        let ca = options
            .ca
            .clone()
            .unwrap_or_else(|| workbook::tls::ca_file(&workbook::tls::default_cert_dir()));
        if let Err(why) = workbook::tls::client_config(&ca) {
            return error(&format!(
                "{why}; give the CA that signed the server's certificate with --ca FILE"
            ));
        }
        target.tls = Some(protocol::TlsTarget {
            ca,
            server_name: options
                .server_name
                .clone()
                .unwrap_or_else(|| "localhost".into()),
        });
    }
    let place = match &target.unix_path {
        Some(path) => format!("unix:{}", path.display()),
        None => target.addr.to_string(),
    };
    let results = protocol::run_all(&selected, &target);
    let mut text = String::new();
    let mut failed = 0;
    for (check, result) in &results {
        match result {
            Ok(()) => text.push_str(&format!("PASS {}\n", check.name)),
            Err(why) => {
                failed += 1;
                text.push_str(&format!("FAIL {}: {why}\n", check.name));
            }
        }
    }
    text.push_str(&format!(
        "{} passed, {failed} failed (lesson {:02} at {place})\n",
        results.len() - failed,
        lesson.number
    ));
    print_or_exit(&text);
    if let Some(path) = &options.junit {
        if let Err(err) = std::fs::write(path, junit(lesson, &results)) {
            return error(&format!("cannot write {}: {err}", path.display()));
        }
    }
    if failed == 0 { 0 } else { 1 }
}

/// The socket file of a local target.
fn path_of(target: &Target) -> &Path {
    target.unix_path.as_deref().unwrap_or(Path::new(""))
}

/// The target at `--host`/`--port` (default: loopback and the lesson's port), after
/// making sure something listens there for a TCP lesson.
fn ip_target(lesson: &Lesson, options: &CheckOptions) -> Result<Target, i32> {
    // Loopback unless the user names another host: the checks send real traffic.
    let host = options.host.clone().unwrap_or_else(|| "127.0.0.1".into());
    let Some(port) = options.port.or_else(|| default_port(lesson)) else {
        return Err(usage_error(if lesson.transport.starts_with("AF_UNIX") {
            "give the server's socket file with --path PATH (add --dgram for a datagram \
             server), or the port of its --udp server with --port"
        } else {
            "give the server's port with --port"
        }));
    };
    let addr: SocketAddr = match (host.as_str(), port)
        .to_socket_addrs()
        .map(|mut a| a.next())
    {
        Ok(Some(addr)) => addr,
        _ => return Err(error(&format!("cannot resolve host '{host}'"))),
    };
    if lesson.transport.starts_with("TCP") {
        // A misbehaving server (lesson 17) may fail this very connect on purpose (a
        // full accept queue times out, a reset can beat the connect's end): only a
        // refusal means that nothing is there.
        let probe = TcpStream::connect_timeout(&addr, options.timeout);
        let misbehaving = options.misbehave.is_some()
            && probe
                .as_ref()
                .is_err_and(|err| err.kind() != io::ErrorKind::ConnectionRefused);
        if let (Err(err), false) = (probe, misbehaving) {
            // The default host is IPv4's loopback: a server on IPv6 only (lesson 15's
            // --v6only) is at ::1, the same port, and must be named.
            let ipv6 = if options.host.is_none() {
                " (a server on IPv6 only: give --host ::1)"
            } else {
                ""
            };
            return Err(error(&format!(
                "nothing listening at {addr} ({err}){ipv6}; start a server there, e.g. \
                 cargo run --bin {}_server -- --port {port}",
                lesson.name
            )));
        }
    }
    Ok(Target::new(addr))
}

/// The results as JUnit XML, the format most graders and CI systems read.
fn junit(lesson: &Lesson, results: &[(&protocol::Check, Result<(), String>)]) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let failures = results.iter().filter(|(_, r)| r.is_err()).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">\n",
        lesson.name,
        results.len()
    );
    for (check, result) in results {
        xml.push_str(&format!(
            "  <testcase classname=\"{}\" name=\"{}\">",
            lesson.name, check.name
        ));
        if let Err(why) = result {
            xml.push_str(&format!(
                "<failure message=\"{}\">{}</failure>",
                escape(why),
                escape(why)
            ));
        }
        xml.push_str("</testcase>\n");
    }
    xml.push_str("</testsuite>\n");
    xml
}

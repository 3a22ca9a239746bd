//! Lesson 11, the runner: starts each echo server of the workbook in turn, drives it
//! with the load client under the same loads, and prints the tables the chapter shows.
//!
//!   cargo build --release --bins
//!   cargo run --release --bin 11_load_test_server -- --out book/src/measurements/11_results.md
//!
//! It also contains the reference point: `--serve-baseline` makes this program a
//! minimal single-threaded epoll echo server, with nothing but the system calls.

mod baseline;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, SysconfVar, sysconf};
use workbook::cli::Cli;
use workbook::{exit_with_error, print_line};

/// One server model: how to start it, and which loads it can take.
struct Model {
    name: &'static str,
    binary: &'static str,
    args: &'static [&'static str],
    /// Extra arguments depending on the load (e.g. enough threads for every client).
    per_load: fn(&LoadSpec) -> Vec<String>,
    /// Why this model cannot take a load at all, if it cannot.
    cannot: fn(&LoadSpec) -> Option<&'static str>,
    /// What the load client expects back: `echo`, or `ctime` for lesson 10.
    reply: &'static str,
}

#[derive(Clone)]
struct LoadSpec {
    name: String,
    conns: usize,
    size: usize,
    idle: usize,
    /// An open loop at this many requests/s in all (`--rate`); `None`: closed loop.
    rate: Option<f64>,
}

fn no_extra(_: &LoadSpec) -> Vec<String> {
    Vec::new()
}

fn always(_: &LoadSpec) -> Option<&'static str> {
    None
}

/// An echo server that takes every load with `--quiet` and the flags given: one line
/// per model in the list below.
fn echo_model(name: &'static str, binary: &'static str, args: &'static [&'static str]) -> Model {
    Model {
        name,
        binary,
        args,
        per_load: no_extra,
        cannot: always,
        reply: "echo",
    }
}

/// The models of the open-loop table (latency at fixed rates): names beginning so.
const OPEN_LOOP_MODELS: &[&str] = &["06 ", "08 epoll, level", "18 ", "19 "];

// ANCHOR: models
fn models() -> Vec<Model> {
    vec![
        Model {
            name: "baseline (minimal epoll loop)",
            binary: "11_load_test_server",
            args: &["--serve-baseline"],
            per_load: no_extra,
            cannot: always,
            reply: "echo",
        },
        Model {
            name: "04 select",
            binary: "04_select_server",
            args: &["--quiet"],
            per_load: no_extra,
            cannot: |load| {
                (load.conns + load.idle + 8 >= 1024)
                    .then_some("refused: descriptors above FD_SETSIZE (1024)")
            },
            reply: "echo",
        },
        Model {
            name: "05 poll",
            binary: "05_poll_server",
            args: &["--quiet"],
            per_load: no_extra,
            cannot: always,
            reply: "echo",
        },
        Model {
            name: "06 thread per connection",
            binary: "06_threaded_server",
            args: &["--quiet"],
            per_load: |load| {
                vec![
                    "--max-threads".into(),
                    (load.conns + load.idle + 16).to_string(),
                ]
            },
            cannot: always,
            reply: "echo",
        },
        Model {
            name: "07 fixed threads",
            binary: "07_fixed_threads_server",
            args: &["--quiet"],
            per_load: |load| vec!["--threads".into(), (load.conns + 4).min(1024).to_string()],
            cannot: |load| {
                if load.idle > 0 {
                    Some("n/a: idle connections would hold every worker")
                } else if load.conns + 4 > 1024 {
                    Some("n/a: more connections than --threads allows")
                } else {
                    None
                }
            },
            reply: "echo",
        },
        Model {
            name: "08 epoll, level-triggered",
            binary: "08_event_loop_server",
            args: &["--quiet"],
            per_load: no_extra,
            cannot: always,
            reply: "echo",
        },
        Model {
            name: "08 epoll, edge-triggered",
            binary: "08_event_loop_server",
            args: &["--quiet", "--edge"],
            per_load: no_extra,
            cannot: always,
            reply: "echo",
        },
        Model {
            // The framework's handler answers each `\r\n` with a time line, not an
            // echo: the load client sends messages ending in `\r\n` and checks the
            // lines. The backlog is raised from Python's 5 so that 500 clients can
            // connect at once, as they can to every other model.
            name: "10 socketserver, threading",
            binary: "10_socketserver_server",
            args: &[
                "--quiet",
                "--mode",
                "threading",
                "--request-queue-size",
                "4096",
            ],
            per_load: |load| {
                vec![
                    "--max-threads".into(),
                    (load.conns + load.idle + 16).to_string(),
                ]
            },
            cannot: always,
            reply: "ctime",
        },
        echo_model(
            "18 tokio, current-thread",
            "18_async_server",
            &["--quiet", "--runtime", "current"],
        ),
        echo_model(
            "18 tokio, multi-thread",
            "18_async_server",
            &["--quiet", "--runtime", "multi"],
        ),
        echo_model(
            "18 mio",
            "18_async_server",
            &["--quiet", "--reactor", "mio"],
        ),
        echo_model("19 io_uring", "19_uring_server", &["--quiet"]),
    ]
}
// ANCHOR_END: models

/// What one run measured.
#[derive(Clone, Debug, Default)]
struct Measured {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// The server's CPU time as a share of the run's wall time (1.0 = one core).
    server_cpu: f64,
    /// The server's CPU time divided by the requests answered, in microseconds: on a
    /// two-core machine where the client saturates first, the column that ranks
    /// servers honestly.
    server_us_per_request: f64,
    /// The load client's, likewise.
    client_cpu: f64,
    /// How far apart the rounds were: (highest - lowest) / median, of requests/s
    /// (of p99 in an open loop, where requests/s is the fixed rate).
    spread: f64,
}

fn main() {
    let args = Cli::new(
        "11_load_test_server",
        "Lesson 11: runs every echo server model under the same loads and prints the \
         results as markdown tables.",
        0,
    )
    .value(
        "--duration",
        "SECS",
        "length of each measured run (default 2)",
    )
    .value(
        "--rounds",
        "R",
        "runs of every model under every load; the median is kept (default 3)",
    )
    .value("--out", "FILE", "also write the tables (markdown) to FILE")
    .value(
        "--svg",
        "FILE",
        "write a chart of throughput against idle connections to FILE",
    )
    .value(
        "--models",
        "LIST",
        "comma-separated model numbers to run, e.g. 05,08 (default all)",
    )
    .value(
        "--rates",
        "LIST",
        "open-loop rates in requests/s for the latency table of models 06, 08 \
         (level), 18 and 19, 50 connections of 64 B, e.g. 10000,40000 (the default; \
         `none` skips the open loop)",
    )
    .switch(
        "--quick",
        "small loads only (a smoke test: 1 and 50 connections, no idle)",
    )
    .switch(
        "--no-build",
        "do not run `cargo build --bins` first (it runs only under `cargo run`)",
    )
    .switch(
        "--serve-baseline",
        "be the baseline echo server instead (used by the runner)",
    )
    .parse();
    if args.flag("--serve-baseline") {
        baseline::serve(&args);
        return;
    }
    let seconds: f64 = args.get_or("--duration", 2.0);
    let rounds: usize = args.get_or("--rounds", 3);
    if !(1..=99).contains(&rounds) {
        args.usage_error("--rounds must be 1 to 99");
    }
    if !(0.1..=600.0).contains(&seconds) {
        args.usage_error("--duration must be 0.1 to 600 seconds");
    }
    let wanted: Option<Vec<String>> = args
        .get::<String>("--models")
        .map(|list| list.split(',').map(|m| m.trim().to_string()).collect());
    let directory = binaries_directory();
    if !args.flag("--no-build") {
        build_every_lesson();
    }
    let hard_limit = raise_fd_limit();

    let rates: Vec<f64> = match args.get_or("--rates", "10000,40000".to_string()).as_str() {
        "none" => Vec::new(),
        list => list
            .split(',')
            .map(|rate| match rate.trim().parse::<f64>() {
                // The load client's bounds for --rate.
                Ok(rate) if (1.0..=1e6).contains(&rate) => rate,
                _ => {
                    args.usage_error("--rates takes requests/s from 1 to 1000000, e.g. 10000,40000")
                }
            })
            .collect(),
    };
    let mut loads = if args.flag("--quick") {
        vec![load("1 x 64 B", 1, 64, 0), load("50 x 64 B", 50, 64, 0)]
    } else {
        vec![
            load("1 x 64 B", 1, 64, 0),
            load("50 x 64 B", 50, 64, 0),
            load("500 x 64 B", 500, 64, 0),
            load("50 x 64 KiB", 50, 64 * 1024, 0),
            load("50 x 64 B + 1,000 idle", 50, 64, 1000),
            load("50 x 64 B + 5,000 idle", 50, 64, 5000),
        ]
    };
    // The open loop: the same 50 x 64 B, at rates every server can hold (or not),
    // each latency from when its request was due (the load client's --rate).
    for rate in rates {
        let name = format!("open loop, {} requests/s, 50 x 64 B", thousands(rate));
        loads.push(LoadSpec {
            rate: Some(rate),
            ..load(&name, 50, 64, 0)
        });
    }
    let models: Vec<Model> = models()
        .into_iter()
        .filter(|model| match &wanted {
            None => true,
            Some(list) => list.iter().any(|w| {
                model.name.starts_with(w.as_str())
                    || (w == "baseline" && model.name.starts_with("baseline"))
            }),
        })
        .collect();
    if models.is_empty() {
        args.usage_error("--models matches no model: use numbers such as 04,08 or baseline");
    }
    for model in &models {
        let path = directory.join(model.binary);
        if !path.exists() {
            exit_with_error(&format!(
                "{} is missing: build every lesson first with: cargo build --release --bins",
                path.display()
            ));
        }
    }

    print_line(&format!(
        "runner: {} models x {} loads, {seconds} s each",
        models.len(),
        loads.len()
    ));
    let mut results: BTreeMap<(usize, usize), Result<Measured, String>> = BTreeMap::new();
    // ANCHOR: rounds
    // Each load is run `rounds` times over all the models, one model after the other,
    // and each model's median run is kept: a noisy second on a shared machine then
    // hits every model alike, and one bad run does not decide a row.
    for (load_index, spec) in loads.iter().enumerate() {
        let mut runs: Vec<Vec<Measured>> = vec![Vec::new(); models.len()];
        let mut failures: Vec<Option<String>> = vec![None; models.len()];
        for round in 1..=rounds {
            for (model_index, model) in models.iter().enumerate() {
                if failures[model_index].is_some() || !takes_part(model, spec) {
                    continue;
                }
                let outcome = match (model.cannot)(spec) {
                    Some(reason) => Err(reason.to_string()),
                    None => measure(&directory, model, spec, seconds),
                };
                match outcome {
                    Ok(m) => {
                        print_line(&format!(
                            "round {round}  {:<28} {:<24} {:>9.0} req/s  p99 {:>8.1} us  CPU server {:>4.0}% ({:.1} us/request) client {:>4.0}%",
                            model.name,
                            spec.name,
                            m.rps,
                            m.p99_us,
                            m.server_cpu * 100.0,
                            m.server_us_per_request,
                            m.client_cpu * 100.0
                        ));
                        runs[model_index].push(m);
                    }
                    Err(reason) => {
                        print_line(&format!(
                            "round {round}  {:<28} {:<24} {reason}",
                            model.name, spec.name
                        ));
                        failures[model_index] = Some(reason);
                    }
                }
            }
        }
        for (model_index, mut measured) in runs.into_iter().enumerate() {
            if !takes_part(&models[model_index], spec) {
                continue;
            }
            let outcome = match failures[model_index].take() {
                Some(reason) => Err(reason),
                None => median_round(&mut measured, spec.rate.is_some())
                    .ok_or_else(|| "no run".to_string()),
            };
            results.insert((load_index, model_index), outcome);
        }
    }
    // ANCHOR_END: rounds

    let tables = markdown(&loads, &models, &results, seconds, rounds, hard_limit);
    print_line(&format!("\n{tables}"));
    if let Some(path) = args.get::<String>("--out") {
        if let Err(err) = std::fs::write(&path, &tables) {
            exit_with_error(&format!("cannot write {path}: {err}"));
        }
    }
    if let Some(path) = args.get::<String>("--svg") {
        let chart = svg_chart(&loads, &models, &results);
        if let Err(err) = std::fs::write(&path, chart) {
            exit_with_error(&format!("cannot write {path}: {err}"));
        }
    }
}

fn load(name: &str, conns: usize, size: usize, idle: usize) -> LoadSpec {
    LoadSpec {
        name: name.to_string(),
        conns,
        size,
        idle,
        rate: None,
    }
}

/// Every model takes the closed-loop loads; the open-loop table has a few.
fn takes_part(model: &Model, spec: &LoadSpec) -> bool {
    spec.rate.is_none()
        || OPEN_LOOP_MODELS
            .iter()
            .any(|prefix| model.name.starts_with(prefix))
}

/// The servers are this program's siblings (all of them are built into one folder).
/// Under `cargo run`, builds every lesson's binary with this runner's profile first:
/// `cargo run` builds only the runner, and measuring a server built from older source
/// than the one you just changed would be a quiet lie.
fn build_every_lesson() {
    let Ok(cargo) = std::env::var("CARGO") else {
        return; // started directly, not by cargo: measure the binaries as they are
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut build = Command::new(cargo);
    build
        .args(["build", "--bins", "--manifest-path"])
        .arg(&manifest);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    print_line("runner: building every lesson first (cargo build --bins)");
    match build.status() {
        Ok(status) if status.success() => {}
        Ok(status) => exit_with_error(&format!("cargo build --bins failed ({status})")),
        Err(err) => exit_with_error(&format!("cannot run cargo build --bins: {err}")),
    }
}

fn binaries_directory() -> PathBuf {
    match std::env::current_exe() {
        Ok(path) => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        Err(err) => exit_with_error(&format!("cannot find this program's own path: {err}")),
    }
}

/// Raises the soft descriptor limit to the hard one (children inherit it); returns it.
fn raise_fd_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard {
                if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    // Not eprintln!, which panics when stderr is closed.
                    let _ = writeln!(
                        io::stderr(),
                        "warning: cannot raise the descriptor limit: {err}"
                    );
                    return soft;
                }
            }
            hard
        }
        Err(_) => 0,
    }
}

// ANCHOR: measure
/// Starts the server, runs the load client against it, stops the server.
fn measure(
    directory: &Path,
    model: &Model,
    spec: &LoadSpec,
    seconds: f64,
) -> Result<Measured, String> {
    let mut server = Command::new(directory.join(model.binary))
        .args(model.args)
        .args((model.per_load)(spec))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        // A server's complaint (an `error:` line, a panic) shows in the runner's output.
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", model.binary))?;
    let result = run_against(directory, &mut server, model.reply, spec, seconds);
    let _ = kill(Pid::from_raw(server.id() as i32), Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = server.try_wait() {
            return result;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = server.kill();
    let _ = server.wait();
    result
}

fn run_against(
    directory: &Path,
    server: &mut Child,
    reply: &str,
    spec: &LoadSpec,
    seconds: f64,
) -> Result<Measured, String> {
    let stdout = server.stdout.take().ok_or("no stdout")?;
    // A thread reads the server's output: the first line comes back through a channel
    // (so that a server that never says `listening on` cannot hang the runner), and
    // the rest is read and dropped, so that the server's lines (`disconnected ...:
    // Connection reset`, even under --quiet) always have somewhere to go.
    let (first_line, first_line_received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut server_output = BufReader::new(stdout);
        let mut first = String::new();
        let _ = first_line.send(server_output.read_line(&mut first).map(|_| first));
        let _ = io::copy(&mut server_output, &mut io::sink());
    });
    let first = match first_line_received.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(line)) => line,
        Ok(Err(err)) => return Err(format!("reading the server's first line: {err}")),
        Err(_) => return Err("the server printed no first line within 10 s".into()),
    };
    let port = first
        .trim()
        .strip_prefix("listening on ")
        .and_then(|addr| addr.rsplit(':').next())
        .ok_or_else(|| format!("unexpected first line {first:?}"))?
        .to_string();
    let rate: Vec<String> = match spec.rate {
        Some(rate) => vec!["--rate".into(), rate.to_string()],
        None => Vec::new(),
    };
    let client = |duration: f64| {
        Command::new(directory.join("11_load_test_client"))
            .args(["--port", &port])
            .args(&rate)
            .args(["--conns", &spec.conns.to_string()])
            .args(["--size", &spec.size.to_string()])
            .args(["--idle", &spec.idle.to_string()])
            .args(["--reply", reply])
            .args(["--duration", &duration.to_string()])
            .args(["--requests", &(u64::MAX / 2).to_string()])
            // One client thread: on a two-core machine the client gets one core and a
            // single-threaded server the other.
            .args(["--threads", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|err| format!("cannot run the load client: {err}"))
    };
    // Warm-up: a short run first, so that the measured one does not include the
    // first connections, page faults and cold caches.
    let warm_up = client(0.3)?;
    let _ = warm_up.wait_with_output();
    // The server's CPU time is read when the client says its run starts and ends, so
    // that opening and closing thousands of idle connections is not counted in it.
    let mut measured = client(seconds)?;
    let mut text = String::new();
    // The server's CPU seconds and the time, when the run started and when it ended.
    let mut started: Option<(f64, Instant)> = None;
    let mut finished: Option<(f64, Instant)> = None;
    if let Some(stdout) = measured.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match line.as_str() {
                "measuring: started" => started = Some((cpu_seconds(server.id()), Instant::now())),
                "measuring: finished" => {
                    finished = Some((cpu_seconds(server.id()), Instant::now()))
                }
                _ => {}
            }
            text.push_str(&line);
            text.push('\n');
        }
    }
    let output = measured
        .wait_with_output()
        .map_err(|err| format!("waiting for the load client: {err}"))?;
    // The server's CPU seconds over the run, from /proc/PID/stat (utime + stime).
    let (server_cpu_seconds, wall) = match (started, finished) {
        (Some((cpu_before, from)), Some((cpu_after, to))) => (
            cpu_after - cpu_before,
            to.duration_since(from).as_secs_f64().max(1e-9),
        ),
        _ => (0.0, 1.0),
    };
    let summary = text
        .lines()
        .find(|line| line.starts_with("summary "))
        .ok_or_else(|| format!("no summary from the load client ({})", output.status))?;
    let field = |name: &str| -> f64 {
        summary
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    if field("errors") > 0.0 || !output.status.success() {
        let first_error = text
            .lines()
            // A failed run says why in an error line, or in the count of requests
            // left without a reply after the deadline.
            .find(|l| l.starts_with("error:") || l.starts_with("unanswered:"))
            .unwrap_or("failed");
        return Err(format!("errors: {first_error}"));
    }
    Ok(Measured {
        rps: field("rps"),
        p50_us: field("p50_us"),
        p99_us: field("p99_us"),
        p999_us: field("p999_us"),
        max_us: field("max_us"),
        server_cpu: server_cpu_seconds / wall,
        server_us_per_request: server_cpu_seconds * 1e6 / field("requests").max(1.0),
        client_cpu: field("client_cpu") / field("seconds").max(1e-9),
        spread: 0.0, // known once every round is in
    })
}
// ANCHOR_END: measure

/// User plus system CPU time of a process so far, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name is in parentheses and may hold spaces: split after it.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime) are 12 and 13 here.
    let ticks: f64 = [11usize, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks_per_second()
}

/// Clock ticks per second, the unit of the CPU times in /proc/PID/stat:
/// sysconf(_SC_CLK_TCK), 100 on every Linux seen so far, but not promised.
fn clock_ticks_per_second() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

fn markdown(
    loads: &[LoadSpec],
    models: &[Model],
    results: &BTreeMap<(usize, usize), Result<Measured, String>>,
    seconds: f64,
    rounds: usize,
    fd_limit: u64,
) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(
        out,
        "Machine: {cpu}, {cores} cores, Linux {}; release builds; each figure is the median \
         of {rounds} runs of {seconds} s (each after a 0.3 s warm-up), the models taking \
         turns; descriptor limit {fd_limit}; load client: 1 thread, closed loop (open \
         loop where a table says so), every byte checked. Server CPU per request: the \
         server's utime + stime (/proc/PID/stat, 10 ms ticks) over the run, divided by \
         the requests answered.\n",
        kernel.trim()
    );
    let fastest_of = |load_index: usize| {
        models
            .iter()
            .enumerate()
            .filter_map(|(m, _)| results.get(&(load_index, m))?.as_ref().ok())
            .map(|m| m.rps)
            .fold(0.0, f64::max)
    };
    // The overview: one row per model, one column per load, requests/s and the
    // ratio to that load's fastest model. The tables after it give the latencies.
    let _ = writeln!(out, "**All loads: requests/s (ratio to the fastest)**\n");
    let closed: Vec<usize> = (0..loads.len())
        .filter(|&index| loads[index].rate.is_none())
        .collect();
    let header: Vec<&str> = closed.iter().map(|&i| loads[i].name.as_str()).collect();
    let _ = writeln!(out, "| model | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(closed.len()));
    for (model_index, model) in models.iter().enumerate() {
        let cells: Vec<String> = closed
            .iter()
            .map(
                |&load_index| match results.get(&(load_index, model_index)) {
                    Some(Ok(m)) => {
                        let fastest = fastest_of(load_index);
                        let ratio = if fastest > 0.0 { m.rps / fastest } else { 0.0 };
                        format!("{} ({ratio:.2})", thousands(m.rps))
                    }
                    Some(Err(reason)) if reason.starts_with("refused") => "refused".into(),
                    Some(Err(reason)) if reason.starts_with("n/a") => "n/a".into(),
                    Some(Err(_)) => "failed".into(),
                    None => String::new(),
                },
            )
            .collect();
        let _ = writeln!(out, "| {} | {} |", model.name, cells.join(" | "));
    }
    out.push('\n');
    for (load_index, spec) in loads.iter().enumerate() {
        let fastest = fastest_of(load_index);
        let _ = writeln!(out, "**{}**\n", spec.name);
        let _ = writeln!(
            out,
            "| model | requests/s | vs fastest | p50 (us) | p99 (us) | p99.9 (us) | max (us) | server CPU per request (us) | server CPU | client CPU | spread of rounds |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (model_index, model) in models.iter().enumerate() {
            match results.get(&(load_index, model_index)) {
                Some(Ok(m)) => {
                    let _ = writeln!(
                        out,
                        "| {} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.0}% | {:.0}% | {:.0}% |",
                        model.name,
                        m.rps,
                        if fastest > 0.0 { m.rps / fastest } else { 0.0 },
                        m.p50_us,
                        m.p99_us,
                        m.p999_us,
                        m.max_us,
                        m.server_us_per_request,
                        m.server_cpu * 100.0,
                        m.client_cpu * 100.0,
                        m.spread * 100.0
                    );
                }
                Some(Err(reason)) => {
                    let _ = writeln!(out, "| {} | {reason} | | | | | | | | | |", model.name);
                }
                None => {}
            }
        }
        out.push('\n');
    }
    out
}

/// 136010.4 as "136,010": easier to compare by eye in a table.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// A line chart of requests/s against idle connections, one line per model, for the
/// loads that differ only in their idle connections.
fn svg_chart(
    loads: &[LoadSpec],
    models: &[Model],
    results: &BTreeMap<(usize, usize), Result<Measured, String>>,
) -> String {
    let points: Vec<(usize, usize)> = loads
        .iter()
        .enumerate()
        .filter(|(_, l)| l.conns == 50 && l.size == 64 && l.rate.is_none())
        .map(|(i, l)| (i, l.idle))
        .collect();
    // The y axis goes up to the chart's highest point, rounded up to 20,000s.
    let highest = points
        .iter()
        .flat_map(|(load_index, _)| {
            (0..models.len()).filter_map(move |m| results.get(&(*load_index, m))?.as_ref().ok())
        })
        .map(|m| m.rps)
        .fold(1.0, f64::max);
    let top = (highest / 20_000.0).ceil() * 20_000.0;
    let (width, height, left, bottom, plot_top) = (800.0, 360.0, 80.0, 40.0, 40.0);
    let x_of = |slot: usize| {
        left + 30.0 + slot as f64 * (width - left - 300.0) / (points.len().max(2) - 1) as f64
    };
    let y_of = |rps: f64| height - bottom - rps / top * (height - bottom - plot_top);
    let colours = [
        "#000000", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
        "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8",
    ];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{plot_top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"10\" y=\"18\">requests/s, 50 active connections of 64 B, against idle connections</text>\n",
        height - bottom,
        width - 270.0,
        height - bottom,
        height - bottom
    );
    for step in 0..=4 {
        let rps = top * step as f64 / 4.0;
        let y = y_of(rps);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y + 4.0,
            thousands(rps)
        );
        if step > 0 {
            let _ = writeln!(
                svg,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#dddddd\"/>",
                width - 270.0
            );
        }
    }
    for (slot, (_, idle)) in points.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{} idle</text>",
            x_of(slot),
            height - bottom + 18.0,
            thousands(*idle as f64)
        );
    }
    for (model_index, model) in models.iter().enumerate() {
        let colour = colours[model_index % colours.len()];
        let line: Vec<String> = points
            .iter()
            .enumerate()
            .filter_map(|(slot, (load_index, _))| {
                let m = results.get(&(*load_index, model_index))?.as_ref().ok()?;
                Some(format!("{:.1},{:.1}", x_of(slot), y_of(m.rps)))
            })
            .collect();
        if line.is_empty() {
            continue;
        }
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            line.join(" ")
        );
        for point in &line {
            let (x, y) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                svg,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{colour}\"/>"
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>",
            width - 250.0,
            plot_top + 10.0 + model_index as f64 * 16.0,
            if line.len() < points.len() {
                format!("{} (not run with idle)", model.name)
            } else {
                model.name.to_string()
            }
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The median round of one model under one load, with the spread of its rounds,
/// both by the figure the load varies: requests/s in a closed loop; in an open loop
/// the rate is fixed, so the rounds differ only in latency, and p99 decides.
fn median_round(measured: &mut [Measured], open_loop: bool) -> Option<Measured> {
    let figure = |m: &Measured| if open_loop { m.p99_us } else { m.rps };
    measured.sort_by(|a, b| figure(a).total_cmp(&figure(b)));
    let lowest = measured.first().map(figure)?;
    let highest = measured.last().map(figure)?;
    let median = measured.get(measured.len() / 2)?.clone();
    Some(Measured {
        spread: (highest - lowest) / figure(&median).max(1e-9),
        ..median
    })
}

#[cfg(test)]
mod tests {
    use super::{Measured, clock_ticks_per_second, median_round, thousands};

    fn round(rps: f64, p99_us: f64) -> Measured {
        Measured {
            rps,
            p50_us: 0.0,
            p99_us,
            p999_us: 0.0,
            max_us: 0.0,
            server_cpu: 0.0,
            server_us_per_request: 0.0,
            client_cpu: 0.0,
            spread: 0.0,
        }
    }

    #[test]
    fn a_closed_loop_keeps_the_median_requests_per_second() {
        let mut rounds = [round(300.0, 9.0), round(100.0, 1.0), round(200.0, 5.0)];
        let median = median_round(&mut rounds, false).expect("three rounds");
        assert_eq!(median.rps, 200.0);
        assert!((median.spread - 1.0).abs() < 1e-9, "{}", median.spread);
    }

    #[test]
    fn an_open_loop_keeps_the_median_p99() {
        // The rate is fixed: requests/s differ by noise only; the p99 of the rounds
        // differ tenfold, and the spread must say so.
        let mut rounds = [
            round(40_001.0, 1_000.0),
            round(39_999.0, 100_000.0),
            round(40_000.0, 10_000.0),
        ];
        let median = median_round(&mut rounds, true).expect("three rounds");
        assert_eq!(median.p99_us, 10_000.0);
        assert!((median.spread - 9.9).abs() < 1e-9, "{}", median.spread);
    }

    #[test]
    fn no_round_no_median() {
        assert!(median_round(&mut [], true).is_none());
    }

    #[test]
    fn clock_ticks_per_second_is_known() {
        assert!(clock_ticks_per_second() >= 1.0);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(136010.4), "136,010");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }
}

//! `cargo run -- trace NN`: a lesson's run under strace, its socket calls printed and
//! drawn. The parser's own tests (on traces captured on this machine, tests/traces/)
//! are in src/strace/parse.rs; these run the real front door.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::*;

const WORKBOOK: &str = env!("CARGO_BIN_EXE_workbook");

/// One line of the printed trace: `+0.000123 s  server thread 2  accept4(3) = 5 ...`.
struct Line {
    /// "server" or "client".
    side: String,
    /// "server", "server thread 2", ...
    who: String,
    call: String,
    text: String,
}

/// Runs `trace ARGS --svg FILE`; returns the printed calls and the picture's text.
fn trace(args: &[&str]) -> (Vec<Line>, String) {
    let svg = std::env::temp_dir().join(format!(
        "workbook-trace-test-{}-{}.svg",
        std::process::id(),
        args[0]
    ));
    let svg_arg = svg.display().to_string();
    let mut all = vec!["trace", "--svg", &svg_arg];
    all.extend_from_slice(args);
    let run = run_front_door(WORKBOOK, &all, b"");
    assert!(
        run.status.success(),
        "trace {args:?} failed: {}\n{}",
        run.stdout,
        run.stderr
    );
    let picture = std::fs::read_to_string(&svg)
        .unwrap_or_else(|err| panic!("no picture at {}: {err}", svg.display()));
    let _ = std::fs::remove_file(&svg);
    let lines: Vec<Line> = run
        .stdout
        .lines()
        .skip_while(|line| !line.contains("the socket calls of both programs"))
        .skip(1)
        .filter(|line| line.trim_start().starts_with('+'))
        .filter_map(|line| {
            // `+T s  WHO  CALL(...)`: WHO and CALL are separated by two spaces.
            let rest = line.trim_start().split_once(" s  ")?.1;
            let (who, text) = rest.split_once("  ")?;
            let text = text.trim_start();
            Some(Line {
                side: who.split_whitespace().next()?.to_string(),
                who: who.trim().to_string(),
                call: text.split('(').next()?.to_string(),
                text: text.to_string(),
            })
        })
        .collect();
    assert!(
        !lines.is_empty(),
        "no calls printed by trace {args:?}:\n{}",
        run.stdout
    );
    (lines, picture)
}

/// Whether `wanted` occurs in `calls` in this order (other calls between allowed).
fn in_order(calls: &[&str], wanted: &[&[&str]]) -> bool {
    let mut at = 0;
    for call in calls {
        if at < wanted.len() && wanted[at].contains(call) {
            at += 1;
        }
    }
    at == wanted.len()
}

/// A minimal well-formedness check: every tag closed in order, attributes quoted,
/// no stray `<` or `&` in text. Enough to catch unescaped text and unclosed elements.
fn assert_well_formed_xml(xml: &str) {
    let mut open: Vec<String> = Vec::new();
    let mut rest = xml;
    let mut seen_root = false;
    while let Some(at) = rest.find(['<', '&']) {
        let (text, tail) = rest.split_at(at);
        assert!(
            !text.contains('>'),
            "a stray '>' in text near {:?}",
            &text[text.len().saturating_sub(40)..]
        );
        if tail.starts_with('&') {
            let entity_end = tail.find(';').expect("an '&' without ';'");
            let entity = &tail[..=entity_end];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity)
                    || entity.starts_with("&#"),
                "unknown entity {entity}"
            );
            rest = &tail[entity_end + 1..];
            continue;
        }
        let end = tail.find('>').expect("a tag without '>'");
        let tag = &tail[1..end];
        rest = &tail[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = open
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(top, name.trim(), "</{name}> closes <{top}>");
            continue;
        }
        assert!(!tag.contains('<'), "a '<' inside the tag <{tag}>");
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "an unbalanced quote in <{tag}>"
        );
        let name = tag
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_end_matches('/');
        if open.is_empty() {
            assert!(!seen_root, "a second root element <{name}>");
            seen_root = true;
        }
        if !tag.ends_with('/') {
            open.push(name.to_string());
        }
    }
    assert!(open.is_empty(), "elements left open: {open:?}");
    assert!(seen_root, "no root element");
}

#[test]
fn a_trace_of_lesson_01_shows_the_server_steps_and_the_client_steps_in_order() {
    if !tool_available("strace", &["-V"]) {
        return;
    }
    let (lines, picture) = trace(&["01", "hello"]);
    let server: Vec<&str> = lines
        .iter()
        .filter(|l| l.side == "server")
        .map(|l| l.call.as_str())
        .collect();
    let client: Vec<&str> = lines
        .iter()
        .filter(|l| l.side == "client")
        .map(|l| l.call.as_str())
        .collect();
    assert!(
        in_order(
            &server,
            &[&["socket"], &["bind"], &["listen"], &["accept", "accept4"]]
        ),
        "server calls: {server:?}"
    );
    assert!(
        in_order(&client, &[&["socket"], &["connect"]]),
        "client calls: {client:?}"
    );
    // The connect is drawn as what completed the server's accept.
    assert!(
        lines
            .iter()
            .any(|l| l.call.starts_with("accept") && l.text.contains("<- client connect")),
        "no accept marked as completed by the client's connect"
    );
    assert_well_formed_xml(&picture);
    assert!(picture.contains("accept"), "the picture shows no accept");
}

#[test]
fn a_trace_of_lesson_05_shows_one_poll_call_serving_several_connections() {
    if !tool_available("strace", &["-V"]) {
        return;
    }
    let (lines, picture) = trace(&["05", "--conns", "3", "hello"]);
    // The descriptors accept returned: `accept4(3) = 6 from ...`.
    let connections: Vec<String> = lines
        .iter()
        .filter(|l| l.side == "server" && l.call.starts_with("accept"))
        .filter_map(|l| l.text.split(" = ").nth(1)?.split_whitespace().next())
        .filter(|fd| fd.parse::<i32>().is_ok_and(|fd| fd >= 0))
        .map(str::to_string)
        .collect();
    assert!(connections.len() >= 3, "accepted: {connections:?}");
    // `poll([4 3 6 7 8], -1) = 1 ready [6]`: which descriptors it watched.
    let serving_several = lines.iter().filter(|l| l.call == "poll").any(|l| {
        let watched = l.text["poll([".len()..].split(']').next().unwrap_or("");
        watched
            .split_whitespace()
            .filter(|fd| connections.iter().any(|c| c == fd))
            .count()
            >= 2
            && l.text.contains(" ready [")
    });
    let polls: Vec<&str> = lines
        .iter()
        .filter(|l| l.call == "poll")
        .map(|l| l.text.as_str())
        .collect();
    assert!(
        serving_several,
        "no poll call watched two or more connections {connections:?}: {polls:#?}"
    );
    assert!(
        lines.iter().filter(|l| l.who == "server").count() > 10,
        "the poll server's calls are on its main thread"
    );
    assert_well_formed_xml(&picture);
}

#[test]
fn trace_without_strace_is_one_error_line_with_the_install_hint() {
    let empty = std::env::temp_dir().join(format!("workbook-no-strace-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(WORKBOOK)
        .args(["trace", "01"])
        .env("PATH", &empty)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.starts_with("error: strace"), "stderr: {stderr}");
    assert!(
        stderr.contains("apt-get install strace"),
        "stderr: {stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_well_formedness_check_catches_unescaped_text_and_unclosed_tags() {
    assert_well_formed_xml("<svg><text x=\"1\">a &lt; b</text><rect/></svg>");
    for bad in [
        "<svg><text>a < b</text></svg>",
        "<svg><text>a & b</text></svg>",
        "<svg><text>open</svg>",
        "<svg><rect x=\"1/></svg>",
    ] {
        let caught = std::panic::catch_unwind(|| assert_well_formed_xml(bad)).is_err();
        assert!(caught, "not caught: {bad}");
    }
}

/// The chapters' pictures exist and are well formed (`cargo run -- trace --book`).
#[test]
fn every_chapter_01_to_17_has_its_trace_picture() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("book/src");
    for number in 1..=17 {
        let svg = dir.join(format!("traces/{number:02}.svg"));
        let picture = std::fs::read_to_string(&svg).unwrap_or_else(|err| {
            panic!(
                "{}: {err}; draw it with cargo run -- trace --book",
                svg.display()
            )
        });
        assert_well_formed_xml(&picture);
        let chapter = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{number:02}_")) && n.ends_with(".md"))
            })
            .unwrap_or_else(|| panic!("no chapter {number:02}"));
        let text = std::fs::read_to_string(&chapter).unwrap();
        assert!(
            text.contains(&format!("traces/{number:02}.svg")),
            "{} does not show traces/{number:02}.svg",
            chapter.display()
        );
    }
}

/// `trace 04 | head -3` (05 in the review that found it): when nobody reads the output any more, the traced server is
/// stopped too (strace ignores SIGINT while it runs a program: the signal must go to
/// the server itself), so nothing is left listening.
#[test]
fn a_closed_stdout_stops_the_traced_server() {
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;
    use std::time::Instant;
    if !tool_available("strace", &["-V"]) {
        return;
    }
    let svg =
        std::env::temp_dir().join(format!("workbook-trace-closed-{}.svg", std::process::id()));
    let mut child = Command::new(WORKBOOK)
        // Lesson 04, not 05: the raw traces are named by lesson, and another test
        // traces 05 at the same time.
        .args(["trace", "--svg", &svg.display().to_string(), "04"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut port = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("server │ listening on ") {
            port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            break;
        }
    }
    let port = port.expect("no `listening on` line");
    drop(lines);
    let deadline = Instant::now() + FRONT_DOOR_WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("trace did not end after its stdout closed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_file(&svg);
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the traced server still listens on {port} after trace ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `kill -TERM` to the workbook (as a CI job's timeout does) stops what it started:
/// before, the server, the client and their straces went on, owned by init.
#[test]
fn sigterm_to_the_workbook_stops_the_traced_server() {
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;
    use std::time::Instant;
    if !tool_available("strace", &["-V"]) {
        return;
    }
    let svg = std::env::temp_dir().join(format!("workbook-trace-term-{}.svg", std::process::id()));
    // Lesson 11's client with far more requests than it can make before the signal.
    let mut child = Command::new(WORKBOOK)
        .args(["trace", "--svg", &svg.display().to_string(), "11"])
        .args(["--conns", "2", "--requests", "100000000", "--threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut port = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("server │ listening on ") {
            port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            break;
        }
    }
    let port = port.expect("no `listening on` line");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Keep reading, so that a full pipe cannot hold the workbook up.
    std::thread::spawn(move || lines.for_each(drop));
    let deadline = Instant::now() + FRONT_DOOR_WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("trace did not end after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130), "{status}");
    let _ = std::fs::remove_file(&svg);
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the traced server still listens on {port} after the workbook got SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

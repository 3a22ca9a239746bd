//! The front door, `cargo run` (the `workbook` binary), run as a learner or a
//! teacher would: the map, `run NN` for every lesson, `check NN` against the lessons'
//! own servers, a Python server, and servers broken on purpose, and `exercise`.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

use support::*;

const WORKBOOK: &str = env!("CARGO_BIN_EXE_workbook");

fn workbook(args: &[&str]) -> Exited {
    run_front_door(WORKBOOK, args, b"")
}

#[test]
fn the_map_lists_every_lesson_folder() {
    let map = workbook(&[]);
    assert!(map.status.success(), "{}", map.stderr);
    let lessons = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/lessons")).unwrap();
    for entry in lessons {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            map.stdout.contains(&format!("chapter: book/src/{name}.md")),
            "the map does not show lesson {name}:\n{}",
            map.stdout
        );
        assert!(
            !map.stdout.contains(&format!("{name}  (a lesson folder")),
            "the front door does not know lesson {name}"
        );
    }
    assert!(map.stdout.contains("cargo run -- run 01"), "{}", map.stdout);
    assert!(map.stdout.contains("Next things to try"), "{}", map.stdout);
}

#[test]
fn run_shows_both_programs_for_every_lesson() {
    for lesson in [
        "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "12", "13", "14", "15", "16",
        "17", "18", "19",
    ] {
        let ran = workbook(&["run", lesson]);
        let out = &ran.stdout;
        assert!(
            ran.status.success(),
            "run {lesson}: {:?}\n{out}\n{}",
            ran.status,
            ran.stderr
        );
        // Lesson 15's one socket listens on IPv6's wildcard, `::`, for both families;
        // lesson 16 listens on a socket file: `listening on unix:PATH`.
        assert!(
            out.contains("server │ listening on 127.0.0.1:")
                || (lesson == "15" && out.contains("server │ listening on [::]:"))
                || (lesson == "16" && out.contains("server │ listening on unix:/")),
            "run {lesson}:\n{out}"
        );
        assert!(
            out.contains("client │ "),
            "run {lesson}: no client line:\n{out}"
        );
        assert!(
            out.contains("server │ shutting down"),
            "run {lesson}:\n{out}"
        );
        assert!(
            out.contains("workbook │ server exited with status 0"),
            "run {lesson}:\n{out}"
        );
    }
}

#[test]
fn run_passes_client_and_server_arguments() {
    let ran = workbook(&["run", "10", "--server-args", "--mode forking", "hello"]);
    assert!(ran.status.success(), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("forking"), "{}", ran.stdout);
}

#[test]
fn run_explains_lesson_11_and_rejects_unknown_lessons() {
    let eleven = workbook(&["run", "11"]);
    assert_error_line(&eleven, &["load runner", "11_load_test_server"]);
    let nope = workbook(&["run", "42"]);
    assert_error_line(&nope, &["no lesson '42'"]);
    assert_eq!(workbook(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(workbook(&["run"]).status.code(), Some(2));
}

#[test]
fn check_passes_against_the_lessons_own_server() {
    let server = Server::start(env!("CARGO_BIN_EXE_05_poll_server"), &[]);
    let port = server.port().to_string();
    let checked = workbook(&["check", "05", "--port", &port]);
    assert!(
        checked.status.success(),
        "{}\n{}",
        checked.stdout,
        checked.stderr
    );
    let last = checked.stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("8 passed, 0 failed"), "{}", checked.stdout);
    assert!(
        checked.stdout.contains("PASS echo-binary"),
        "{}",
        checked.stdout
    );
}

#[test]
fn check_lists_selects_and_writes_junit() {
    let listed = workbook(&["check", "05", "--list"]);
    assert!(
        listed.stdout.contains("echo-half-close"),
        "{}",
        listed.stdout
    );
    let server = Server::start(env!("CARGO_BIN_EXE_03_udp_time_server"), &[]);
    let port = server.port().to_string();
    let junit = std::env::temp_dir().join(format!("workbook-junit-{}.xml", std::process::id()));
    let junit_arg = junit.to_str().unwrap();
    let checked = workbook(&[
        "check",
        "03",
        "--port",
        &port,
        "--only",
        "time-empty-datagram",
        "--junit",
        junit_arg,
    ]);
    assert!(
        checked.status.success(),
        "{}\n{}",
        checked.stdout,
        checked.stderr
    );
    assert!(
        checked.stdout.contains("1 passed, 0 failed"),
        "{}",
        checked.stdout
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    let _ = std::fs::remove_file(&junit);
    assert!(
        xml.contains("<testcase classname=\"03_udp_time\" name=\"time-empty-datagram\">"),
        "{xml}"
    );
    let unknown = workbook(&["check", "05", "--only", "no-such-check"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", unknown.stderr);
}

#[test]
fn check_says_when_nothing_listens_or_the_lesson_has_no_protocol() {
    let port = closed_port().to_string();
    let nothing = workbook(&["check", "05", "--port", &port]);
    assert_error_line(&nothing, &["nothing listening", &port]);
    let eleven = workbook(&["check", "11"]);
    assert_error_line(&eleven, &["no protocol to check"]);
}

/// A server on a thread of this test, serving each connection with `serve`.
fn broken_server(serve: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || serve(stream));
        }
    });
    port
}

fn check_fails(port: u16, only: &str, expect: &[&str]) {
    let port = port.to_string();
    let checked = workbook(&[
        "check",
        "05",
        "--port",
        &port,
        "--timeout",
        "2",
        "--only",
        only,
    ]);
    assert_eq!(
        checked.status.code(),
        Some(1),
        "{}\n{}",
        checked.stdout,
        checked.stderr
    );
    assert!(
        checked.stdout.contains(&format!("FAIL {only}: ")),
        "{}",
        checked.stdout
    );
    for needle in expect {
        assert!(
            checked.stdout.contains(needle),
            "{needle:?} missing:\n{}",
            checked.stdout
        );
    }
    assert!(
        checked.stdout.contains("0 passed, 1 failed"),
        "{}",
        checked.stdout
    );
}

#[test]
fn check_names_a_dropped_byte() {
    // Echoes every chunk but its last byte.
    let port = broken_server(|mut stream| {
        let mut buffer = [0u8; 65536];
        while let Ok(n @ 1..) = stream.read(&mut buffer) {
            if stream.write_all(&buffer[..n - 1]).is_err() {
                return;
            }
        }
    });
    check_fails(
        port,
        "echo-message",
        &["sent \"hello, echo\\n\"", "\"hello, echo\""],
    );
}

#[test]
fn check_names_a_server_that_serves_one_client_at_a_time() {
    // One client at a time, as lesson 01: the idle client holds everyone up.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buffer = [0u8; 65536];
            while let Ok(n @ 1..) = stream.read(&mut buffer) {
                if stream.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    });
    check_fails(
        port,
        "echo-idle-client",
        &["another client connected and silent"],
    );
}

#[test]
fn check_names_a_server_that_never_closes_after_a_half_close() {
    let port = broken_server(|mut stream| {
        let mut buffer = [0u8; 65536];
        while let Ok(n @ 1..) = stream.read(&mut buffer) {
            if stream.write_all(&buffer[..n]).is_err() {
                return;
            }
        }
        // EOF from the client, and then: nothing. The socket stays open.
        let _ = stream.shutdown(Shutdown::Read);
        thread::park();
    });
    check_fails(
        port,
        "echo-half-close",
        &["nothing more came before the timeout"],
    );
}

#[test]
fn check_passes_a_python_poll_server() {
    if !tool_available("python3", &["--version"]) {
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/poll_echo_server.py"
    );
    let server = Server::start("python3", &[script]);
    let port = server.port().to_string();
    let checked = workbook(&["check", "05", "--port", &port]);
    drop(server);
    assert!(
        checked.status.success(),
        "the Python poll server from the seed should pass lesson 05's checks:\n{}\n{}",
        checked.stdout,
        checked.stderr
    );
}

#[test]
fn exercise_says_not_yet_on_the_lesson_as_shipped_and_shows_its_hint() {
    // 06.2 (an --idle-timeout flag) fails at once on the shipped lesson: the server
    // refuses the flag it does not have yet.
    let checked = workbook(&["exercise", "06.2"]);
    assert_eq!(
        checked.status.code(),
        Some(1),
        "{}\n{}",
        checked.stdout,
        checked.stderr
    );
    assert!(
        checked.stdout.contains("06.2: not yet"),
        "{}",
        checked.stdout
    );
    let hint = workbook(&["exercise", "06.2", "--hint"]);
    assert!(hint.status.success(), "{}", hint.stderr);
    assert!(hint.stdout.starts_with("06.2 hint:\n"), "{}", hint.stdout);
    let unknown = workbook(&["exercise", "06.99"]);
    assert_error_line(&unknown, &["no exercise '06.99'"]);
}

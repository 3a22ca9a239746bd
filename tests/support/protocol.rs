//! The protocol tests: a lesson's wire protocol, checked by the same code that
//! `cargo run -- check NN` runs against any server (`workbook::protocol`).

use workbook::protocol::{self, Target};

use super::*;

/// The longest one wait of a protocol check may take in the tests.
pub const PROTOCOL_WAIT: Duration = Duration::from_secs(5);

/// Starts `server_exe` with `args` and runs every protocol check of `lesson` against
/// it; fails naming each check that failed, with what was sent and what came back.
pub fn all_checks_pass(lesson: u32, server_exe: &str, args: &[&str]) {
    all_checks_pass_with_tls(lesson, server_exe, args, None);
}

/// [`all_checks_pass`] for a TLS server (lesson 14): the checks trust `tls`'s CA.
pub fn all_checks_pass_with_tls(
    lesson: u32,
    server_exe: &str,
    args: &[&str],
    tls: Option<protocol::TlsTarget>,
) {
    let mut server = Server::start(server_exe, args);
    let checks = protocol::checks(lesson).expect("the lesson has protocol checks");
    let mut target = Target::new(server.addr);
    target.tls = tls;
    // Per wait, not per check: long enough for a loaded machine, short enough that a
    // server that broke its protocol (and leaves a check waiting) fails in seconds.
    target.timeout = PROTOCOL_WAIT;
    let failed: Vec<String> = protocol::run_all(checks, &target)
        .into_iter()
        .filter_map(|(check, result)| {
            result
                .err()
                .map(|why| format!("protocol check {} ({}):\n  {why}", check.name, check.about))
        })
        .collect();
    if !failed.is_empty() {
        let _ = server.drain();
        panic!(
            "{} of {} protocol checks of lesson {lesson:02} failed:\n{}\n{}",
            failed.len(),
            checks.len(),
            failed.join("\n"),
            server.last_lines()
        );
    }
}

/// [`all_checks_pass`] for lesson 16's transports: `target` says where (an AF_UNIX
/// path, stream or datagram, or UDP at the server's address when it has no path).
pub fn all_checks_pass_at(lesson: u32, server: &mut Server, target: &mut Target) {
    target.timeout = PROTOCOL_WAIT;
    let checks = protocol::checks_for(lesson, target).expect("the lesson has protocol checks");
    let failed: Vec<String> = protocol::run_all(checks, target)
        .into_iter()
        .filter_map(|(check, result)| {
            result
                .err()
                .map(|why| format!("protocol check {} ({}):\n  {why}", check.name, check.about))
        })
        .collect();
    if !failed.is_empty() {
        let _ = server.drain();
        panic!(
            "{} of {} protocol checks of lesson {lesson:02} failed:\n{}\n{}",
            failed.len(),
            checks.len(),
            failed.join("\n"),
            server.last_lines()
        );
    }
}

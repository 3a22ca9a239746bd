//! Reading strace's output (`strace -f -ttt -T -o FILE`): one record per line,
//!
//!   7526  1764905435.737605 socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_TCP) = 3 <0.000028>
//!   7526  1764905435.738672 accept4(3,  <unfinished ...>
//!   7526  1764905436.743832 <... accept4 resumed>{sa_family=AF_INET, ...}, [128 => 16], SOCK_CLOEXEC) = 5 <1.005136>
//!   7530  1764905436.756166 --- SIGINT {si_signo=SIGINT, si_code=SI_USER, ...} ---
//!   7526  1764905436.757491 +++ exited with 0 +++
//!
//! A call another thread interrupted is cut in two (`<unfinished ...>`, then
//! `<... NAME resumed>`): the two halves are joined into one call that starts at the
//! first and lasts as `<SECONDS>` says.

use std::collections::HashMap;

/// One finished system call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The thread (or process) that made it.
    pub pid: u32,
    /// When it started, in seconds since the epoch.
    pub start: f64,
    /// How long it took (`<0.000028>`); None when strace could not say (`<unavailable>`).
    pub seconds: Option<f64>,
    pub name: String,
    /// The arguments as strace wrote them, split at the top-level commas.
    pub args: Vec<String>,
    /// The return value (`3`, `-1`), None for `?`.
    pub value: Option<i64>,
    /// The error name when it failed (`EAGAIN`).
    pub errno: Option<String>,
    /// What strace adds after the value: `(Timeout)`, `([{fd=5, revents=POLLIN}])`.
    pub detail: String,
}

impl Call {
    /// When it ended (its start if strace gave no duration).
    pub fn end(&self) -> f64 {
        self.start + self.seconds.unwrap_or(0.0)
    }

    /// The first argument as a file descriptor.
    pub fn fd(&self) -> Option<i32> {
        self.args.first().and_then(|arg| arg.trim().parse().ok())
    }
}

/// One line of a trace.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Call(Call),
    /// `--- SIGINT {...} ---`: a signal delivered to `pid`.
    Signal {
        pid: u32,
        time: f64,
        name: String,
    },
    /// `+++ exited with 0 +++` or `+++ killed by SIGKILL +++`.
    Exit {
        pid: u32,
        time: f64,
        how: String,
    },
}

/// The records of a whole trace, in the order of the file (calls where they started),
/// and how many lines were not understood.
pub fn parse(text: &str) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut unparsed = 0;
    // pid -> (index in records reserved for the call, name, start, first half).
    let mut unfinished: HashMap<u32, (usize, f64, String)> = HashMap::new();
    for line in text.lines() {
        let Some((pid, time, rest)) = prefix(line) else {
            if !line.trim().is_empty() {
                unparsed += 1;
            }
            continue;
        };
        if let Some(signal) = rest.strip_prefix("--- ") {
            let name = signal.split_whitespace().next().unwrap_or("?").to_string();
            records.push(Record::Signal { pid, time, name });
        } else if let Some(exit) = rest.strip_prefix("+++ ") {
            let how = exit.trim_end_matches(" +++").trim().to_string();
            records.push(Record::Exit { pid, time, how });
        } else if let Some(first_half) = rest.strip_suffix("<unfinished ...>") {
            // Keep its place: the call began here, whatever comes between.
            records.push(Record::Signal {
                pid,
                time,
                name: String::new(),
            });
            unfinished.insert(pid, (records.len() - 1, time, first_half.to_string()));
        } else if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((_name, second_half)) = resumed.split_once(" resumed>") else {
                unparsed += 1;
                continue;
            };
            let Some((at, start, first_half)) = unfinished.remove(&pid) else {
                unparsed += 1;
                continue;
            };
            match call(
                pid,
                start,
                &format!("{}{second_half}", first_half.trim_end()),
            ) {
                Some(call) => records[at] = Record::Call(call),
                None => unparsed += 1,
            }
        } else {
            match call(pid, time, rest) {
                Some(call) => records.push(Record::Call(call)),
                None => unparsed += 1,
            }
        }
    }
    // Placeholders of calls that never resumed (the trace was cut) go.
    records.retain(|record| !matches!(record, Record::Signal { name, .. } if name.is_empty()));
    (records, unparsed)
}

/// `PID  SECONDS.MICROS rest` (the pid is missing when strace followed one process).
fn prefix(line: &str) -> Option<(u32, f64, &str)> {
    let line = line.trim_start();
    let (first, rest) = line.split_once(char::is_whitespace)?;
    let (pid, time_text, rest) = if first.contains('.') {
        (0, first, rest)
    } else {
        let rest = rest.trim_start();
        let (time, rest) = rest.split_once(' ')?;
        (first.parse().ok()?, time, rest)
    };
    let time: f64 = time_text.parse().ok()?;
    Some((pid, time, rest))
}

/// `name(args) = value [ERRNO] [(detail)] <seconds>`.
fn call(pid: u32, start: f64, text: &str) -> Option<Call> {
    let open = text.find('(')?;
    let name = text[..open].trim().to_string();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let body = &text[open + 1..];
    let close = matching_paren(body)?;
    let args = split_top_level(&body[..close]);
    let rest = body[close + 1..].trim();
    let rest = rest.strip_prefix('=')?.trim();
    let (rest, seconds) = match rest.rfind(" <") {
        Some(at) if rest.ends_with('>') => (
            rest[..at].trim(),
            rest[at + 2..rest.len() - 1].parse::<f64>().ok(),
        ),
        _ => (rest, None),
    };
    let (value_text, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let value = if let Some(hex) = value_text.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else {
        value_text.parse().ok()
    };
    let mut after = after.trim();
    let mut errno = None;
    if value == Some(-1) || value_text == "?" {
        if let Some(name) = after
            .split_whitespace()
            .next()
            .filter(|w| w.starts_with('E'))
        {
            errno = Some(name.to_string());
            after = after[name.len()..].trim();
        }
    }
    Some(Call {
        pid,
        start,
        seconds,
        name,
        args,
        value,
        errno,
        detail: after.to_string(),
    })
}

/// Where the `)` closing an argument list is, skipping strings and nested brackets.
fn matching_paren(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (at, c) in body.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' if depth == 0 => return Some(at),
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Splits at the commas outside strings and brackets; each piece trimmed.
pub fn split_top_level(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                pieces.push(text[start..at].trim().to_string());
                start = at + 1;
            }
            _ => {}
        }
    }
    let last = text[start..].trim();
    if !last.is_empty() || !pieces.is_empty() {
        pieces.push(last.to_string());
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER_01: &str = include_str!("../../tests/traces/01_server.txt");
    const CLIENT_01: &str = include_str!("../../tests/traces/01_client.txt");
    const SERVER_05: &str = include_str!("../../tests/traces/05_server.txt");

    fn calls(text: &str) -> Vec<Call> {
        let (records, unparsed) = parse(text);
        assert_eq!(unparsed, 0, "every line of the fixture is understood");
        records
            .into_iter()
            .filter_map(|record| match record {
                Record::Call(call) => Some(call),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_plain_line_gives_name_args_value_and_duration() {
        let line = "7526  1764905435.737605 socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_TCP) = 3 <0.000028>";
        let (records, unparsed) = parse(line);
        assert_eq!(unparsed, 0);
        let Record::Call(call) = &records[0] else {
            panic!("not a call: {records:?}")
        };
        assert_eq!(call.pid, 7526);
        assert_eq!(call.name, "socket");
        assert_eq!(
            call.args,
            ["AF_INET", "SOCK_STREAM|SOCK_CLOEXEC", "IPPROTO_TCP"]
        );
        assert_eq!(call.value, Some(3));
        assert_eq!(call.seconds, Some(0.000028));
        assert!((call.start - 1764905435.737605).abs() < 1e-6);
    }

    #[test]
    fn an_error_keeps_its_errno_and_strings_keep_their_commas_and_parens() {
        let text = "9 1.5 accept4(3, 0x7fff1d5d6a50, [128], SOCK_CLOEXEC) = -1 EINVAL (Invalid argument) <0.009933>\n\
                    9 1.6 sendto(5, \"a, b) = 4 \\\"x\\\"\"..., 33, MSG_NOSIGNAL, NULL, 0) = 33 <0.000041>\n\
                    9 1.7 poll([{fd=3, events=POLLIN}, {fd=5, events=POLLIN}], 2, -1) = 1 ([{fd=5, revents=POLLIN}]) <0.2>";
        let (records, unparsed) = parse(text);
        assert_eq!(unparsed, 0);
        let calls: Vec<&Call> = records
            .iter()
            .filter_map(|r| match r {
                Record::Call(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(calls[0].value, Some(-1));
        assert_eq!(calls[0].errno.as_deref(), Some("EINVAL"));
        assert_eq!(calls[1].args.len(), 6);
        assert_eq!(calls[1].args[2], "33");
        assert_eq!(calls[2].args.len(), 3);
        assert_eq!(calls[2].detail, "([{fd=5, revents=POLLIN}])");
    }

    #[test]
    fn an_unfinished_call_is_joined_with_its_resumption_in_its_place() {
        let text = "7526  10.0 accept4(3,  <unfinished ...>\n\
                    7530  10.5 write(1, \"listening\\n\", 10) = 10 <0.000059>\n\
                    7526  11.0 <... accept4 resumed>{sa_family=AF_INET, sin_port=htons(55576), sin_addr=inet_addr(\"127.0.0.1\")}, [128 => 16], SOCK_CLOEXEC) = 5 <1.005136>";
        let calls = calls(text);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "accept4");
        assert_eq!(calls[0].start, 10.0);
        assert_eq!(calls[0].args.len(), 4);
        assert_eq!(calls[0].args[0], "3");
        assert_eq!(calls[0].value, Some(5));
        assert_eq!(calls[1].name, "write");
    }

    #[test]
    fn signals_and_exits_are_records_and_a_cut_call_is_dropped() {
        let text = "7530  1.0 --- SIGINT {si_signo=SIGINT, si_code=SI_USER, si_pid=7519, si_uid=0} ---\n\
                    7526  2.0 +++ exited with 0 +++\n\
                    7527  2.5 +++ killed by SIGKILL +++\n\
                    7528  3.0 epoll_wait(4,  <unfinished ...>";
        let (records, unparsed) = parse(text);
        assert_eq!(unparsed, 0);
        assert_eq!(
            records,
            vec![
                Record::Signal {
                    pid: 7530,
                    time: 1.0,
                    name: "SIGINT".into()
                },
                Record::Exit {
                    pid: 7526,
                    time: 2.0,
                    how: "exited with 0".into()
                },
                Record::Exit {
                    pid: 7527,
                    time: 2.5,
                    how: "killed by SIGKILL".into()
                },
            ]
        );
    }

    #[test]
    fn the_captured_lesson_01_traces_hold_the_four_server_steps_and_the_client_two() {
        let server: Vec<String> = calls(SERVER_01).into_iter().map(|c| c.name).collect();
        let steps = ["socket", "bind", "listen", "accept4"];
        let mut at = 0;
        for name in &server {
            if at < steps.len() && name == steps[at] {
                at += 1;
            }
        }
        assert_eq!(at, steps.len(), "in order in {server:?}");
        let client: Vec<String> = calls(CLIENT_01).into_iter().map(|c| c.name).collect();
        let socket = client.iter().position(|n| n == "socket").unwrap();
        let connect = client.iter().position(|n| n == "connect").unwrap();
        assert!(socket < connect, "{client:?}");
    }

    #[test]
    fn the_captured_lesson_05_trace_parses_whole() {
        let polls = calls(SERVER_05)
            .into_iter()
            .filter(|c| c.name == "poll")
            .count();
        assert!(polls > 1);
    }
}

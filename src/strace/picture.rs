//! From two traces (the server's and the client's) to a sequence diagram: one lifeline
//! per thread, the socket calls in time order, the blocking ones tall, and arrows from
//! a call on one side to the call on the other side it completed.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::parse::{Call, Record};

/// A call that lasted longer than this is drawn as a wait (a tall box).
const BLOCKING: f64 = 0.002;
/// The most calls a picture shows; a longer run is cut with a note.
pub const MOST_CALLS_SHOWN: usize = 120;
/// The most lifelines drawn side by side (the book's page is not wider).
const MOST_LIFELINES: usize = 8;

/// One thread or process, as drawn.
#[derive(Debug)]
pub struct Lifeline {
    /// "server", "client".
    pub side: &'static str,
    pub pid: u32,
    /// "server", "server thread 2", "server child 1", ...
    pub label: String,
    /// A process fork made (its descriptors are copies, closed apart from the parent's).
    pub child: bool,
}

/// A kept call, with where it is drawn.
#[derive(Debug)]
pub struct Step {
    pub lifeline: usize,
    pub call: Call,
    /// The short text of the call: `accept4(3) = 5 from 127.0.0.1:55576`.
    pub text: String,
    pub blocked: bool,
}

/// An arrow from the step `from` (a connect or a write) to the step `to` it completed
/// on the other side (an accept or a read).
#[derive(Debug, PartialEq)]
pub struct Arrow {
    pub from: usize,
    pub to: usize,
}

#[derive(Debug)]
pub struct Diagram {
    pub lifelines: Vec<Lifeline>,
    /// In the order they started.
    pub steps: Vec<Step>,
    pub arrows: Vec<Arrow>,
    /// The earliest time, the origin of the `+SECONDS` column.
    pub origin: f64,
    /// Calls beyond the limit, not in `steps`.
    pub cut: usize,
}

/// The calls of one program's trace that concern its sockets: the socket calls
/// themselves, and read/write/close/poll/epoll on descriptors that are sockets (or
/// epoll instances). A program's own file reads and log writes are left out.
fn socket_calls(records: &[Record]) -> Vec<Call> {
    const ALWAYS: &[&str] = &[
        "socket",
        "socketpair",
        "bind",
        "listen",
        "accept",
        "accept4",
        "connect",
        "shutdown",
        "recvfrom",
        "recvmsg",
        "recvmmsg",
        "sendto",
        "sendmsg",
        "sendmmsg",
        "setsockopt",
        "getsockopt",
        "getsockname",
        "getpeername",
        "select",
        "pselect6",
        "io_uring_enter",
    ];
    let mut sockets: HashSet<i32> = HashSet::new();
    let mut kept = Vec::new();
    for record in records {
        let Record::Call(call) = record else { continue };
        let name = call.name.as_str();
        let fd = call.fd();
        let on_socket = fd.is_some_and(|fd| sockets.contains(&fd));
        let keep = match name {
            "poll" | "ppoll" => poll_fds(call).iter().any(|fd| sockets.contains(fd)),
            "epoll_create" | "epoll_create1" => true,
            "read" | "readv" | "write" | "writev" | "close" | "epoll_ctl" | "epoll_wait"
            | "epoll_pwait" | "epoll_pwait2" => on_socket,
            _ => ALWAYS.contains(&name),
        };
        if !keep {
            continue;
        }
        match name {
            "socket" | "accept" | "accept4" | "epoll_create" | "epoll_create1" => {
                if let Some(new) = call.value.filter(|v| *v >= 0) {
                    sockets.insert(new as i32);
                }
            }
            "socketpair" => {
                for fd in call
                    .args
                    .get(3)
                    .map(|pair| numbers(pair))
                    .unwrap_or_default()
                {
                    sockets.insert(fd);
                }
            }
            "close" => {
                if let Some(fd) = fd {
                    sockets.remove(&fd);
                }
            }
            _ => {}
        }
        kept.push(call.clone());
    }
    kept
}

/// The pids that fork (or clone without CLONE_THREAD) made: processes, not threads.
fn new_processes(records: &[Record]) -> HashSet<u32> {
    records
        .iter()
        .filter_map(|record| match record {
            Record::Call(call)
                if ["clone", "clone3", "fork", "vfork"].contains(&call.name.as_str())
                    && !call.args.iter().any(|arg| arg.contains("CLONE_THREAD")) =>
            {
                call.value.filter(|v| *v > 0).map(|v| v as u32)
            }
            _ => None,
        })
        .collect()
}

/// The descriptors a poll call watches: `[{fd=3, events=POLLIN}, ...]`.
fn poll_fds(call: &Call) -> Vec<i32> {
    call.args
        .first()
        .map(|list| field_numbers(list, "fd="))
        .unwrap_or_default()
}

/// The descriptors a poll or select call returned ready (from its detail).
fn ready_fds(call: &Call) -> Vec<i32> {
    match call.name.as_str() {
        "poll" | "ppoll" => field_numbers(&call.detail, "fd="),
        "select" | "pselect6" => select_ready(&call.detail),
        _ => Vec::new(),
    }
}

/// The ready descriptors in a select's detail, `(in [3 5], out [4], left {tv_sec=4,
/// tv_nsec=999997236})`: only the numbers of the `in`, `out` and `except` lists (the
/// time left is not a descriptor).
fn select_ready(detail: &str) -> Vec<i32> {
    let mut fds = Vec::new();
    for key in ["in [", "out [", "except ["] {
        for (at, _) in detail.match_indices(key) {
            // A list opens the detail or follows a comma, not the end of another word.
            let before = detail[..at].trim_end();
            if !(before.is_empty() || before.ends_with('(') || before.ends_with(',')) {
                continue;
            }
            let list = &detail[at + key.len()..];
            let list = &list[..list.find(']').unwrap_or(list.len())];
            fds.extend(numbers(list));
        }
    }
    fds.sort_unstable();
    fds.dedup();
    fds
}

/// Every number that follows `key` in `text`.
fn field_numbers(text: &str, key: &str) -> Vec<i32> {
    text.match_indices(key)
        .filter_map(|(at, _)| {
            let digits: String = text[at + key.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// Every whole number in `text` (`[3 5]`, `[3, 4]`).
fn numbers(text: &str) -> Vec<i32> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|piece| piece.parse().ok())
        .collect()
}

/// `{sa_family=AF_INET, sin_port=htons(8009), sin_addr=inet_addr("127.0.0.1")}` as
/// `127.0.0.1:8009` (IPv6 `[::1]:8009`, AF_UNIX its path).
pub fn address(text: &str) -> Option<String> {
    if let Some(path) = quoted_after(text, "sun_path=") {
        return Some(format!("unix:{path}"));
    }
    let port = field_numbers(text, "port=htons(").first().copied()?;
    if let Some(ip) = quoted_after(text, "inet_addr(") {
        return Some(format!("{ip}:{port}"));
    }
    let ip = quoted_after(text, "inet_pton(AF_INET6, ").unwrap_or_else(|| "?".into());
    Some(format!("[{ip}]:{port}"))
}

/// A `struct timeval` strace showed as its 16 bytes (`"\n\0\0...`): `10 s`, `0.1 s`
/// (`0 s` is no timeout).
fn timeval(text: &str) -> Option<String> {
    let bytes = unescape(text.strip_prefix('"')?.strip_suffix('"')?)?;
    if bytes.len() != 16 {
        return None;
    }
    let seconds = i64::from_le_bytes(bytes[..8].try_into().ok()?);
    let micros = i64::from_le_bytes(bytes[8..].try_into().ok()?);
    let value = seconds as f64 + micros as f64 / 1e6;
    Some(format!("{} s", (value * 1000.0).round() / 1000.0))
}

/// The bytes of a string as strace escapes them (`\n`, `\t`, `\"`, `\\`, `\0` to `\377`).
fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buffer = [0; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            continue;
        }
        let byte = match chars.next()? {
            'n' => b'\n',
            't' => b'\t',
            'r' => b'\r',
            'v' => 0x0b,
            'f' => 0x0c,
            '"' => b'"',
            '\\' => b'\\',
            digit @ '0'..='7' => {
                let mut value = digit.to_digit(8)?;
                for _ in 0..2 {
                    match chars.peek().and_then(|d| d.to_digit(8)) {
                        Some(next) => {
                            value = value * 8 + next;
                            chars.next();
                        }
                        None => break,
                    }
                }
                u8::try_from(value).ok()?
            }
            _ => return None,
        };
        bytes.push(byte);
    }
    Some(bytes)
}

/// The first string in `text` with its quotes (and strace's `...` if it was cut).
fn first_string(text: &str) -> Option<String> {
    let start = text.find('"')?;
    let mut escaped = false;
    for (at, c) in text[start + 1..].char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => {
                let end = start + 1 + at + 1;
                let more = if text[end..].starts_with("...") {
                    "..."
                } else {
                    ""
                };
                return Some(format!("{}{more}", &text[start..end]));
            }
            _ => {}
        }
    }
    None
}

fn quoted_after(text: &str, key: &str) -> Option<String> {
    let rest = &text[text.find(key)? + key.len()..];
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// The port of the address in `text`.
fn port(text: &str) -> Option<u16> {
    field_numbers(text, "port=htons(")
        .first()
        .and_then(|p| u16::try_from(*p).ok())
}

/// A string argument shortened: `"hello\n"` stays, a long one is cut.
fn short_string(text: &str) -> String {
    const MOST: usize = 14;
    let inner = text.trim_end_matches("...");
    if inner.chars().count() <= MOST + 2 {
        return text.to_string();
    }
    let cut: String = inner.chars().take(MOST).collect();
    format!("{cut}\"…")
}

/// The call as a short line: the arguments that teach (fd, address, bytes, flags),
/// then the result or the error.
pub fn describe(call: &Call) -> String {
    let arg = |i: usize| call.args.get(i).map(String::as_str).unwrap_or("");
    let flags = |text: &str| {
        text.split('|')
            .filter(|f| *f != "SOCK_CLOEXEC")
            .collect::<Vec<_>>()
            .join("|")
    };
    let result = match (&call.errno, call.value) {
        (Some(errno), None) => format!("? {errno}"),
        (Some(errno), Some(value)) => format!("{value} {errno}"),
        (None, Some(value)) => value.to_string(),
        (None, None) => "?".into(),
    };
    let ok = call.errno.is_none() && call.value.is_some_and(|v| v >= 0);
    let args = match call.name.as_str() {
        "socket" => format!("{}, {}", arg(0), flags(arg(1))),
        "bind" | "connect" => format!("{}, {}", arg(0), address(arg(1)).unwrap_or_default()),
        "accept" | "accept4" => {
            let mut text = arg(0).to_string();
            if call.args.len() > 3 && arg(3).contains("NONBLOCK") {
                text.push_str(", NONBLOCK");
            }
            text
        }
        "getsockname" | "getpeername" => arg(0).to_string(),
        "setsockopt" | "getsockopt" => {
            let value = match timeval(arg(3)) {
                Some(seconds) if arg(2).contains("TIMEO") => seconds,
                _ => short_string(arg(3).trim_matches(['[', ']'])),
            };
            format!("{}, {}, {value}", arg(0), arg(2).trim_end_matches("_OLD"))
        }
        "recvfrom" | "recvmsg" | "read" | "readv" => format!("{}, {}", arg(0), arg(2)),
        "sendto" | "write" => format!("{}, {}", arg(0), short_string(arg(1))),
        "sendmsg" | "writev" => match first_string(arg(1)) {
            Some(bytes) => format!("{}, {}", arg(0), short_string(&bytes)),
            None => arg(0).to_string(),
        },
        "socketpair" => format!("{}, {}", arg(0), flags(arg(1))),
        "poll" | "ppoll" => {
            let fds: Vec<String> = poll_fds(call).iter().map(i32::to_string).collect();
            format!("[{}], {}", fds.join(" "), arg(2))
        }
        "select" | "pselect6" => format!("{}, {}", arg(0), arg(1)),
        "epoll_ctl" => format!(
            "{}, {}, {}",
            arg(0),
            arg(1).trim_start_matches("EPOLL_CTL_"),
            arg(2)
        ),
        "epoll_wait" | "epoll_pwait" | "epoll_pwait2" => format!("{}, {}", arg(0), arg(3)),
        _ => call
            .args
            .iter()
            .take(3)
            .map(|a| short_string(a))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut text = format!("{}({args}) = {result}", call.name);
    // What came back, where it teaches.
    match call.name.as_str() {
        "accept" | "accept4" if ok => {
            if let Some(peer) = address(arg(1)) {
                text.push_str(&format!(" from {peer}"));
            }
        }
        "getsockname" | "getpeername" if ok => {
            if let Some(addr) = address(arg(1)) {
                text.push_str(&format!(" {addr}"));
            }
        }
        "recvfrom" | "read" if ok && call.value != Some(0) => {
            text.push_str(&format!(" {}", short_string(arg(1))));
        }
        // A datagram socket's recvfrom names the sender; 0 bytes is then an empty datagram.
        "recvfrom" if call.value == Some(0) && arg(4) != "NULL" => {
            text.push_str(" (an empty datagram)")
        }
        "recvfrom" | "read" if call.value == Some(0) => text.push_str(" (end of stream)"),
        "recvmsg" | "readv" if ok && call.value != Some(0) => {
            if let Some(bytes) = first_string(arg(1)) {
                text.push_str(&format!(" {}", short_string(&bytes)));
            }
        }
        "socketpair" if ok => {
            text.push_str(&format!(" {}", arg(3)));
        }
        "poll" | "ppoll" | "select" | "pselect6" if ok => {
            let ready: Vec<String> = ready_fds(call).iter().map(i32::to_string).collect();
            if !ready.is_empty() {
                text.push_str(&format!(" ready [{}]", ready.join(" ")));
            } else if call.value == Some(0) {
                text.push_str(" (timeout)");
            }
        }
        _ => {}
    }
    text
}

/// Builds the diagram from the server's and the client's records.
pub fn diagram(server: &[Record], client: &[Record]) -> Diagram {
    let mut lifelines: Vec<Lifeline> = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    for (side, records) in [("server", server), ("client", client)] {
        let calls = socket_calls(records);
        let processes = new_processes(records);
        let mut pids: Vec<u32> = Vec::new();
        for call in &calls {
            if !pids.contains(&call.pid) {
                pids.push(call.pid);
            }
        }
        // The first thread of a program is the one that made its first socket call.
        let (mut threads, mut children) = (1, 0);
        for (n, pid) in pids.iter().enumerate() {
            let label = if n == 0 {
                side.to_string()
            } else if processes.contains(pid) {
                children += 1;
                format!("{side} child {children}")
            } else {
                threads += 1;
                format!("{side} thread {threads}")
            };
            lifelines.push(Lifeline {
                side,
                pid: *pid,
                label,
                child: processes.contains(pid),
            });
        }
        for call in calls {
            let lifeline = lifelines
                .iter()
                .position(|l| l.side == side && l.pid == call.pid)
                .unwrap_or(0);
            steps.push(Step {
                lifeline,
                text: describe(&call),
                blocked: call.seconds.unwrap_or(0.0) >= BLOCKING,
                call,
            });
        }
    }
    steps.sort_by(|a, b| a.call.start.total_cmp(&b.call.start));
    let origin = steps.first().map_or(0.0, |s| s.call.start);
    let arrows = arrows(&lifelines, &steps);
    // A call that began before the call that completed it waited for it, however
    // short the wait: draw it as a wait.
    for arrow in &arrows {
        if steps[arrow.to].call.start < steps[arrow.from].call.start {
            steps[arrow.to].blocked = true;
        }
    }
    Diagram {
        lifelines,
        steps,
        arrows,
        origin,
        cut: 0,
    }
}

/// One end of a TCP connection as the traces show it.
#[derive(Debug)]
struct End {
    side: &'static str,
    pid_group: Vec<u32>,
    fd: i32,
    /// The step that made it (connect, accept).
    made_by: usize,
    /// The other end's port, where the trace shows it (accept's peer address).
    peer_port: Option<u16>,
    /// This end's own port (getsockname), where the trace shows it.
    own_port: Option<u16>,
}

/// Arrows: each client connect to the server accept that took that connection (by
/// ports where the trace shows them, else in order), and each write to the first read
/// on the other end that returned data after it.
fn arrows(lifelines: &[Lifeline], steps: &[Step]) -> Vec<Arrow> {
    let side_of = |step: &Step| lifelines[step.lifeline].side;
    // The ends made by connect (client) and accept (server), with ports seen later.
    let mut ends: Vec<End> = Vec::new();
    // Datagram sockets (socket(.., SOCK_DGRAM, ..)): no connection to pair, only sends.
    let mut datagram: Vec<End> = Vec::new();
    for (at, step) in steps.iter().enumerate() {
        let call = &step.call;
        let ok = call.errno.is_none() || call.errno.as_deref() == Some("EINPROGRESS");
        let side = side_of(step);
        let fd = call.fd();
        match call.name.as_str() {
            "socket"
                if call.value.is_some_and(|v| v >= 0)
                    && call.args.get(1).is_some_and(|a| a.contains("SOCK_DGRAM")) =>
            {
                datagram.push(End {
                    side,
                    pid_group: pids_of(lifelines, side),
                    fd: call.value.unwrap_or(-1) as i32,
                    made_by: at,
                    peer_port: None,
                    own_port: None,
                })
            }
            "connect" if datagram.iter().any(|e| e.side == side && Some(e.fd) == fd) => {}
            "connect"
                if ok
                    && call
                        .args
                        .get(1)
                        .is_some_and(|a| a.contains("port=") || a.contains("sun_path=")) =>
            {
                ends.push(End {
                    side,
                    pid_group: pids_of(lifelines, side),
                    fd: call.fd().unwrap_or(-1),
                    made_by: at,
                    peer_port: call.args.get(1).and_then(|a| port(a)),
                    own_port: None,
                })
            }
            "accept" | "accept4" if ok && call.value.is_some_and(|v| v >= 0) => ends.push(End {
                side,
                pid_group: pids_of(lifelines, side),
                fd: call.value.unwrap_or(-1) as i32,
                made_by: at,
                peer_port: call.args.get(1).and_then(|a| port(a)),
                own_port: None,
            }),
            "getsockname" if ok => {
                if let Some(end) = ends
                    .iter_mut()
                    .rev()
                    .find(|e| e.side == side && Some(e.fd) == fd)
                {
                    end.own_port = call.args.get(1).and_then(|a| port(a));
                }
            }
            _ => {}
        }
    }
    // Pair the ends: a server end whose peer port is a client end's own port; the
    // rest in order of time.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let clients: Vec<usize> = (0..ends.len())
        .filter(|&i| ends[i].side == "client")
        .collect();
    let servers: Vec<usize> = (0..ends.len())
        .filter(|&i| ends[i].side == "server")
        .collect();
    let mut taken: HashSet<usize> = HashSet::new();
    for &c in &clients {
        if let Some(own) = ends[c].own_port {
            if let Some(&s) = servers
                .iter()
                .find(|&&s| !taken.contains(&s) && ends[s].peer_port == Some(own))
            {
                taken.insert(s);
                pairs.push((c, s));
            }
        }
    }
    let mut free_servers = servers.iter().filter(|s| !taken.contains(s));
    for &c in &clients {
        if pairs.iter().any(|(pc, _)| *pc == c) {
            continue;
        }
        if let Some(&s) = free_servers.next() {
            pairs.push((c, s));
        }
    }
    let mut arrows = Vec::new();
    for (c, s) in pairs {
        arrows.push(Arrow {
            from: ends[c].made_by,
            to: ends[s].made_by,
        });
        arrows.extend(data_arrows(steps, lifelines, &ends[c], &ends[s], 1));
        arrows.extend(data_arrows(steps, lifelines, &ends[s], &ends[c], 1));
    }
    // Each client datagram socket with each server one (a lesson has one of each);
    // an empty datagram counts.
    for client in datagram.iter().filter(|e| e.side == "client") {
        for server in datagram.iter().filter(|e| e.side == "server") {
            arrows.extend(data_arrows(steps, lifelines, client, server, 0));
            arrows.extend(data_arrows(steps, lifelines, server, client, 0));
        }
    }
    arrows.sort_by_key(|a| (a.from, a.to));
    arrows.dedup();
    arrows
}

fn pids_of(lifelines: &[Lifeline], side: &str) -> Vec<u32> {
    lifelines
        .iter()
        .filter(|l| l.side == side)
        .map(|l| l.pid)
        .collect()
}

const WRITES: &[&str] = &["write", "writev", "send", "sendto", "sendmsg"];
const READS: &[&str] = &["read", "readv", "recv", "recvfrom", "recvmsg"];

/// The steps on `end`'s descriptor from when it was made until it was closed.
fn steps_on(steps: &[Step], lifelines: &[Lifeline], end: &End) -> Vec<usize> {
    let mut on = Vec::new();
    for (at, step) in steps.iter().enumerate().skip(end.made_by + 1) {
        let lifeline = &lifelines[step.lifeline];
        if lifeline.side != end.side || !end.pid_group.contains(&lifeline.pid) {
            continue;
        }
        if step.call.fd() != Some(end.fd) {
            continue;
        }
        // After a fork the parent closes its copy while the child goes on with its
        // own: a close ends the descriptor only where no process was forked.
        let forked = lifelines.iter().any(|l| l.side == end.side && l.child);
        if step.call.name == "close" && !forked {
            break;
        }
        on.push(at);
    }
    on
}

/// An arrow from each write on `writer` to the read on `reader` that got its first
/// byte (`least` 1, a stream), or to the first read that ended after the write began
/// (`least` 0, datagrams, where an empty one counts).
fn data_arrows(
    steps: &[Step],
    lifelines: &[Lifeline],
    writer: &End,
    reader: &End,
    least: i64,
) -> Vec<Arrow> {
    let reads: Vec<usize> = steps_on(steps, lifelines, reader)
        .into_iter()
        .filter(|&at| {
            let call = &steps[at].call;
            // A MSG_PEEK read leaves the bytes queued: the next read gets them again,
            // so it neither consumes bytes nor is where a write's bytes went.
            READS.contains(&call.name.as_str())
                && call.value.is_some_and(|v| v >= least)
                && !call.args.iter().any(|arg| arg.contains("MSG_PEEK"))
        })
        .collect();
    let mut arrows = Vec::new();
    if least > 0 {
        // A stream keeps the bytes in order: the write whose first byte is the n-th
        // byte sent arrives in the read that returned the n-th byte (several writes
        // can land in one read, one write can span several).
        let mut read_up_to = Vec::new();
        let mut received = 0;
        for &read in &reads {
            received += steps[read].call.value.unwrap_or(0);
            read_up_to.push((received, read));
        }
        let mut sent = 0;
        for at in steps_on(steps, lifelines, writer) {
            let call = &steps[at].call;
            if !WRITES.contains(&call.name.as_str()) || call.value.is_none_or(|v| v < 1) {
                continue;
            }
            let first = sent;
            sent += call.value.unwrap_or(0);
            if let Some(&(_, read)) = read_up_to.iter().find(|(up_to, _)| *up_to > first) {
                arrows.push(Arrow { from: at, to: read });
            }
        }
        return arrows;
    }
    // Datagrams: each goes to the first read that ended after it was sent.
    let mut next_read = 0;
    for at in steps_on(steps, lifelines, writer) {
        let call = &steps[at].call;
        if !WRITES.contains(&call.name.as_str()) || call.value.is_none_or(|v| v < least) {
            continue;
        }
        while next_read < reads.len() && steps[reads[next_read]].call.end() < call.start {
            next_read += 1;
        }
        if let Some(&read) = reads.get(next_read) {
            arrows.push(Arrow { from: at, to: read });
        }
    }
    arrows
}

impl Diagram {
    /// Keeps the first `most` steps (and the arrows between them); the rest counted.
    pub fn cut_to(&mut self, most: usize) {
        if self.steps.len() > most {
            self.cut += self.steps.len() - most;
            self.steps.truncate(most);
            self.arrows.retain(|a| a.from < most && a.to < most);
        }
    }

    /// For the terminal and the tests: one line per call, in time order.
    ///
    ///   +0.000123 s  server           accept4(3) = 5 from 127.0.0.1:55576  [waited 1.005 s]  <- client connect
    pub fn text(&self) -> String {
        let width = self
            .lifelines
            .iter()
            .map(|l| l.label.len())
            .max()
            .unwrap_or(6);
        let mut text = String::new();
        for (at, step) in self.steps.iter().enumerate() {
            let lifeline = &self.lifelines[step.lifeline];
            let _ = write!(
                text,
                "{:>+10.6} s  {:width$}  {}",
                step.call.start - self.origin,
                lifeline.label,
                step.text
            );
            if step.blocked {
                let _ = write!(text, "  [waited {}]", seconds(step.call.seconds));
            }
            for arrow in self.arrows.iter().filter(|a| a.to == at) {
                let from = &self.steps[arrow.from];
                let _ = write!(
                    text,
                    "  <- {} {}",
                    self.lifelines[from.lifeline].label, from.call.name
                );
            }
            text.push('\n');
        }
        if self.cut > 0 {
            let _ = writeln!(text, "... {} more calls not shown", self.cut);
        }
        text
    }
}

fn seconds(value: Option<f64>) -> String {
    match value {
        Some(s) if s >= 1.0 => format!("{s:.2} s"),
        Some(s) => format!("{:.1} ms", s * 1000.0),
        None => "?".into(),
    }
}

/// Escapes text for XML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// Cuts `text` to `most` characters (with `…`).
fn fit(text: &str, most: usize) -> String {
    if text.chars().count() <= most {
        text.to_string()
    } else {
        let cut: String = text.chars().take(most.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

impl Diagram {
    /// The diagram as an SVG picture: `title` on top, lifelines across, time down
    /// (each call a row; a call that waited spans the rows of what happened meanwhile).
    pub fn svg(&self, title: &str, note: &str) -> String {
        const ROW: f64 = 18.0;
        const TOP: f64 = 64.0;
        const LEFT: f64 = 70.0;
        const CHAR: f64 = 6.0;
        // Lifelines drawn: those with calls, at most MOST_LIFELINES.
        // The server's threads first (the lesson is about them), at least two of the
        // client's, each side in the order its threads first appear.
        let mut busy: Vec<usize> = Vec::new();
        for step in &self.steps {
            if !busy.contains(&step.lifeline) {
                busy.push(step.lifeline);
            }
        }
        let of_side = |side: &str| -> Vec<usize> {
            busy.iter()
                .copied()
                .filter(|&l| self.lifelines[l].side == side)
                .collect()
        };
        let (servers, clients) = (of_side("server"), of_side("client"));
        let client_room = clients
            .len()
            .min(2)
            .max(MOST_LIFELINES.saturating_sub(servers.len()));
        let server_room = MOST_LIFELINES - client_room.min(MOST_LIFELINES);
        let mut shown: Vec<usize> = servers.into_iter().take(server_room).collect();
        shown.extend(clients.into_iter().take(MOST_LIFELINES - shown.len()));
        let hidden_lifelines = self
            .steps
            .iter()
            .map(|s| s.lifeline)
            .collect::<HashSet<_>>()
            .len()
            - shown.len();
        let column = (1040.0 / shown.len().max(1) as f64).clamp(150.0, 260.0);
        let width = LEFT + column * shown.len() as f64 + 10.0;
        let x_of: HashMap<usize, f64> = shown
            .iter()
            .enumerate()
            .map(|(n, &l)| (l, LEFT + column * n as f64 + column / 2.0))
            .collect();
        // Rows: each call's start, and the end of each that waited, in time order.
        let mut moments: Vec<(f64, usize, bool)> = Vec::new();
        for (at, step) in self.steps.iter().enumerate() {
            if !x_of.contains_key(&step.lifeline) {
                continue;
            }
            moments.push((step.call.start, at, false));
            if step.blocked {
                moments.push((step.call.end(), at, true));
            }
        }
        moments.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut start_row: HashMap<usize, usize> = HashMap::new();
        let mut end_row: HashMap<usize, usize> = HashMap::new();
        for (row, (_, at, is_end)) in moments.iter().enumerate() {
            if *is_end {
                end_row.insert(*at, row);
            } else {
                start_row.insert(*at, row);
            }
        }
        let rows = moments.len();
        let height = TOP + ROW * (rows as f64 + 1.0) + 40.0;
        let y = |row: usize| TOP + ROW * row as f64 + 4.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
             viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"monospace\" font-size=\"10\">"
        );
        svg.push_str(
            "<defs><marker id=\"head\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
             markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
             <path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#c0392b\"/></marker></defs>\n",
        );
        let _ = writeln!(
            svg,
            "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n\
             <text x=\"8\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>\n\
             <text x=\"8\" y=\"30\" fill=\"#555555\">{}</text>",
            escape(title),
            escape(note)
        );
        // The pid where it fits (it is the one the server's log and ps show).
        let room = ((column - 16.0) / CHAR) as usize;
        let header = |lifeline: &Lifeline, room: usize| {
            let with_pid = format!("{} (pid {})", lifeline.label, lifeline.pid);
            if with_pid.chars().count() <= room {
                with_pid
            } else {
                lifeline.label.clone()
            }
        };
        for &l in &shown {
            let x = x_of[&l];
            let lifeline = &self.lifelines[l];
            let fill = if lifeline.side == "server" {
                "#dbe9f6"
            } else {
                "#f6e7d2"
            };
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"38\" width=\"{:.1}\" height=\"18\" rx=\"3\" fill=\"{fill}\" stroke=\"#333333\"/>\n\
                 <text x=\"{x:.1}\" y=\"51\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\n\
                 <line x1=\"{x:.1}\" y1=\"56\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#999999\" stroke-dasharray=\"4 3\"/>",
                x - column / 2.0 + 6.0,
                column - 12.0,
                escape(&fit(&header(lifeline, room), room)),
                height - 30.0
            );
        }
        let chars = ((column - 10.0) / CHAR) as usize;
        for (at, step) in self.steps.iter().enumerate() {
            let Some(&x) = x_of.get(&step.lifeline) else {
                continue;
            };
            let top = y(start_row[&at]);
            let bottom = end_row
                .get(&at)
                .map_or(top + ROW - 3.0, |&r| y(r) + ROW - 3.0);
            let failed = step.call.errno.is_some();
            let (fill, stroke) = match (step.blocked, failed) {
                (_, true) => ("#fbe3e1", "#c0392b"),
                (true, false) => ("#fff4c2", "#b7950b"),
                (false, false) => ("#ffffff", "#555555"),
            };
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" stroke=\"{stroke}\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x - column / 2.0 + 3.0,
                column - 6.0,
                bottom - top,
                x - column / 2.0 + 6.0,
                top + 11.0,
                escape(&fit(&step.text, chars))
            );
            if step.blocked {
                let _ = writeln!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#7d6608\">waited {}</text>",
                    x - column / 2.0 + 6.0,
                    bottom - 4.0,
                    seconds(step.call.seconds)
                );
            }
            let _ = writeln!(
                svg,
                "<text x=\"4\" y=\"{:.1}\" fill=\"#777777\">{:+.4}</text>",
                top + 11.0,
                step.call.start - self.origin
            );
        }
        for arrow in &self.arrows {
            let (from, to) = (&self.steps[arrow.from], &self.steps[arrow.to]);
            let (Some(&x1), Some(&x2)) = (x_of.get(&from.lifeline), x_of.get(&to.lifeline)) else {
                continue;
            };
            let y1 = y(start_row[&arrow.from]) + 8.0;
            let y2 = end_row
                .get(&arrow.to)
                .map_or_else(|| y(start_row[&arrow.to]), |&r| y(r))
                + 8.0;
            let toward = if x2 > x1 { 1.0 } else { -1.0 };
            let _ = writeln!(
                svg,
                "<line x1=\"{:.1}\" y1=\"{y1:.1}\" x2=\"{:.1}\" y2=\"{y2:.1}\" stroke=\"#c0392b\" \
                 stroke-width=\"1.2\" marker-end=\"url(#head)\"/>",
                x1 + toward * (column / 2.0 - 3.0),
                x2 - toward * (column / 2.0 - 3.0),
            );
        }
        let mut footer = String::from(
            "time flows down; left: seconds since the first call; yellow: a call that waited; \
             red: an error; arrows: what woke the other side",
        );
        if self.cut > 0 {
            footer = format!("cut: {} more calls not drawn; {footer}", self.cut);
        }
        if hidden_lifelines > 0 {
            footer = format!("{hidden_lifelines} more threads not drawn; {footer}");
        }
        let _ = writeln!(
            svg,
            "<text x=\"8\" y=\"{:.1}\" fill=\"#555555\">{}</text>\n</svg>",
            height - 12.0,
            escape(&fit(&footer, ((width - 16.0) / CHAR) as usize))
        );
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strace::parse::parse;

    const SERVER_01: &str = include_str!("../../tests/traces/01_server.txt");
    const CLIENT_01: &str = include_str!("../../tests/traces/01_client.txt");
    const SERVER_05: &str = include_str!("../../tests/traces/05_server.txt");
    const CLIENT_05: &str = include_str!("../../tests/traces/05_client.txt");

    fn drawn(server: &str, client: &str) -> Diagram {
        diagram(&parse(server).0, &parse(client).0)
    }

    #[test]
    fn a_timeout_option_shows_its_seconds() {
        let call = |value: &str| Call {
            pid: 1,
            start: 0.0,
            seconds: None,
            name: "setsockopt".into(),
            args: vec![
                "3".into(),
                "SOL_SOCKET".into(),
                "SO_RCVTIMEO_OLD".into(),
                value.into(),
                "16".into(),
            ],
            value: Some(0),
            errno: None,
            detail: String::new(),
        };
        assert_eq!(
            describe(&call(r#""\n\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0""#)),
            "setsockopt(3, SO_RCVTIMEO, 10 s) = 0"
        );
        // 0 s and 999,999 µs (0x0f423f, little-endian: `?B\17`).
        assert_eq!(
            describe(&call(r#""\0\0\0\0\0\0\0\0?B\17\0\0\0\0\0""#)),
            "setsockopt(3, SO_RCVTIMEO, 1 s) = 0"
        );
    }

    #[test]
    fn each_write_points_at_the_read_that_got_its_first_byte() {
        let server = "1 1.0 accept4(3, {sa_family=AF_INET, sin_port=htons(5000), sin_addr=inet_addr(\"127.0.0.1\")}, [16], SOCK_CLOEXEC) = 4 <0.5>\n\
                      1 1.6 recvfrom(4, \"abc\", 4096, 0, NULL, NULL) = 3 <0.000010>\n\
                      1 1.7 recvfrom(4, \"d\", 4096, 0, NULL, NULL) = 1 <0.000010>";
        let client = "2 1.1 socket(AF_INET, SOCK_STREAM, IPPROTO_TCP) = 3 <0.000010>\n\
                      2 1.2 connect(3, {sa_family=AF_INET, sin_port=htons(8000), sin_addr=inet_addr(\"127.0.0.1\")}, 16) = 0 <0.000010>\n\
                      2 1.3 sendto(3, \"ab\", 2, MSG_NOSIGNAL, NULL, 0) = 2 <0.000010>\n\
                      2 1.4 sendto(3, \"cd\", 2, MSG_NOSIGNAL, NULL, 0) = 2 <0.000010>\n\
                      2 1.5 sendto(3, \"e\", 1, MSG_NOSIGNAL, NULL, 0) = 1 <0.000010>";
        let diagram = drawn(server, client);
        let at = |text: &str| {
            diagram
                .steps
                .iter()
                .position(|s| s.text.contains(text))
                .unwrap_or_else(|| panic!("no {text} in {}", diagram.text()))
        };
        let (ab, cd, e) = (at("\"ab\""), at("\"cd\""), at("\"e\""));
        let (abc, d) = (at("\"abc\""), at("= 1 \"d\""));
        for arrow in [Arrow { from: ab, to: abc }, Arrow { from: cd, to: abc }] {
            assert!(diagram.arrows.contains(&arrow), "{}", diagram.text());
        }
        // "e" (the 5th byte) was never read: no arrow, rather than a wrong one to "d".
        assert!(
            !diagram
                .arrows
                .iter()
                .any(|a| a.from == e || (a.to == d && a.from != cd)),
            "{}",
            diagram.text()
        );
    }

    #[test]
    fn a_peek_does_not_count_the_bytes_it_leaves_queued() {
        // Lesson 14's server peeks at the ClientHello before reading it.
        let server = "1 1.0 accept4(3, {sa_family=AF_INET, sin_port=htons(5000), sin_addr=inet_addr(\"127.0.0.1\")}, [16], SOCK_CLOEXEC) = 4 <0.5>\n\
                      1 1.6 recvfrom(4, \"abc\", 48, MSG_PEEK, NULL, NULL) = 3 <0.000010>\n\
                      1 1.7 recvfrom(4, \"abc\", 4096, 0, NULL, NULL) = 3 <0.000010>\n\
                      1 1.8 recvfrom(4, \"de\", 4096, 0, NULL, NULL) = 2 <0.000010>";
        let client = "2 1.1 socket(AF_INET, SOCK_STREAM, IPPROTO_TCP) = 3 <0.000010>\n\
                      2 1.2 connect(3, {sa_family=AF_INET, sin_port=htons(8000), sin_addr=inet_addr(\"127.0.0.1\")}, 16) = 0 <0.000010>\n\
                      2 1.3 sendto(3, \"abc\", 3, MSG_NOSIGNAL, NULL, 0) = 3 <0.000010>\n\
                      2 1.65 sendto(3, \"de\", 2, MSG_NOSIGNAL, NULL, 0) = 2 <0.000010>";
        let diagram = drawn(server, client);
        let text = diagram.text();
        let calls: Vec<&Call> = diagram.steps.iter().map(|s| &s.call).collect();
        let at = |start: f64| calls.iter().position(|c| c.start == start).unwrap();
        let arrows: Vec<(usize, usize)> = diagram
            .arrows
            .iter()
            .filter(|a| calls[a.from].name == "sendto")
            .map(|a| (a.from, a.to))
            .collect();
        // "de" went to the read that got "de", not to the read of "abc" (before the
        // fix the peek's 3 bytes were counted twice and "de" pointed back in time).
        assert_eq!(
            arrows,
            vec![(at(1.3), at(1.7)), (at(1.65), at(1.8))],
            "{text}"
        );
    }

    #[test]
    fn a_select_with_a_timeout_is_ready_only_on_its_in_and_out_lists() {
        // The reviewer's real line (strace of Python's select.select([a], [], [], 5)).
        let (records, unread) = parse(
            "9 1.0 pselect6(4, [3], NULL, NULL, {tv_sec=5, tv_nsec=0}, NULL) = 1 (in [3], left {tv_sec=4, tv_nsec=999997236}) <0.000010>",
        );
        assert_eq!(unread, 0);
        let call = records
            .iter()
            .find_map(|r| match r {
                Record::Call(call) => Some(call),
                _ => None,
            })
            .unwrap();
        assert_eq!(ready_fds(call), vec![3], "{}", call.detail);
        assert_eq!(select_ready("(in [3 5], out [4])"), vec![3, 4, 5]);
        assert_eq!(select_ready("(Timeout)"), Vec::<i32>::new());
    }

    #[test]
    fn addresses_are_shortened_for_ipv4_ipv6_and_paths() {
        assert_eq!(
            address(
                r#"{sa_family=AF_INET, sin_port=htons(8009), sin_addr=inet_addr("127.0.0.1")}"#
            )
            .as_deref(),
            Some("127.0.0.1:8009")
        );
        assert_eq!(
            address(r#"{sa_family=AF_INET6, sin6_port=htons(10015), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}"#)
                .as_deref(),
            Some("[::1]:10015")
        );
        assert_eq!(
            address(r#"{sa_family=AF_UNIX, sun_path="/tmp/x.sock"}"#).as_deref(),
            Some("unix:/tmp/x.sock")
        );
    }

    #[test]
    fn lesson_01_keeps_socket_calls_only_and_links_connect_to_accept() {
        let diagram = drawn(SERVER_01, CLIENT_01);
        // The program's own file reads (ELF, /proc/self/maps, the time zone) are gone.
        assert!(
            diagram.steps.iter().all(|s| !s.text.contains("ELF")),
            "{}",
            diagram.text()
        );
        let connect = diagram
            .steps
            .iter()
            .position(|s| s.call.name == "connect")
            .unwrap();
        let accept = diagram
            .steps
            .iter()
            .position(|s| s.call.name == "accept4" && s.call.value.is_some_and(|v| v >= 0))
            .unwrap();
        assert!(
            diagram.arrows.contains(&Arrow {
                from: connect,
                to: accept
            }),
            "{}",
            diagram.text()
        );
        assert!(
            diagram.steps[accept].blocked,
            "accept waited for the client"
        );
        // Each of the client's two sends arrives in one of the server's reads.
        let sends_arriving = diagram
            .arrows
            .iter()
            .filter(|a| diagram.steps[a.from].call.name == "sendto")
            .filter(|a| diagram.lifelines[diagram.steps[a.from].lifeline].side == "client")
            .count();
        assert_eq!(sends_arriving, 2, "{}", diagram.text());
    }

    #[test]
    fn lesson_05_pairs_each_connect_with_the_accept_of_its_port() {
        let diagram = drawn(SERVER_05, CLIENT_05);
        let text = diagram.text();
        // The client's getsockname says each connection's own port; the accept that
        // names that port as its peer is the one its connect completed.
        let mut paired = 0;
        for arrow in &diagram.arrows {
            let (from, to) = (&diagram.steps[arrow.from], &diagram.steps[arrow.to]);
            if from.call.name != "connect" {
                continue;
            }
            let fd = from.call.fd().unwrap();
            let own = diagram
                .steps
                .iter()
                .find(|s| {
                    s.call.name == "getsockname"
                        && s.call.fd() == Some(fd)
                        && diagram.lifelines[s.lifeline].side == "client"
                })
                .and_then(|s| address(&s.call.args[1]))
                .unwrap();
            let peer = address(&to.call.args[1]).unwrap();
            assert_eq!(own, peer, "{text}");
            paired += 1;
        }
        assert_eq!(paired, 3, "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("poll([") && l.contains(" ready [")),
            "{text}"
        );
    }

    #[test]
    fn the_svg_escapes_what_the_programs_sent_and_says_when_it_is_cut() {
        let server = "1 1.0 socket(AF_INET, SOCK_STREAM, IPPROTO_TCP) = 3 <0.000010>\n\
                      1 1.1 accept4(3, {sa_family=AF_INET, sin_port=htons(5), sin_addr=inet_addr(\"127.0.0.1\")}, [16], SOCK_CLOEXEC) = 4 <0.1>\n\
                      1 1.3 recvfrom(4, \"<a href='x'>&\\\"\", 4096, 0, NULL, NULL) = 14 <0.000010>\n\
                      1 1.4 recvfrom(4, \"more\", 4096, 0, NULL, NULL) = 4 <0.000010>";
        let mut diagram = drawn(server, "");
        let svg = diagram.svg("a <title> & more", "note");
        assert!(svg.contains("&lt;a href=&apos;x&apos;&gt;&amp;"), "{svg}");
        assert!(svg.contains("a &lt;title&gt; &amp; more"));
        assert!(!svg.contains("<a href"));
        diagram.cut_to(2);
        let svg = diagram.svg("t", "n");
        assert!(svg.contains("cut: 2 more calls not drawn"), "{svg}");
        assert!(diagram.text().contains("2 more calls not shown"));
    }
}

//! Lesson 13: a chat room on TCP 10013, in UTF-8 lines ending `\n` (a `\r` before
//! it is ignored).
//!
//! On connect the server sends a `* ` line asking for a name; the first line back is
//! the name (1-24 letters of any script, digits, `_`, `-`); an invalid or taken one
//! gets a `* ` line saying why and the question again. Then the newcomer gets
//! `* welcome NAME; here: a, b` (everyone, the newcomer too) and the others
//! `* NAME joined`. A line not starting with `/` goes to everyone else as
//! `<NAME> text`. Commands: `/nick NEW`, `/who` (`* here: a, b`), `/me ACTION`
//! (`* NAME ACTION` to all), `/msg NAME TEXT` (`*FROM* TEXT` to NAME; `* no one named
//! X`), `/quit [REASON]` (the others get `* NAME left (REASON)`; the server closes),
//! `/help`; an unknown one gets `* unknown command /x; try /help`. A line over 4,096
//! bytes gets `* line too long (max 4096 bytes)` and is skipped up to its `\n`.
//! Invalid UTF-8 shows as U+FFFD. A client that does not read is dropped when its
//! queue and socket buffers are full, and the others get `* NAME dropped (not
//! reading)`.
//!
//! The checks give their clients names of their own (`ck` + process id + a number),
//! and skip lines that are not theirs, so they can run on a server with people in it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::{Check, Target, connect, quoted};

pub(crate) static CHAT: &[Check] = &[
    Check {
        name: "chat-asks-name",
        about: "on connect the server sends a `* ` line asking for a name",
        run: asks_name,
    },
    Check {
        name: "chat-join",
        about: "a name gets `* welcome NAME; here: ...` listing everyone; the others get `* NAME joined`",
        run: join,
    },
    Check {
        name: "chat-message",
        about: "a line goes to the others as `<NAME> text`, not back to its sender",
        run: message,
    },
    Check {
        name: "chat-crlf",
        about: "a line ending `\\r\\n` arrives without the `\\r`",
        run: crlf,
    },
    Check {
        name: "chat-bad-names",
        about: "a name with a space, one of 25 letters, and a taken one are refused and asked again",
        run: bad_names,
    },
    Check {
        name: "chat-chinese-name",
        about: "a name in Chinese letters is accepted and shown whole",
        run: chinese_name,
    },
    Check {
        name: "chat-who",
        about: "/who lists everyone: `* here: a, b`",
        run: who,
    },
    Check {
        name: "chat-nick",
        about: "/nick NEW tells everyone `* OLD is now known as NEW`; a taken name is refused",
        run: nick,
    },
    Check {
        name: "chat-me",
        about: "/me waves gives everyone `* NAME waves`",
        run: me,
    },
    Check {
        name: "chat-msg",
        about: "/msg NAME text reaches NAME only as `*FROM* text`; a missing name gets `* no one named X`",
        run: msg,
    },
    Check {
        name: "chat-help",
        about: "/help names every command",
        run: help,
    },
    Check {
        name: "chat-unknown-command",
        about: "/frobnicate gets `* unknown command /frobnicate; try /help`",
        run: unknown_command,
    },
    Check {
        name: "chat-quit",
        about: "/quit REASON: the others get `* NAME left (REASON)`, and the server closes",
        run: quit,
    },
    Check {
        name: "chat-long-line",
        about: "a line of 4,096 bytes passes; one of 5,000 (sent in pieces) gets `* line too long (max 4096 bytes)`, and the connection goes on",
        run: long_line,
    },
    Check {
        name: "chat-invalid-utf8",
        about: "bytes that are not UTF-8 arrive as U+FFFD",
        run: invalid_utf8,
    },
    Check {
        name: "chat-split-character",
        about: "`é` split across two writes, and a line sent a byte at a time, arrive whole",
        run: split_character,
    },
    Check {
        name: "chat-slow-reader-dropped",
        about: "a client that never reads is dropped (`* NAME dropped (not reading)`) while the others chat on",
        run: slow_reader_dropped,
    },
];

/// The most lines a check reads while looking for the one it wants.
const MAX_SKIPPED: usize = 10_000;
/// The longest line a check accepts from the server.
const MAX_REPLY_LINE: usize = 64 * 1024;

/// A name nobody else has: `ck` + the process id + a number.
fn fresh_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    format!(
        "ck{}_{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// One client of the room, reading whole lines.
struct Chatter {
    name: String,
    stream: TcpStream,
    pending: Vec<u8>,
    timeout: Duration,
    /// The last lines read, for messages.
    recent: Vec<String>,
}

impl Chatter {
    /// Connects and reads the server's first line, which must ask for a name.
    fn connect(target: &Target) -> Result<(Chatter, String), String> {
        Chatter::on(connect(target)?, target)
    }

    fn on(stream: TcpStream, target: &Target) -> Result<(Chatter, String), String> {
        let mut chatter = Chatter {
            name: String::new(),
            stream,
            pending: Vec::new(),
            timeout: target.timeout,
            recent: Vec::new(),
        };
        let first = chatter.line("the first line (asking for a name)")?;
        if !first.starts_with("* ") {
            return Err(format!(
                "the first line should start with `* ` (asking for a name), got {first:?}"
            ));
        }
        Ok((chatter, first))
    }

    /// Connects and takes a fresh name.
    fn join(target: &Target) -> Result<Chatter, String> {
        let (mut chatter, _) = Chatter::connect(target)?;
        chatter.take_name(&fresh_name())?;
        Ok(chatter)
    }

    /// Sends `name` and waits for the welcome.
    fn take_name(&mut self, name: &str) -> Result<String, String> {
        self.send(name)?;
        let welcome = format!("* welcome {name}; here: ");
        let line = self.line(&format!("the welcome for {name}"))?;
        if !line.starts_with(&welcome) || !names_in(&line).iter().any(|n| n == name) {
            return Err(format!(
                "sent the name {name:?}, expected `{welcome}...` (listing {name}), got {line:?}"
            ));
        }
        self.name = name.to_string();
        Ok(line)
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        self.send_bytes(format!("{line}\n").as_bytes())
    }

    fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|err| format!("{} sending {}: {err}", self.name, quoted(bytes)))
    }

    /// The next whole line (without `\n`), within the timeout.
    fn line(&mut self, waiting_for: &str) -> Result<String, String> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..end]).into_owned();
                self.recent.push(shortened(&text));
                if self.recent.len() > 5 {
                    self.recent.remove(0);
                }
                return Ok(text);
            }
            if self.pending.len() > MAX_REPLY_LINE {
                return Err(format!(
                    "{}: a line of more than {MAX_REPLY_LINE} bytes came: {}",
                    self.name,
                    quoted(&self.pending)
                ));
            }
            let mut chunk = [0u8; 16 * 1024];
            let failed = |why: String| {
                Err(format!(
                    "{} waiting for {waiting_for}: {why}; last lines: {:?}",
                    if self.name.is_empty() {
                        "a client"
                    } else {
                        &self.name
                    },
                    self.recent
                ))
            };
            if Instant::now() >= deadline {
                return failed("nothing more came before the timeout".into());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return failed("the server closed the connection".into()),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return failed("nothing more came before the timeout".into());
                }
                Err(err) => return failed(format!("read failed: {err}")),
            }
        }
    }

    /// Reads lines until one is `want`; other lines (other people's) are skipped.
    fn wait_for(&mut self, want: &str) -> Result<(), String> {
        self.wait_until(&format!("{:?}", shortened(want)), |line| line == want)
            .map(|_| ())
    }

    /// Reads lines until one satisfies `wanted`, and returns it.
    fn wait_until(
        &mut self,
        what: &str,
        mut wanted: impl FnMut(&str) -> bool,
    ) -> Result<String, String> {
        for _ in 0..MAX_SKIPPED {
            let line = self.line(what)?;
            if wanted(&line) {
                return Ok(line);
            }
        }
        Err(format!(
            "{}: no line {what} in {MAX_SKIPPED} lines",
            self.name
        ))
    }

    /// Sends /who and returns every line before the `* here:` answer, and the answer.
    fn lines_before_who(&mut self) -> Result<(Vec<String>, String), String> {
        self.send("/who")?;
        let mut before = Vec::new();
        for _ in 0..MAX_SKIPPED {
            let line = self.line("the answer to /who (`* here: ...`)")?;
            if line.starts_with("* here: ") {
                return Ok((before, line));
            }
            before.push(line);
        }
        Err(format!("{}: no `* here:` line after /who", self.name))
    }

    /// Waits until the server closes the connection (EOF or reset).
    fn wait_for_close(&mut self, why: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        Err(format!(
            "{}: the server should close the connection {why}",
            self.name
        ))
    }
}

/// A line as a message shows it: at most 100 characters, then how many more.
fn shortened(line: &str) -> String {
    let count = line.chars().count();
    if count <= 100 {
        return line.to_string();
    }
    let start: String = line.chars().take(100).collect();
    format!("{start}... ({} more characters)", count - 100)
}

/// The names in a `* welcome X; here: a, b` or `* here: a, b` line.
fn names_in(line: &str) -> Vec<String> {
    line.split_once("here: ")
        .map(|(_, names)| names.split(", ").map(str::to_string).collect())
        .unwrap_or_default()
}

/// A line that another client must not get: fails if `line` is among `seen`.
fn never_saw(seen: &[String], line: &str, who: &str) -> Result<(), String> {
    match seen.iter().any(|seen| seen == line) {
        true => Err(format!("{who} got {line:?}, which was not meant for them")),
        false => Ok(()),
    }
}

fn asks_name(target: &Target) -> Result<(), String> {
    Chatter::connect(target).map(|_| ())
}

fn join(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let (mut bob, _) = Chatter::connect(target)?;
    let bob_name = fresh_name();
    let welcome = bob.take_name(&bob_name)?;
    if !names_in(&welcome).contains(&ada.name) {
        return Err(format!(
            "{bob_name}'s welcome should list {} too, got {welcome:?}",
            ada.name
        ));
    }
    ada.wait_for(&format!("* {bob_name} joined"))
}

fn message(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let mut bob = Chatter::join(target)?;
    bob.send("hello, room")?;
    let line = format!("<{}> hello, room", bob.name);
    ada.wait_for(&line)?;
    let (seen, _) = bob.lines_before_who()?;
    never_saw(&seen, &line, &bob.name)
}

fn crlf(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let mut bob = Chatter::join(target)?;
    bob.send_bytes(b"from windows\r\n")?;
    ada.wait_for(&format!("<{}> from windows", bob.name))
}

/// After a refused name: a `* ` line saying why, then the first question again.
fn refused(chatter: &mut Chatter, name: &str, question: &str) -> Result<(), String> {
    chatter.send(name)?;
    let why = chatter.line(&format!("the refusal of the name {name:?}"))?;
    if !why.starts_with("* ") || why.starts_with("* welcome") {
        return Err(format!(
            "the name {name:?} should be refused with a `* ` line, got {why:?}"
        ));
    }
    let again = chatter.line(&format!("the question again after {name:?}"))?;
    if again != question {
        return Err(format!(
            "after refusing {name:?} the server should ask again ({question:?}), got {again:?}"
        ));
    }
    Ok(())
}

fn bad_names(target: &Target) -> Result<(), String> {
    let ada = Chatter::join(target)?;
    let (mut newcomer, question) = Chatter::connect(target)?;
    refused(&mut newcomer, "two words", &question)?;
    refused(&mut newcomer, &"x".repeat(25), &question)?;
    refused(&mut newcomer, &ada.name, &question)?;
    newcomer.take_name(&fresh_name()).map(|_| ())
}

fn chinese_name(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let (mut ming, _) = Chatter::connect(target)?;
    let name = format!("小明{}", fresh_name().trim_start_matches("ck"));
    ming.take_name(&name)?;
    ada.wait_for(&format!("* {name} joined"))?;
    ming.send("你好")?;
    ada.wait_for(&format!("<{name}> 你好"))
}

fn who(target: &Target) -> Result<(), String> {
    let ada = Chatter::join(target)?;
    let mut bob = Chatter::join(target)?;
    let (_, here) = bob.lines_before_who()?;
    let names = names_in(&here);
    for name in [&ada.name, &bob.name] {
        if !names.contains(name) {
            return Err(format!("/who should list {name}, got {here:?}"));
        }
    }
    Ok(())
}

fn nick(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let mut bob = Chatter::join(target)?;
    let new = fresh_name();
    bob.send(&format!("/nick {new}"))?;
    let line = format!("* {} is now known as {new}", bob.name);
    ada.wait_for(&line)?;
    bob.wait_for(&line)?;
    bob.name = new.clone();
    ada.send(&format!("/nick {new}"))?;
    let refusal = ada.line("the refusal of a taken name")?;
    if !refusal.starts_with("* ") || refusal.contains("now known as") {
        return Err(format!(
            "/nick to a taken name should be refused with a `* ` line, got {refusal:?}"
        ));
    }
    let (_, here) = ada.lines_before_who()?;
    if !names_in(&here).contains(&new) || names_in(&here).iter().filter(|n| **n == new).count() != 1
    {
        return Err(format!(
            "after /nick, /who should list {new} once, got {here:?}"
        ));
    }
    Ok(())
}

fn me(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let mut bob = Chatter::join(target)?;
    bob.send("/me waves")?;
    let line = format!("* {} waves", bob.name);
    ada.wait_for(&line)?;
    bob.wait_for(&line)
}

fn msg(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let mut bob = Chatter::join(target)?;
    let mut cy = Chatter::join(target)?;
    bob.send(&format!("/msg {} just between us", ada.name))?;
    let line = format!("*{}* just between us", bob.name);
    ada.wait_for(&line)?;
    let (seen, _) = cy.lines_before_who()?;
    never_saw(&seen, &line, &cy.name)?;
    let missing = fresh_name();
    bob.send(&format!("/msg {missing} hello?"))?;
    bob.wait_for(&format!("* no one named {missing}"))
}

fn help(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    ada.send("/help")?;
    let (lines, _) = ada.lines_before_who()?;
    let text = lines.join("\n");
    for command in ["/nick", "/who", "/me", "/msg", "/quit", "/help"] {
        if !lines
            .iter()
            .any(|line| line.starts_with("* ") && line.contains(command))
        {
            return Err(format!("/help should name {command}, got {text:?}"));
        }
    }
    Ok(())
}

fn unknown_command(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    ada.send("/frobnicate now")?;
    ada.wait_for("* unknown command /frobnicate; try /help")
}

fn quit(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let mut bob = Chatter::join(target)?;
    bob.send("/quit gone fishing")?;
    ada.wait_for(&format!("* {} left (gone fishing)", bob.name))?;
    bob.wait_for_close("after /quit")
}

fn long_line(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let mut bob = Chatter::join(target)?;
    let longest = "a".repeat(4096);
    bob.send(&longest)?;
    ada.wait_for(&format!("<{}> {longest}", bob.name))?;
    // 5,000 bytes in three writes, so that no single read holds the whole line.
    let long = "b".repeat(5000);
    bob.send_bytes(&long.as_bytes()[..2000])?;
    bob.send_bytes(&long.as_bytes()[2000..4500])?;
    bob.send_bytes(format!("{}\nstill here\n", &long[4500..]).as_bytes())?;
    bob.wait_for("* line too long (max 4096 bytes)")?;
    let after = format!("<{}> still here", bob.name);
    let got = ada.wait_until(&format!("{:?}", shortened(&after)), |line| {
        line == after || line.contains("bbbb")
    })?;
    if got != after {
        return Err(format!(
            "part of the too-long line reached the room: {}",
            quoted(got.as_bytes())
        ));
    }
    Ok(())
}

fn invalid_utf8(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let mut bob = Chatter::join(target)?;
    bob.send_bytes(b"ok \xff\xfe end\n")?;
    let start = format!("<{}> ok ", bob.name);
    let line = ada.wait_until(&format!("a line starting {start:?}"), |line| {
        line.starts_with(&start)
    })?;
    let rest = &line[start.len()..];
    if !rest.ends_with(" end")
        || !rest
            .trim_end_matches(" end")
            .chars()
            .all(|c| c == '\u{FFFD}')
    {
        return Err(format!(
            "sent \"ok \\xff\\xfe end\", expected U+FFFD for the bad bytes, got {line:?}"
        ));
    }
    Ok(())
}

fn split_character(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let mut bob = Chatter::join(target)?;
    let _ = bob.stream.set_nodelay(true);
    let cafe = "café\n".as_bytes();
    // `é` is two bytes, 0xC3 0xA9: the first write ends between them. The pause
    // makes it likely that the server's first read ends there too.
    bob.send_bytes(&cafe[..4])?;
    std::thread::sleep(Duration::from_millis(50));
    bob.send_bytes(&cafe[4..])?;
    ada.wait_for(&format!("<{}> café", bob.name))?;
    for byte in b"one byte at a time\n" {
        bob.send_bytes(&[*byte])?;
    }
    ada.wait_for(&format!("<{}> one byte at a time", bob.name))
}

fn slow_reader_dropped(target: &Target) -> Result<(), String> {
    let mut ada = Chatter::join(target)?;
    let mut bob = Chatter::join(target)?;
    // The sleeper: a small receive buffer (set before connect, so the window is
    // small from the start), and it never reads after joining.
    let socket = Socket::new(Domain::for_address(target.addr), Type::STREAM, None)
        .map_err(|err| format!("socket: {err}"))?;
    let _ = socket.set_recv_buffer_size(4096);
    socket
        .connect_timeout(&target.addr.into(), target.timeout)
        .map_err(|err| format!("cannot connect to {}: {err}", target.addr))?;
    let stream: TcpStream = socket.into();
    let _ = stream.set_read_timeout(Some(target.timeout));
    let _ = stream.set_write_timeout(Some(target.timeout));
    let (mut sleeper, _) = Chatter::on(stream, target)?;
    sleeper.take_name(&fresh_name())?;
    let dropped = format!("* {} dropped (not reading)", sleeper.name);
    // Bob talks in batches; Ada reads each batch before the next, so that only the
    // sleeper falls behind. At most 16 MiB in all: the sleeper's
    // socket holds a few MiB at most (the send buffer grows to 4 MiB by default).
    let text = "z".repeat(1000);
    for batch in 0..512 {
        let mut lines = String::new();
        for i in 0..32 {
            lines.push_str(&format!("{batch}.{i} {text}\n"));
        }
        bob.send_bytes(lines.as_bytes())?;
        let last = format!("<{}> {batch}.31 {text}", bob.name);
        // The drop may be told among this batch's lines or after them (then it
        // comes among the next batch's).
        let mut was_dropped = false;
        ada.wait_until(&format!("the last line of batch {batch}"), |line| {
            was_dropped |= line == dropped;
            line == last
        })
        .map_err(|why| format!("{why} (did the client that does not read slow the room down?)"))?;
        if was_dropped {
            bob.send("still chatting")?;
            return ada.wait_for(&format!("<{}> still chatting", bob.name));
        }
    }
    Err(format!(
        "{} never read, and was still not dropped after 16 MiB were said in the room",
        sleeper.name
    ))
}

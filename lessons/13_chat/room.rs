//! The room: everyone connected, each with the lines waiting to be sent to them.
//!
//! Nothing here blocks. Sending a line to someone only queues it in their
//! [`Outbox`]; the event loop writes queues out as each socket takes them. A queue
//! is bounded, in lines and in bytes: when someone's queue is full and their socket
//! takes nothing more, they are not reading, and they are dropped, so that one
//! stalled reader costs the others nothing (neither waiting nor memory).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Instant;

use crate::lines::LineReader;
use workbook::log;

// ANCHOR: bounds
/// The longest line a client may send, in bytes (without its line end).
pub const MAX_LINE: usize = 4096;
/// The most lines that may wait for one client...
pub const MAX_QUEUED_LINES: usize = 256;
/// ... and the most bytes. Either bound reached, and the socket full: dropped.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024;
/// The most bytes of names in a welcome or /who line.
pub const MAX_NAMES: usize = 2048;
// ANCHOR_END: bounds

// ANCHOR: outbox
/// The lines waiting to go to one client, oldest first. `lines[0][sent..]` is what
/// the kernel has not taken yet of the oldest.
pub struct Outbox {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    sent: usize,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox {
            lines: VecDeque::new(),
            bytes: 0,
            sent: 0,
        }
    }

    /// Queues `line` and its `\n`, whole or not at all: false when the queue is full.
    pub fn push(&mut self, line: &str) -> bool {
        let size = line.len() + 1;
        if self.lines.len() >= MAX_QUEUED_LINES || self.bytes + size > MAX_QUEUED_BYTES {
            return false;
        }
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.lines.push_back(bytes);
        self.bytes += size;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// write(2) on the non-blocking socket until the queue is empty or the kernel's
    /// send buffer is full (`WouldBlock`: the rest waits for POLLOUT). A partial
    /// write leaves the rest of its line first in the queue.
    pub fn write_to(&mut self, mut peer: impl Write) -> io::Result<()> {
        while let Some(line) = self.lines.front() {
            match peer.write(&line[self.sent..]) {
                Ok(written) => {
                    self.sent += written;
                    if self.sent == line.len() {
                        self.bytes -= line.len();
                        self.sent = 0;
                        self.lines.pop_front();
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}
// ANCHOR_END: outbox

/// Where a connection is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    /// Read from, and sent lines.
    Open,
    /// Said /quit, or closed its side: no more reading, no new lines; what is
    /// queued still goes out, until the queue is empty or the deadline passes.
    Leaving(Instant),
    /// To be closed at the end of this round, for this reason (for the log).
    Closed(&'static str),
}

/// Why a client was closed because of its queue (the log and the room say it).
pub const NOT_READING: &str = "dropped (not reading)";

// ANCHOR: member
/// One connection.
pub struct Member {
    pub stream: TcpStream,
    /// Both ends, for the log.
    pub peers: String,
    /// `None` until the client has chosen a valid name that nobody has.
    pub name: Option<String>,
    pub input: LineReader,
    pub outbox: Outbox,
    pub state: State,
}
// ANCHOR_END: member

/// Everyone, in the order they arrived, and what the room needs to know.
pub struct Room {
    pub members: Vec<Member>,
    /// `--bot`: the menu bot answers each client instead of the room.
    pub bot: bool,
    pub quiet: bool,
    /// Clients accepted since the start, for the last line.
    pub served: usize,
    /// `* NAME left` and `* NAME dropped` lines for the rest of the room, not sent yet,
    /// with whose they are: until it is sent, that member's name is still taken.
    announcements: Vec<(usize, String)>,
}

impl Room {
    pub fn new(bot: bool, quiet: bool) -> Room {
        Room {
            members: Vec::new(),
            bot,
            quiet,
            served: 0,
            announcements: Vec::new(),
        }
    }

    pub fn add(&mut self, stream: TcpStream, peers: String) -> usize {
        self.served += 1;
        self.members.push(Member {
            stream,
            peers,
            name: None,
            input: LineReader::new(MAX_LINE),
            outbox: Outbox::new(),
            state: State::Open,
        });
        self.members.len() - 1
    }

    // ANCHOR: send
    /// Queues `line` for member `to`. Their queue full: first it goes to their socket,
    /// as much as the kernel takes now (one read of a paste can make hundreds of lines
    /// in one round, faster than any reader). Still full: their socket's buffers are
    /// full too, they are not reading, so they are dropped (closed at the end of the
    /// round), and the others will be told.
    pub fn send(&mut self, to: usize, line: &str) {
        let member = &mut self.members[to];
        if member.state != State::Open || member.outbox.push(line) {
            return;
        }
        if let Err(err) = member.outbox.write_to(&member.stream) {
            // EPIPE or ECONNRESET: gone.
            if !self.quiet {
                log!("{}: {err}", member.peers);
            }
            return self.close(to, "connection lost");
        }
        if !member.outbox.push(line) {
            self.close(to, NOT_READING);
        }
    }

    /// Queues `line` for everyone in the room (named and open) but `except`.
    pub fn broadcast(&mut self, except: Option<usize>, line: &str) {
        for to in 0..self.members.len() {
            if Some(to) != except && self.members[to].name.is_some() {
                self.send(to, line);
            }
        }
    }
    // ANCHOR_END: send

    /// Marks member `who` to be closed at the end of the round, for `why`. If they
    /// were in the room, the others will be told (by [`announce`](Self::announce)):
    /// not now, in the middle of a broadcast, but once it is done.
    pub fn close(&mut self, who: usize, why: &'static str) {
        let member = &mut self.members[who];
        let was_open = member.state == State::Open;
        if matches!(member.state, State::Closed(_)) {
            return;
        }
        member.state = State::Closed(why);
        if let (true, Some(name)) = (was_open, &member.name) {
            let line = if why == NOT_READING {
                format!("* {name} {NOT_READING}")
            } else {
                format!("* {name} left")
            };
            self.announcements.push((who, line));
        }
    }

    /// Tells everyone who was closed since the last call; false if nobody was.
    /// (Telling them may fill another queue and drop another member: the caller
    /// calls again until nobody is.)
    pub fn announce(&mut self) -> bool {
        let announcements = std::mem::take(&mut self.announcements);
        for (_, line) in &announcements {
            self.broadcast(None, line);
        }
        !announcements.is_empty()
    }

    /// The member whose name is `name`, ignoring case (`Ada` and `ada` are one name).
    /// A name is someone's until the room has been told they left: while they are
    /// open, or closed this round and not announced yet (else a newcomer could take
    /// `ada`, and then everyone would read `* ada left`).
    pub fn find(&self, name: &str) -> Option<usize> {
        let wanted = name.to_lowercase();
        (0..self.members.len()).find(|&who| {
            let member = &self.members[who];
            let holds_name = member.state == State::Open
                || self.announcements.iter().any(|(closed, _)| *closed == who);
            holds_name
                && member
                    .name
                    .as_ref()
                    .is_some_and(|name| name.to_lowercase() == wanted)
        })
    }

    /// Member `who`'s name (empty before they have one).
    pub fn name(&self, who: usize) -> &str {
        self.members[who].name.as_deref().unwrap_or("")
    }

    /// Everyone's names, in the order they came: `ada, bob, 小明`; as many as fit in
    /// [`MAX_NAMES`] bytes, then `, and 12 more` (a line must fit in a queue, and a
    /// room of thousands is not read name by name).
    pub fn names(&self) -> String {
        let names: Vec<&str> = self
            .members
            .iter()
            .filter(|member| member.state == State::Open)
            .filter_map(|member| member.name.as_deref())
            .collect();
        let mut list = String::new();
        for (shown, name) in names.iter().enumerate() {
            if list.len() + 2 + name.len() > MAX_NAMES {
                list.push_str(&format!(", and {} more", names.len() - shown));
                break;
            }
            if shown > 0 {
                list.push_str(", ");
            }
            list.push_str(name);
        }
        list
    }
}

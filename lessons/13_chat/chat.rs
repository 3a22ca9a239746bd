//! What the room does with each line a client sends: the first is their name; then
//! a line starting with `/` is a command (commands.rs), any other goes to everyone
//! else as `<NAME> text`.

use std::time::{Duration, Instant};

use crate::commands;
use crate::lines::Line;
use crate::room::{MAX_LINE, Room, State};
use workbook::log;

/// The first line a client gets, and again after a name that cannot be had.
pub const ASK_NAME: &str = "* what is your name? (1-24 letters, digits, _ or -)";
/// The most characters (not bytes: `小明` is two) a name may have.
pub const MAX_NAME: usize = 24;
/// How long a leaving client's last lines may take to go out before it is closed.
pub const LEAVE_WAIT: Duration = Duration::from_secs(2);

/// A client connected: ask their name.
pub fn greet(room: &mut Room, who: usize) {
    room.send(who, ASK_NAME);
}

// ANCHOR: on_line
/// One line from member `who`.
pub fn on_line(room: &mut Room, who: usize, line: Line) {
    let text = match line {
        Line::Text(text) => text,
        Line::TooLong => {
            return room.send(who, &format!("* line too long (max {MAX_LINE} bytes)"));
        }
    };
    if room.members[who].name.is_none() {
        return choose_name(room, who, &text);
    }
    if let Some(command) = text.strip_prefix('/') {
        return commands::run(room, who, command);
    }
    if text.is_empty() {
        return;
    }
    let line = format!("<{}> {text}", room.name(who));
    if !room.quiet {
        log!("{line}");
    }
    room.broadcast(Some(who), &line);
}
// ANCHOR_END: on_line

// ANCHOR: names
/// Why `name` cannot be a name, if it cannot: 1 to 24 characters, each a letter of
/// any script (`char::is_alphabetic`: `é`, `小`, `ж`), an ASCII digit, `_` or `-`.
pub fn invalid_name(name: &str) -> Option<String> {
    let count = name.chars().count();
    if count == 0 {
        return Some("* a name needs at least one character".into());
    }
    if count > MAX_NAME {
        return Some(format!(
            "* a name has at most {MAX_NAME} characters, not {count}"
        ));
    }
    let allowed = |ch: char| ch.is_alphabetic() || ch.is_ascii_digit() || ch == '_' || ch == '-';
    name.chars()
        .find(|&ch| !allowed(ch))
        .map(|ch| format!("* {ch:?} cannot be in a name: only letters, digits, _ and -"))
}

/// The line a client sends before they have a name: it is their name, if it can be.
fn choose_name(room: &mut Room, who: usize, name: &str) {
    if let Some(why) = invalid_name(name) {
        room.send(who, &why);
        return room.send(who, ASK_NAME);
    }
    if room.find(name).is_some() {
        room.send(who, &format!("* the name {name} is taken"));
        return room.send(who, ASK_NAME);
    }
    room.members[who].name = Some(name.to_string());
    if !room.quiet {
        log!("{} is {name}", room.members[who].peers);
    }
    room.send(who, &format!("* welcome {name}; here: {}", room.names()));
    room.broadcast(Some(who), &format!("* {name} joined"));
}
// ANCHOR_END: names

/// Member `who` is done (said /quit, or closed their side of the connection): the
/// others are told, and what is queued for them still goes out before the close.
pub fn leave(room: &mut Room, who: usize, reason: Option<&str>) {
    if room.members[who].state != State::Open {
        return;
    }
    if let Some(name) = room.members[who].name.clone() {
        let line = match reason {
            Some(reason) => format!("* {name} left ({reason})"),
            None => format!("* {name} left"),
        };
        if !room.quiet {
            log!("{line}");
        }
        room.broadcast(Some(who), &line);
    }
    room.members[who].state = State::Leaving(Instant::now() + LEAVE_WAIT);
}

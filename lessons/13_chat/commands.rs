//! The chat's commands, looked up by name in a table.
//!
//! Python can look a method up by its name at run time: `getattr(self, "cmd_" +
//! name)`. Rust keeps no names of functions in the program it builds, so there is
//! nothing to look up; the table below is that lookup, written out. Each entry pairs
//! a name with a function pointer (`fn(&mut Room, usize, &str)`) and its help, and
//! `/help` is generated from it, so a command cannot exist without its help line.

use crate::chat::{self, invalid_name};
use crate::room::Room;
use workbook::log;

// ANCHOR: table
/// One command: `/name ARGS`.
pub struct Command {
    pub name: &'static str,
    /// How to call it, for /help: `/msg NAME TEXT`.
    pub usage: &'static str,
    pub help: &'static str,
    /// The handler: the room, who sent the command, and the rest of the line.
    pub run: fn(&mut Room, usize, &str),
}

pub static COMMANDS: &[Command] = &[
    Command {
        name: "nick",
        usage: "/nick NEW",
        help: "change your name",
        run: nick,
    },
    Command {
        name: "who",
        usage: "/who",
        help: "who is here",
        run: who,
    },
    Command {
        name: "me",
        usage: "/me ACTION",
        help: "tell everyone what you do: * NAME ACTION",
        run: me,
    },
    Command {
        name: "msg",
        usage: "/msg NAME TEXT",
        help: "send TEXT to NAME only",
        run: msg,
    },
    Command {
        name: "quit",
        usage: "/quit [REASON]",
        help: "leave (the others see the reason)",
        run: quit,
    },
    Command {
        name: "help",
        usage: "/help",
        help: "this list",
        run: help,
    },
];

/// `line` is what followed the `/`: find its command in the table and run it.
pub fn run(room: &mut Room, who: usize, line: &str) {
    let (name, args) = line.split_once(' ').unwrap_or((line, ""));
    match COMMANDS.iter().find(|command| command.name == name) {
        Some(command) => (command.run)(room, who, args.trim()),
        None => room.send(who, &format!("* unknown command /{name}; try /help")),
    }
}
// ANCHOR_END: table

// ANCHOR: help
fn help(room: &mut Room, who: usize, _args: &str) {
    room.send(who, "* commands:");
    let width = COMMANDS.iter().map(|c| c.usage.len()).max().unwrap_or(0);
    for command in COMMANDS {
        room.send(
            who,
            &format!("*   {:width$}  {}", command.usage, command.help),
        );
    }
}
// ANCHOR_END: help

fn who(room: &mut Room, who: usize, _args: &str) {
    let names = room.names();
    room.send(who, &format!("* here: {names}"));
}

fn nick(room: &mut Room, who: usize, new: &str) {
    if let Some(why) = invalid_name(new) {
        return room.send(who, &why);
    }
    // Taken by someone else (changing only the case of one's own name is fine).
    if room.find(new).is_some_and(|found| found != who) {
        return room.send(who, &format!("* the name {new} is taken"));
    }
    let old = room.name(who).to_string();
    room.members[who].name = Some(new.to_string());
    let line = format!("* {old} is now known as {new}");
    if !room.quiet {
        log!("{line}");
    }
    room.broadcast(None, &line);
}

fn me(room: &mut Room, who: usize, action: &str) {
    if action.is_empty() {
        return room.send(who, "* usage: /me ACTION");
    }
    let line = format!("* {} {action}", room.name(who));
    if !room.quiet {
        log!("{line}");
    }
    room.broadcast(None, &line);
}

// ANCHOR: msg
fn msg(room: &mut Room, who: usize, args: &str) {
    let (name, text) = args.split_once(' ').unwrap_or((args, ""));
    let text = text.trim();
    if name.is_empty() || text.is_empty() {
        return room.send(who, "* usage: /msg NAME TEXT");
    }
    match room.find(name) {
        Some(to) => {
            let line = format!("*{}* {text}", room.name(who));
            room.send(to, &line);
        }
        None => room.send(who, &format!("* no one named {name}")),
    }
}
// ANCHOR_END: msg

fn quit(room: &mut Room, who: usize, reason: &str) {
    room.send(who, "* bye");
    chat::leave(room, who, (!reason.is_empty()).then_some(reason));
}

//! `--bot`: the tutorial's menu bot, on the same loop. Each client is served on its
//! own (the bot has no room to share): it sends the menu; `1` or `2` says which game
//! was chosen, `exit` says goodbye and closes, anything else asks again.

use crate::chat;
use crate::lines::Line;
use crate::room::{MAX_LINE, Room};
use workbook::log;

// ANCHOR: bot
pub const MENU: &str = "* menu: 1 = the first game, 2 = the second game, exit = leave";

pub fn greet(room: &mut Room, who: usize) {
    room.send(who, MENU);
}

pub fn on_line(room: &mut Room, who: usize, line: Line) {
    let Line::Text(text) = line else {
        return room.send(who, &format!("* line too long (max {MAX_LINE} bytes)"));
    };
    if !room.quiet {
        log!("{}: {text}", room.members[who].peers);
    }
    match text.trim() {
        "1" => room.send(who, "* you chose the first game"),
        "2" => room.send(who, "* you chose the second game"),
        "exit" => {
            room.send(who, "* goodbye");
            chat::leave(room, who, None);
        }
        _ => {
            room.send(who, "* that is not on the menu; choose again");
            room.send(who, MENU);
        }
    }
}
// ANCHOR_END: bot

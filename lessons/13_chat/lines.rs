//! Lines on a byte stream (lesson 09's framing, for text): TCP delivers bytes in
//! whatever pieces the network and the kernel make, so a line may come in many
//! reads, and one read may bring many lines. [`LineReader`] keeps the unfinished end
//! between reads and hands out whole lines only. Because a line is decoded only when
//! it is whole, a UTF-8 character split across two reads is whole again by then.
//!
//! The server and the client both read lines with it (the client with a larger limit).

// ANCHOR: line_reader
/// What one line of input turned out to be.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A whole line, without its `\n` (or `\r\n`), as text that is safe to show.
    Text(String),
    /// A line longer than the limit: reported once; its bytes up to the next `\n`
    /// are thrown away as they come.
    TooLong,
}

/// Splits bytes into lines of at most `max` bytes each.
pub struct LineReader {
    max: usize,
    /// The start of a line whose `\n` has not come yet (at most `max + 1` bytes).
    partial: Vec<u8>,
    /// In the middle of a line already reported as too long: drop bytes until `\n`.
    discarding: bool,
}

impl LineReader {
    pub fn new(max: usize) -> LineReader {
        LineReader {
            max,
            partial: Vec::new(),
            discarding: false,
        }
    }

    /// Takes the bytes of one read; returns the lines they completed, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let Some(end) = bytes.iter().position(|&byte| byte == b'\n') else {
                // No line end in this read: keep the start of the line for later, but
                // never more than a line may hold (plus a `\r`).
                if !self.discarding {
                    self.partial.extend_from_slice(bytes);
                    if self.partial.len() > self.max + 1 {
                        self.partial.clear();
                        self.discarding = true;
                        lines.push(Line::TooLong);
                    }
                }
                break;
            };
            let (piece, rest) = (&bytes[..end], &bytes[end + 1..]);
            bytes = rest;
            if self.discarding {
                // The end of the line that was too long: the next one starts clean.
                self.discarding = false;
                continue;
            }
            self.partial.extend_from_slice(piece);
            let line = std::mem::take(&mut self.partial);
            lines.push(self.finish_line(&line));
        }
        lines
    }

    /// The peer closed: what it sent after its last `\n`, as one more line, if any.
    pub fn finish(&mut self) -> Option<Line> {
        let line = std::mem::take(&mut self.partial);
        let discarding = std::mem::replace(&mut self.discarding, false);
        (!line.is_empty() && !discarding).then(|| self.finish_line(&line))
    }

    fn finish_line(&self, line: &[u8]) -> Line {
        // `\r\n` (telnet, Windows, HTTP habits) is a line end too.
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max {
            Line::TooLong
        } else {
            Line::Text(clean_text(line))
        }
    }
}
// ANCHOR_END: line_reader

// ANCHOR: clean_text
/// Bytes as text anyone's terminal can show: invalid UTF-8 becomes U+FFFD (`�`),
/// and so do control characters other than tab, so that a line cannot clear
/// another user's screen or move their cursor with escape sequences; and so do the
/// controls that are not "control characters" to Unicode but still move text: the
/// bidirectional ones (U+202E shows the rest of a line backwards) and the line and
/// paragraph separators (a line break inside what the server sees as one line).
pub fn clean_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|ch| {
            let moves_text = matches!(
                ch,
                '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}'
            );
            if (ch.is_control() && ch != '\t') || moves_text {
                char::REPLACEMENT_CHARACTER
            } else {
                ch
            }
        })
        .collect()
}
// ANCHOR_END: clean_text

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: Vec<Line>) -> Vec<String> {
        lines
            .into_iter()
            .map(|line| match line {
                Line::Text(text) => text,
                Line::TooLong => "<too long>".to_string(),
            })
            .collect()
    }

    #[test]
    fn lines_across_reads() {
        let mut reader = LineReader::new(10);
        assert!(reader.feed(b"hel").is_empty());
        assert_eq!(texts(reader.feed(b"lo\r\nwor")), ["hello"]);
        assert_eq!(texts(reader.feed(b"ld\n\nx\n")), ["world", "", "x"]);
        assert_eq!(reader.finish(), None);
    }

    #[test]
    fn a_character_split_across_reads_arrives_whole() {
        let mut reader = LineReader::new(10);
        let e = "é".as_bytes();
        assert!(reader.feed(&e[..1]).is_empty());
        assert_eq!(texts(reader.feed(&[&e[1..], b"\n"].concat())), ["é"]);
    }

    #[test]
    fn invalid_utf8_and_control_characters_are_replaced() {
        let mut reader = LineReader::new(10);
        assert_eq!(texts(reader.feed(b"a\xffb\x1b[2J\tc\n")), ["a�b�[2J\tc"]);
    }

    #[test]
    fn bidi_and_line_separator_controls_are_replaced() {
        // U+202E turns the rest of a line around on screen; U+2028 and U+2029 break
        // it where the server sees one line; U+2066-U+2069 and U+200E/F, U+061C too.
        let text = "a\u{202e}b\u{2028}c\u{2029}d\u{2066}e\u{2069}f\u{200f}g\u{61c}h";
        assert_eq!(clean_text(text.as_bytes()), "a�b�c�d�e�f�g�h");
    }

    #[test]
    fn a_long_line_is_reported_once_and_skipped() {
        let mut reader = LineReader::new(4);
        assert_eq!(texts(reader.feed(b"1234\n12345\n")), ["1234", "<too long>"]);
        assert_eq!(texts(reader.feed(b"123456")), ["<too long>"]);
        assert!(reader.feed(b"7890").is_empty());
        assert_eq!(texts(reader.feed(b"90\nok\n")), ["ok"]);
        // `\r\n` does not count against the limit.
        assert_eq!(texts(reader.feed(b"1234\r\n")), ["1234"]);
    }

    #[test]
    fn the_end_without_a_line_feed_is_a_line() {
        let mut reader = LineReader::new(10);
        assert!(reader.feed(b"bye").is_empty());
        assert_eq!(reader.finish(), Some(Line::Text("bye".into())));
    }
}

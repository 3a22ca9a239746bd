//! The other way to frame messages: a length prefix. Each frame is a `u32` in
//! big-endian byte order (network byte order, lesson 03) and then that many bytes of
//! payload, whatever they contain.
//!
//! The same framing layer reads it with count terminators: `Count(4)` for the
//! length, then `Count(length)` for the payload. The server does not use this file;
//! its tests run it: `cargo test --bin 09_framing_server length_prefix`.

use crate::framing::{Channel, Protocol, Terminator};

/// The prefix: 4 bytes.
const PREFIX: usize = 4;

// ANCHOR: encode
/// One frame: the payload's length as a big-endian u32, then the payload. `None` for
/// a payload that does not fit in a u32 length (4 GiB or more).
pub fn encode(payload: &[u8]) -> Option<Vec<u8>> {
    let length = u32::try_from(payload.len()).ok()?;
    let mut frame = Vec::with_capacity(PREFIX + payload.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(payload);
    Some(frame)
}
// ANCHOR_END: encode

// ANCHOR: length_prefixed
/// Reads length-prefixed frames; keeps the payloads in `frames`.
pub struct LengthPrefixed {
    /// Bytes of the part being read: the 4 length bytes, or the payload.
    part: Vec<u8>,
    /// Reading the length (true) or the payload (false)?
    in_prefix: bool,
    /// The longest payload accepted: checked on the length, before any payload byte.
    max_payload: usize,
    pub frames: Vec<Vec<u8>>,
}

impl LengthPrefixed {
    pub fn new(max_payload: usize) -> LengthPrefixed {
        LengthPrefixed {
            part: Vec::new(),
            in_prefix: true,
            max_payload,
            frames: Vec::new(),
        }
    }
}

impl Protocol for LengthPrefixed {
    fn start(&mut self, chat: &mut Channel) {
        chat.set_terminator(Terminator::Count(PREFIX));
    }

    fn collect_incoming_data(&mut self, data: &[u8], _chat: &mut Channel) {
        // Never more than the count asked for: at most max_payload bytes.
        self.part.extend_from_slice(data);
    }

    fn found_terminator(&mut self, chat: &mut Channel) {
        if !self.in_prefix {
            self.frames.push(std::mem::take(&mut self.part));
            self.in_prefix = true;
            chat.set_terminator(Terminator::Count(PREFIX));
            return;
        }
        let Ok(prefix) = <[u8; PREFIX]>::try_from(self.part.as_slice()) else {
            chat.close();
            return;
        };
        self.part.clear();
        let length = u32::from_be_bytes(prefix) as usize;
        if length > self.max_payload {
            // The length is known before the payload: refuse without reading it.
            workbook::log!(
                "{} {}: frame of {length} bytes, more than {}, closing",
                workbook::log::ERROR,
                chat.peers(),
                self.max_payload
            );
            chat.close();
        } else if length == 0 {
            // An empty frame: no payload to wait for (Count(0) would wait for nothing).
            self.frames.push(Vec::new());
            chat.set_terminator(Terminator::Count(PREFIX));
        } else {
            self.in_prefix = false;
            chat.set_terminator(Terminator::Count(length));
        }
    }
}
// ANCHOR_END: length_prefixed

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::tests::feed_reads;

    fn stream_of(payloads: &[&[u8]]) -> Vec<u8> {
        payloads
            .iter()
            .flat_map(|payload| encode(payload).unwrap())
            .collect()
    }

    #[test]
    fn frames_survive_every_split() {
        // A payload may hold anything, "\r\n\r\n" and zero bytes included.
        let payloads: [&[u8]; 3] = [b"hello", b"", b"\r\n\r\n\x00\xff binary"];
        let bytes = stream_of(&payloads);
        for cut in 0..=bytes.len() {
            let (first, second) = bytes.split_at(cut);
            let (decoder, chat, _) = feed_reads(LengthPrefixed::new(100), &[first, second]);
            assert_eq!(decoder.frames, payloads, "cut at {cut}");
            assert_eq!(decoder.part, b"");
            assert!(chat.open());
        }
        let one_byte_reads: Vec<&[u8]> = bytes.chunks(1).collect();
        let (decoder, _, _) = feed_reads(LengthPrefixed::new(100), &one_byte_reads);
        assert_eq!(decoder.frames, payloads);
    }

    #[test]
    fn the_prefix_is_big_endian() {
        assert_eq!(encode(b"abc").unwrap(), b"\x00\x00\x00\x03abc");
        let long = vec![7u8; 258];
        assert_eq!(&encode(&long).unwrap()[..4], &[0, 0, 1, 2]);
    }

    #[test]
    fn a_too_long_length_is_refused_before_its_payload() {
        // The prefix says 4 GiB - 1: refused at once, nothing allocated for it.
        let (decoder, chat, _) = feed_reads(LengthPrefixed::new(100), &[b"\xff\xff\xff\xffabc"]);
        assert!(decoder.frames.is_empty());
        assert!(decoder.part.is_empty());
        assert!(!chat.open(), "the connection is closed");
        let (decoder, _, _) = feed_reads(LengthPrefixed::new(100), &[&stream_of(&[&[1u8; 100]])]);
        assert_eq!(decoder.frames.len(), 1, "exactly the limit is accepted");
    }
}

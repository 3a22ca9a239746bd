//! The framing layer of lesson 09: Python's `asynchat.async_chat`, in Rust, on lesson
//! 08's reactor.
//!
//! A [`Framed`] handler owns one connection. It reads, cuts the byte stream into
//! frames where the [`Terminator`] says, and calls its [`Protocol`] back with each
//! frame's bytes (`collect_incoming_data`, in pieces as they arrive) and at each
//! frame's end (`found_terminator`). The protocol answers through a [`Channel`]:
//! `push` queues bytes in the output (first in, first out), `close_when_done` closes
//! the connection once they are sent, `set_terminator` says where the next frame ends.
//!
//! The search for a terminator keeps only the end of a read that may be the start of
//! a terminator (at most its length minus one byte), so a terminator split across two
//! reads is found, and every byte is looked at a bounded number of times: O(n) work
//! for n bytes, however they are split into reads.

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use workbook::output::OutputBuffer;
use workbook::{log, show};

use crate::reactor::{Context, Handler};

/// The most one read(2) takes (asynchat's `ac_in_buffer_size`, which is 64 KiB).
/// Smaller here: the buffer lives on the stack and Rust zeroes it for every `pump`,
/// and zeroing 64 KiB costs more than reading a small request. Header blocks are
/// small; a large one takes more reads.
const READ_SIZE: usize = 4096;
/// Output waiting to go out beyond which the connection is not read (lessons 05, 08).
const OUTPUT_CAP: usize = 1024 * 1024;
/// After the last reply the connection is read, and what comes discarded, until the
/// client's end of input, but no longer than this and no more than LINGER_BYTES.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 1024 * 1024;

// ANCHOR: terminator
/// Where the current frame ends (asynchat's `set_terminator` argument).
#[derive(Clone, Debug, PartialEq)]
pub enum Terminator {
    /// At these bytes, e.g. `b"\r\n\r\n"`. They end the frame and are not collected.
    /// (Empty bytes are the same as `None`.)
    Bytes(Vec<u8>),
    /// After this many more bytes. Once they are collected, the terminator becomes
    /// `None` unless `found_terminator` sets another. (`Count(0)` is `None`.)
    Count(usize),
    /// Nowhere: every byte goes to `collect_incoming_data`, `found_terminator` is
    /// never called.
    None,
}
// ANCHOR_END: terminator

// ANCHOR: protocol
/// What a connection does with its frames: the methods a Python program writes in
/// its subclass of `async_chat`.
pub trait Protocol {
    /// Called once, before any input (Python: `__init__`): set the first terminator,
    /// perhaps push a greeting.
    fn start(&mut self, _chat: &mut Channel) {}
    /// Bytes of the current frame, in pieces as they arrive; never the terminator.
    /// Keeping them, and limiting how many, is the protocol's business.
    fn collect_incoming_data(&mut self, data: &[u8], chat: &mut Channel);
    /// The terminator was found: the current frame is complete.
    fn found_terminator(&mut self, chat: &mut Channel);
    /// The peer closed its side (read returned 0). What the layer held back as a
    /// possible start of a terminator was collected just before. After this call the
    /// connection closes once its output is sent.
    fn end_of_input(&mut self, _chat: &mut Channel) {}
}
// ANCHOR_END: protocol

// ANCHOR: channel
/// The protocol's handle on its connection: the terminator, the output, closing.
pub struct Channel {
    peers: String,
    terminator: Terminator,
    /// Bytes pushed and not written yet, in order: the bounded output buffer of
    /// lessons 04 to 08 (asynchat keeps a `producer_fifo` of chunks instead).
    output: OutputBuffer,
    /// `close_when_done` was called: no more input is delivered.
    closing: bool,
    /// `close` was called: the connection closes now, queued output is dropped.
    aborted: bool,
}

impl Channel {
    pub fn new(peers: String) -> Channel {
        Channel {
            peers,
            terminator: Terminator::None,
            output: OutputBuffer::new(OUTPUT_CAP),
            closing: false,
            aborted: false,
        }
    }
    /// Both ends of the connection, for the log.
    pub fn peers(&self) -> &str {
        &self.peers
    }
    /// Where the next frame ends; takes effect at once, for the bytes not yet delivered.
    pub fn set_terminator(&mut self, terminator: Terminator) {
        self.terminator = terminator;
    }
    /// Queues bytes to send, after everything pushed before. Ignored after
    /// `close_when_done` (asynchat never sends what comes after its end marker).
    pub fn push(&mut self, data: &[u8]) {
        if !self.closing && !self.aborted {
            self.output.push(data);
        }
    }
    /// Closes the connection once everything pushed so far is sent; delivers no more
    /// input to the protocol.
    pub fn close_when_done(&mut self) {
        self.closing = true;
    }
    /// Closes the connection now, dropping what is not sent yet.
    pub fn close(&mut self) {
        self.aborted = true;
    }
    /// Is input still delivered to the protocol (neither close call made)?
    pub fn open(&self) -> bool {
        !self.closing && !self.aborted
    }
}
// ANCHOR_END: channel

/// Where `terminator` (not empty) first occurs in `data`.
fn find(data: &[u8], terminator: &[u8]) -> Option<usize> {
    data.windows(terminator.len())
        .position(|window| window == terminator)
}

/// How many bytes at the end of `data` are the beginning of `terminator` (not empty):
/// 0 to `terminator.len() - 1`. Python's asynchat calls it `find_prefix_at_end`.
fn partial_at_end(data: &[u8], terminator: &[u8]) -> usize {
    let longest = (terminator.len() - 1).min(data.len());
    (1..=longest)
        .rev()
        .find(|&n| data.ends_with(&terminator[..n]))
        .unwrap_or(0)
}

// ANCHOR: input
/// The input side of the layer, without a socket: bytes in, protocol calls out.
#[derive(Default)]
pub struct Input {
    /// The end of the input so far that may be the start of a terminator (fewer bytes
    /// than the terminator has), held back until the next read says.
    held: Vec<u8>,
}

impl Input {
    /// Cuts `data` into frames for `protocol`. Returns how many bytes it did not
    /// deliver because the protocol stopped the input (close_when_done or close).
    pub fn feed(&mut self, data: &[u8], protocol: &mut impl Protocol, chat: &mut Channel) -> usize {
        // The held bytes (at most 3 for "\r\n\r\n") come first. They are the only
        // bytes looked at twice, so the work stays proportional to the input.
        let mut joined = std::mem::take(&mut self.held);
        let buffer: &[u8] = if joined.is_empty() {
            data
        } else {
            joined.extend_from_slice(data);
            &joined
        };
        let mut start = 0;
        while start < buffer.len() && chat.open() {
            let rest = &buffer[start..];
            // How many bytes of the frame to deliver, how many terminator bytes to
            // skip after them, and whether that ends the frame.
            let (deliver, skip, ends_frame) = match &mut chat.terminator {
                Terminator::Bytes(terminator) if !terminator.is_empty() => {
                    match find(rest, terminator) {
                        Some(at) => (at, terminator.len(), true),
                        None => {
                            // Not here: deliver all but a possible start of the
                            // terminator, and hold that back for the next read.
                            let keep = partial_at_end(rest, terminator);
                            if keep > 0 {
                                self.held = rest[rest.len() - keep..].to_vec();
                            }
                            (rest.len() - keep, 0, false)
                        }
                    }
                }
                Terminator::Count(left) if *left > 0 => {
                    let take = (*left).min(rest.len());
                    *left -= take;
                    (take, 0, *left == 0)
                }
                _ => (rest.len(), 0, false),
            };
            if chat.terminator == Terminator::Count(0) {
                // Used up, before found_terminator, which may set the next one.
                chat.terminator = Terminator::None;
            }
            if deliver > 0 {
                protocol.collect_incoming_data(&rest[..deliver], chat);
            }
            start += deliver + skip;
            if ends_frame && chat.open() {
                protocol.found_terminator(chat);
            }
            if !self.held.is_empty() {
                return 0;
            }
        }
        buffer.len() - start
    }

    /// End of input: the held bytes were not a terminator after all, so they are
    /// frame data; then the protocol hears of the end.
    pub fn finish(&mut self, protocol: &mut impl Protocol, chat: &mut Channel) {
        let held = std::mem::take(&mut self.held);
        if !held.is_empty() && chat.open() {
            protocol.collect_incoming_data(&held, chat);
        }
        if chat.open() {
            protocol.end_of_input(chat);
        }
        chat.close_when_done();
    }
}
// ANCHOR_END: input

// ANCHOR: framed
/// One connection with a framing protocol: the reactor's handler (asynchat's
/// `async_chat`, whose subclass methods are `P`'s).
pub struct Framed<P: Protocol> {
    stream: TcpStream,
    protocol: P,
    chat: Channel,
    input: Input,
    /// The peer half-closed: read returned 0.
    input_closed: bool,
    /// Everything is sent and our side is shut down (SHUT_WR); we read only to
    /// discard, until the peer's end of input (the "lingering close").
    lingering: bool,
    /// Bytes that came after close_when_done and were dropped.
    ignored: usize,
    /// False once a read said WouldBlock, until epoll reports the socket readable.
    may_read: bool,
    /// Why the connection failed, if it did (logged when it closes).
    error: Option<io::Error>,
    quiet: bool,
}
// ANCHOR_END: framed

impl<P: Protocol> Framed<P> {
    pub fn new(stream: TcpStream, peers: String, mut protocol: P, quiet: bool) -> Framed<P> {
        let mut chat = Channel::new(peers);
        protocol.start(&mut chat);
        Framed {
            stream,
            protocol,
            chat,
            input: Input::default(),
            input_closed: false,
            lingering: false,
            ignored: 0,
            may_read: true,
            error: None,
            quiet,
        }
    }

    // ANCHOR: pump
    /// Reads and writes as far as the socket allows; closes the connection when done.
    fn pump(&mut self, event_loop: &mut Context) -> io::Result<()> {
        let mut buffer = [0u8; READ_SIZE];
        loop {
            let mut got_data = false;
            if self.may_read && self.readable() {
                match self.stream.read(&mut buffer) {
                    Ok(0) => {
                        self.input_closed = true;
                        self.input.finish(&mut self.protocol, &mut self.chat);
                    }
                    Ok(n) => {
                        if !self.quiet {
                            let data = show::bytes(&buffer[..n]);
                            let size = show::count(n, "byte");
                            log!("{} {size} from {}: {data}", log::RECEIVED, self.chat.peers);
                        }
                        self.ignored += if self.chat.open() {
                            self.input
                                .feed(&buffer[..n], &mut self.protocol, &mut self.chat)
                        } else {
                            n
                        };
                        got_data = true;
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.may_read = false,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(err),
                }
            }
            self.flush(event_loop)?;
            // Level-triggered: one read per event. Edge-triggered: until WouldBlock
            // (lesson 08's rule).
            if !event_loop.edge_triggered() || !got_data {
                break;
            }
        }
        let sent_all = self.chat.output.is_empty();
        let done = self.chat.aborted
            || (self.chat.closing && sent_all && self.input_closed)
            || self.ignored > LINGER_BYTES;
        if done {
            event_loop.close();
        }
        Ok(())
    }
    // ANCHOR_END: pump

    // ANCHOR: flush
    /// Writes the output until it is empty or the kernel's buffer is full.
    /// When it is empty after close_when_done, shuts our side down (the client reads
    /// EOF after the last byte) and lingers: see `readable`.
    fn flush(&mut self, event_loop: &mut Context) -> io::Result<()> {
        if self.chat.aborted {
            return Ok(());
        }
        while !self.chat.output.is_empty() {
            match self.chat.output.write_to(&self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        if self.chat.closing && !self.lingering && !self.input_closed {
            // shutdown(2) SHUT_WR sends our FIN after the reply. Closing now instead,
            // with bytes from the client still unread, would make the kernel abort
            // the connection with a reset (RST), which can cost the client the reply.
            self.stream.shutdown(Shutdown::Write)?;
            self.lingering = true;
            event_loop.wake_at(Instant::now() + LINGER_TIME);
        }
        Ok(())
    }
    // ANCHOR_END: flush
}

// ANCHOR: framed_handler
impl<P: Protocol> Handler for Framed<P> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
    fn readable(&self) -> bool {
        if self.input_closed || self.chat.aborted {
            false
        } else if self.chat.closing {
            // Nothing more goes to the protocol: read (to discard) only once the
            // output is sent and our side is shut down, and not without end.
            self.lingering && self.ignored <= LINGER_BYTES
        } else {
            // Backpressure, as in lesson 08: a client that does not read its
            // replies is not read either.
            !self.chat.output.is_full()
        }
    }
    fn writable(&self) -> bool {
        !self.chat.output.is_empty() && !self.chat.aborted
    }
    fn handle_read(&mut self, event_loop: &mut Context) -> io::Result<()> {
        self.may_read = true;
        self.pump(event_loop)
    }
    fn handle_write(&mut self, event_loop: &mut Context) -> io::Result<()> {
        self.pump(event_loop)
    }
    fn handle_timeout(&mut self, event_loop: &mut Context) -> io::Result<()> {
        // LINGER_TIME after the last reply, the client has still not closed its side.
        if self.lingering {
            event_loop.close();
        }
        Ok(())
    }
    fn handle_error(&mut self, error: io::Error) {
        self.error = Some(error);
    }
    fn handle_close(&mut self) {
        if self.ignored > 0 && !self.quiet {
            let ignored = show::count(self.ignored, "byte");
            log!(
                "ignored {ignored} from {} after close_when_done",
                self.chat.peers
            );
        }
        match &self.error {
            Some(error) => log!("{} {}: {error}", log::DISCONNECTED, self.chat.peers),
            None if !self.quiet => log!("{} {}", log::DISCONNECTED, self.chat.peers),
            None => {}
        }
    }
}
// ANCHOR_END: framed_handler

#[cfg(test)]
pub mod tests {
    //! The input side without sockets: every way of splitting the input into reads
    //! must give the same frames.

    use super::*;

    /// A protocol that records what it is given, and follows a script of terminators.
    #[derive(Default)]
    pub struct Recorder {
        /// The terminators to set, in order: the first in `start`, the next after each
        /// frame; the last one stays.
        pub script: Vec<Terminator>,
        pub frame: Vec<u8>,
        pub frames: Vec<Vec<u8>>,
        /// How many `collect_incoming_data` calls.
        pub calls: usize,
        pub ended: bool,
    }

    impl Recorder {
        fn next_terminator(&mut self, chat: &mut Channel) {
            let next = if self.script.len() > 1 {
                self.script.remove(0)
            } else {
                self.script.first().cloned().unwrap_or(Terminator::None)
            };
            chat.set_terminator(next);
        }
    }

    impl Protocol for Recorder {
        fn start(&mut self, chat: &mut Channel) {
            self.next_terminator(chat);
        }
        fn collect_incoming_data(&mut self, data: &[u8], _chat: &mut Channel) {
            assert!(!data.is_empty(), "collect_incoming_data with no bytes");
            self.calls += 1;
            self.frame.extend_from_slice(data);
        }
        fn found_terminator(&mut self, chat: &mut Channel) {
            self.frames.push(std::mem::take(&mut self.frame));
            self.next_terminator(chat);
        }
        fn end_of_input(&mut self, _chat: &mut Channel) {
            self.ended = true;
        }
    }

    /// Feeds `reads` one after the other to a fresh layer; checks after each that at
    /// most `terminator length - 1` bytes are held back.
    pub fn feed_reads<P: Protocol>(mut protocol: P, reads: &[&[u8]]) -> (P, Channel, Input) {
        let mut chat = Channel::new("test".into());
        protocol.start(&mut chat);
        let mut input = Input::default();
        for read in reads {
            input.feed(read, &mut protocol, &mut chat);
            assert!(input.held.len() < 4, "held {:?}", input.held);
        }
        (protocol, chat, input)
    }

    fn crlf2() -> Terminator {
        Terminator::Bytes(b"\r\n\r\n".to_vec())
    }

    fn recorder(script: Vec<Terminator>) -> Recorder {
        Recorder {
            script,
            ..Recorder::default()
        }
    }

    #[test]
    fn finds_the_terminator_split_at_every_position() {
        let request = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n";
        for cut in 0..=request.len() {
            let (first, second) = request.split_at(cut);
            let (rec, _, input) = feed_reads(recorder(vec![crlf2()]), &[first, second]);
            assert_eq!(
                rec.frames,
                vec![b"GET / HTTP/1.0\r\nHost: x".to_vec()],
                "cut {cut}"
            );
            assert!(input.held.is_empty());
        }
    }

    #[test]
    fn one_byte_reads() {
        let request = b"a\r\nb\r\n\r\nc\r\n\r\n";
        let reads: Vec<&[u8]> = request.chunks(1).collect();
        let (rec, _, _) = feed_reads(recorder(vec![crlf2()]), &reads);
        assert_eq!(rec.frames, vec![b"a\r\nb".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn a_false_start_of_the_terminator_is_data() {
        // "\r\n\r" at the end of a read is held back; "x" shows it was not the end.
        let (rec, _, _) = feed_reads(
            recorder(vec![crlf2()]),
            &[b"a\r\n\r", b"x\r\n\r\n", b"\r\r\n\r\n"],
        );
        assert_eq!(rec.frames, vec![b"a\r\n\rx".to_vec(), b"\r".to_vec()]);
    }

    #[test]
    fn several_frames_in_one_read() {
        let (rec, _, _) = feed_reads(recorder(vec![crlf2()]), &[b"one\r\n\r\ntwo\r\n\r\nthr"]);
        assert_eq!(rec.frames, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(rec.frame, b"thr");
    }

    #[test]
    fn held_bytes_are_data_at_the_end_of_input() {
        let (mut rec, mut chat, mut input) = feed_reads(recorder(vec![crlf2()]), &[b"no end\r\n"]);
        assert_eq!(rec.frame, b"no end");
        input.finish(&mut rec, &mut chat);
        assert_eq!(rec.frame, b"no end\r\n");
        assert!(rec.ended && rec.frames.is_empty());
    }

    #[test]
    fn count_terminator() {
        // A 5-byte frame, then 3-byte frames, whatever the reads.
        let script = vec![Terminator::Count(5), Terminator::Count(3)];
        let (rec, _, _) = feed_reads(recorder(script), &[b"hel", b"loabcd", b"efghi"]);
        assert_eq!(
            rec.frames,
            vec![
                b"hello".to_vec(),
                b"abc".to_vec(),
                b"def".to_vec(),
                b"ghi".to_vec()
            ]
        );
    }

    #[test]
    fn a_used_up_count_becomes_none() {
        /// Asks for 2 bytes, once: sets no terminator after the first frame.
        #[derive(Default)]
        struct Once {
            frames: Vec<Vec<u8>>,
            frame: Vec<u8>,
        }
        impl Protocol for Once {
            fn start(&mut self, chat: &mut Channel) {
                chat.set_terminator(Terminator::Count(2));
            }
            fn collect_incoming_data(&mut self, data: &[u8], _chat: &mut Channel) {
                self.frame.extend_from_slice(data);
            }
            fn found_terminator(&mut self, _chat: &mut Channel) {
                self.frames.push(std::mem::take(&mut self.frame));
            }
        }
        let (once, chat, _) = feed_reads(Once::default(), &[b"abcdef"]);
        assert_eq!(once.frames, vec![b"ab".to_vec()]);
        assert_eq!(once.frame, b"cdef");
        assert_eq!(chat.terminator, Terminator::None);
    }

    #[test]
    fn no_terminator_collects_everything() {
        for none in [
            Terminator::None,
            Terminator::Count(0),
            Terminator::Bytes(Vec::new()),
        ] {
            let (rec, _, _) = feed_reads(recorder(vec![none]), &[b"a\r\n\r\nb", b"c"]);
            assert!(rec.frames.is_empty());
            assert_eq!(rec.frame, b"a\r\n\r\nbc");
        }
    }

    #[test]
    fn headers_then_a_counted_body() {
        // The shape of HTTP with Content-Length: a delimiter, then a count.
        let script = vec![crlf2(), Terminator::Count(4), crlf2()];
        let (rec, _, _) = feed_reads(
            recorder(script),
            &[b"POST\r\n", b"\r\nbo", b"dyNEXT\r\n\r\n"],
        );
        assert_eq!(
            rec.frames,
            vec![b"POST".to_vec(), b"body".to_vec(), b"NEXT".to_vec()]
        );
    }

    #[test]
    fn close_when_done_stops_the_input() {
        struct First(Vec<u8>);
        impl Protocol for First {
            fn start(&mut self, chat: &mut Channel) {
                chat.set_terminator(crlf2());
            }
            fn collect_incoming_data(&mut self, data: &[u8], _chat: &mut Channel) {
                self.0.extend_from_slice(data);
            }
            fn found_terminator(&mut self, chat: &mut Channel) {
                chat.push(b"reply");
                chat.close_when_done();
                chat.push(b"never sent");
            }
        }
        let mut chat = Channel::new("test".into());
        let mut first = First(Vec::new());
        first.start(&mut chat);
        let ignored = Input::default().feed(b"one\r\n\r\ntwo\r\n\r\n", &mut first, &mut chat);
        assert_eq!(first.0, b"one");
        assert_eq!(ignored, 7, "the second request is not delivered");
        assert_eq!(chat.output.pending(), b"reply".len());
    }

    #[test]
    fn nothing_piles_up_in_the_layer() {
        // 1 MiB without a terminator, in 1-byte reads: each read is delivered at once,
        // none is kept to be searched again, so the work is linear in the input.
        let reads: Vec<&[u8]> = std::iter::repeat_n(&b"x"[..], 1 << 20).collect();
        let (rec, _, input) = feed_reads(recorder(vec![crlf2()]), &reads);
        assert_eq!(rec.frame.len(), 1 << 20);
        assert_eq!(rec.calls, 1 << 20);
        assert!(input.held.is_empty());
    }

    #[test]
    fn partial_at_end_is_the_longest_prefix() {
        let t = b"\r\n\r\n";
        assert_eq!(partial_at_end(b"abc", t), 0);
        assert_eq!(partial_at_end(b"abc\r", t), 1);
        assert_eq!(partial_at_end(b"abc\r\n", t), 2);
        assert_eq!(partial_at_end(b"abc\r\n\r", t), 3);
        assert_eq!(partial_at_end(b"\n", t), 0);
        assert_eq!(partial_at_end(b"", t), 0);
        assert_eq!(find(b"a\r\n\r\n", t), Some(1));
    }
}

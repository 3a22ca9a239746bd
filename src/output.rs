//! A connection's output buffer, for servers that must never block in write(2)
//! (lessons 04, 05, 08, 09): what the kernel did not take yet waits here.
//!
//! Two bounds, both needed. [`OutputBuffer::room`] tells the server how much more it
//! may read from this client (read no more than that: when the client sends but does
//! not read, the buffer fills, the server stops reading, and TCP makes the client
//! wait). And the memory itself stays bounded: the part already sent is dropped
//! before the buffer would grow, so a client that reads slowly but forever cannot
//! make the `Vec` grow with every byte ever echoed.

use std::io::{self, Write};

// ANCHOR: output_buffer
/// Bytes to send to one peer, in order. `bytes[sent..]` is still to go.
#[derive(Debug)]
pub struct OutputBuffer {
    bytes: Vec<u8>,
    sent: usize,
    cap: usize,
}

/// A buffer that emptied keeps at most this much memory for next time.
const KEEP_WHEN_EMPTY: usize = 64 * 1024;

impl OutputBuffer {
    /// An empty buffer that should hold at most `cap` unsent bytes.
    pub fn new(cap: usize) -> OutputBuffer {
        OutputBuffer {
            bytes: Vec::new(),
            sent: 0,
            cap,
        }
    }

    /// Bytes waiting to be sent.
    pub fn pending(&self) -> usize {
        self.bytes.len() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// At the cap: stop reading from this peer until it reads.
    pub fn is_full(&self) -> bool {
        self.pending() >= self.cap
    }

    /// How many more bytes may be added before the cap.
    pub fn room(&self) -> usize {
        self.cap.saturating_sub(self.pending())
    }

    /// Queues `data` (the caller read at most [`room`](Self::room) bytes). The part
    /// already sent is dropped first whenever keeping it would make the `Vec` grow,
    /// so its capacity stays about `cap` plus one read, however long the connection.
    pub fn push(&mut self, data: &[u8]) {
        if self.sent > 0 && self.bytes.len() + data.len() > self.bytes.capacity() {
            self.bytes.drain(..self.sent);
            self.sent = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// One write(2) of what is pending: the kernel takes what fits in the socket's
    /// send buffer, maybe only part. Returns how many bytes went; `WouldBlock`,
    /// `Interrupted` and real errors (EPIPE, ECONNRESET) come back as `Err`.
    pub fn write_to(&mut self, mut peer: impl Write) -> io::Result<usize> {
        let written = peer.write(&self.bytes[self.sent..])?;
        self.sent += written;
        if self.sent == self.bytes.len() {
            self.bytes.clear();
            self.sent = 0;
            // After a burst, do not keep megabytes for an idle connection.
            self.bytes.shrink_to(KEEP_WHEN_EMPTY);
        }
        Ok(written)
    }

    /// The memory this buffer holds (its `Vec`'s capacity), for tests and logs.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }
}
// ANCHOR_END: output_buffer

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that takes at most `per_write` bytes per write.
    struct Slow {
        taken: Vec<u8>,
        per_write: usize,
    }

    impl Write for Slow {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let n = data.len().min(self.per_write);
            self.taken.extend_from_slice(&data[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn keeps_order_across_partial_writes() {
        let mut buffer = OutputBuffer::new(100);
        let mut peer = Slow {
            taken: Vec::new(),
            per_write: 3,
        };
        buffer.push(b"hello ");
        buffer.write_to(&mut peer).unwrap();
        buffer.push(b"world");
        while !buffer.is_empty() {
            buffer.write_to(&mut peer).unwrap();
        }
        assert_eq!(peer.taken, b"hello world");
    }

    #[test]
    fn room_and_full_follow_the_cap() {
        let mut buffer = OutputBuffer::new(10);
        assert_eq!(buffer.room(), 10);
        buffer.push(b"0123456789");
        assert!(buffer.is_full());
        assert_eq!(buffer.room(), 0);
    }

    #[test]
    fn memory_stays_bounded_when_the_peer_never_catches_up() {
        // The peer always takes a little less than was added: the buffer is never
        // empty, so it is never simply cleared. The Vec must not grow with the total.
        let cap = 64 * 1024;
        let mut buffer = OutputBuffer::new(cap);
        let mut peer = Slow {
            taken: Vec::new(),
            per_write: 4000,
        };
        let chunk = vec![7u8; 4096];
        for _ in 0..10_000 {
            let room = buffer.room().min(chunk.len());
            buffer.push(&chunk[..room]);
            buffer.write_to(&mut peer).unwrap();
            peer.taken.clear();
        }
        assert!(
            buffer.capacity() <= 2 * (cap + chunk.len()),
            "capacity {} after 40 MB passed through",
            buffer.capacity()
        );
    }
}

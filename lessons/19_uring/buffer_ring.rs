//! The provided buffer ring: memory the server lends the kernel for receives.
//!
//! With epoll (lesson 08) the server picks a buffer when it calls read(2), after the
//! socket is readable. With io_uring the receive is submitted before any data has
//! come, so the buffer must be chosen when the data arrives: the kernel takes the
//! next free one from this ring, fills it, and names it (its buffer id) in the
//! completion. The buffer is then the server's until it gives it back here; the
//! kernel never touches a buffer that is not in the ring.
//!
//! All the unsafe code of the lesson that touches memory is in this file: the kernel
//! reads the ring's entries and writes into the buffers, so both must stay where they
//! are, unmoved and unfreed, for as long as the ring is registered. The `IoUring` must
//! therefore be dropped (which unregisters everything) before this ring.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

// ANCHOR: buffer_ring
/// `count` buffers of `size` bytes, registered with a ring as buffer group `group`.
pub struct BufferRing {
    /// The ring of entries the kernel reads: (address, length, buffer id) each.
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    /// The buffers themselves, one block of `count * size` bytes.
    memory: NonNull<u8>,
    memory_layout: Layout,
    count: u16,
    size: u32,
    /// Our copy of the ring's tail: the next entry we fill. The kernel reads the tail
    /// in shared memory; it moves its own head as it takes buffers.
    tail: u16,
    /// Buffers the kernel filled and named in a completion we have read, not yet
    /// given back: the ring holds `count - lent` (fewer while completions that
    /// took buffers are still unread).
    lent: usize,
}

impl BufferRing {
    /// Allocates the ring and the buffers, registers them with io_uring_register(2)
    /// (IORING_REGISTER_PBUF_RING, Linux 5.19) and puts every buffer in the ring.
    /// `count` must be a power of two (the kernel masks the head and tail with it).
    pub fn register(ring: &IoUring, group: u16, count: u16, size: u32) -> io::Result<BufferRing> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        if !count.is_power_of_two() {
            return Err(invalid("the number of buffers must be a power of two"));
        }
        // The kernel maps the entries itself: they must start on a page.
        let entries_layout =
            Layout::from_size_align(count as usize * size_of::<BufRingEntry>(), 4096)
                .map_err(|_| invalid("bad buffer ring size"))?;
        let memory_layout = Layout::from_size_align(count as usize * size as usize, 4096)
            .map_err(|_| invalid("bad buffer size"))?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size checked by the
        // caller's constants); a null result is handled.
        let (entries, memory) = unsafe {
            (
                alloc::alloc_zeroed(entries_layout),
                alloc::alloc(memory_layout),
            )
        };
        let (Some(entries), Some(memory)) = (
            NonNull::new(entries.cast::<BufRingEntry>()),
            NonNull::new(memory),
        ) else {
            alloc::handle_alloc_error(entries_layout);
        };
        let mut buffers = BufferRing {
            entries,
            entries_layout,
            memory,
            memory_layout,
            count,
            size,
            tail: 0,
            lent: count as usize,
        };
        // SAFETY: the entries are allocated above and freed only in Drop, after the
        // caller dropped the IoUring (see the module's comment).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                count,
                group,
                0,
            )?;
        }
        for id in 0..count {
            buffers.give_back(id);
        }
        Ok(buffers)
    }

    /// The first `len` bytes of buffer `id`, which a completion just handed to us.
    pub fn data(&self, id: u16, len: usize) -> &[u8] {
        assert!(id < self.count && len <= self.size as usize);
        // SAFETY: in bounds (checked above); the kernel wrote this buffer before
        // posting the completion that named it, and will not write it again until
        // we give it back.
        unsafe { std::slice::from_raw_parts(self.address(id), len) }
    }

    /// Where buffer `id` starts: for a send that echoes it (the buffer must not be
    /// given back before that send's completion).
    pub fn address(&self, id: u16) -> *mut u8 {
        // SAFETY (of the pointer arithmetic): id < count, so within the block.
        unsafe { self.memory.as_ptr().add(id as usize * self.size as usize) }
    }

    /// Gives buffer `id` back to the kernel: writes an entry at the tail, then
    /// publishes the new tail (a release store, so the kernel sees the entry first).
    pub fn give_back(&mut self, id: u16) {
        assert!(id < self.count);
        // More entries than buffers would overwrite ones the kernel has not taken.
        assert!(self.lent > 0, "buffer {id} given back twice");
        self.lent -= 1;
        let mask = self.count - 1;
        // SAFETY: the entry at tail & mask is inside the ring, and the kernel does
        // not read entries between its head and our tail until we publish the tail.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add((self.tail & mask) as usize);
            entry.set_addr(self.address(id) as u64);
            entry.set_len(self.size);
            entry.set_bid(id);
            self.tail = self.tail.wrapping_add(1);
            // The tail shares its place with the first entry's last field.
            let tail = BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// A completion named buffer `id`: it is the server's until given back.
    pub fn lent(&mut self, id: u16) {
        assert!(id < self.count && self.lent < self.count as usize);
        self.lent += 1;
    }

    /// How many buffers are in the ring, as far as the completions read so far tell.
    pub fn free(&self) -> usize {
        self.count as usize - self.lent
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `register` with these layouts; the kernel no longer
        // uses them once the IoUring is closed (dropped first, see above).
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            alloc::dealloc(self.memory.as_ptr(), self.memory_layout);
        }
    }
}
// ANCHOR_END: buffer_ring

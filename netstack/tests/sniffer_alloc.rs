//! Recording a frame allocates nothing once the capture is warm: a counting
//! allocator (this test binary's own) watches the recording thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs::File;

use netstack::Instant;
use netstack::link::{Capture, CaptureConfig, Direction, Medium};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters are plain thread-locals that allocate nothing themselves.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: `ptr` came from `System.alloc` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn recording_a_frame_allocates_nothing() {
    let null = File::options().write(true).open("/dev/null").unwrap();
    let cap = Capture::from_file(null, CaptureConfig::default()).unwrap();
    let eth = cap.add_interface("eth0", Medium::Ethernet);
    let frame = vec![0x5a; 1514];
    let mut now = Instant::from_millis(0);
    let mut record = |n: usize| {
        for i in 0..n {
            let dir = if i % 3 == 0 {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            cap.record(eth, dir, now, &frame[..60 + i % 1400]);
            now += netstack::Duration::from_micros(10);
        }
    };
    // Warm-up: the buffer and the per-frame bookkeeping reach their size,
    // and this thread waits once for the writer (as it may under load
    // later), which sets up the channel's per-thread waiting state.
    record(5000);
    cap.flush();
    COUNTING.with(|c| c.set(true));
    record(20_000);
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.with(Cell::get), 0);
    let sum = cap.finish();
    assert_eq!(sum.interfaces[0].written, 25_000);
}

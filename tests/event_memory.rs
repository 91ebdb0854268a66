//! What one SSE event can cost in memory, counted by the allocator: an upstream that sends an
//! event just under `max_event_bytes` one byte per HTTP chunk must not make the framer hold a
//! slice handle (and a frame) per byte.
//!
//! Alone in its binary: it installs a counting global allocator.

#[allow(dead_code)]
#[path = "../benches/support/alloc.rs"]
mod alloc;

use bytes::Bytes;
use tower_midstream::internals::Framer;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

#[test]
fn an_event_dribbled_one_byte_per_chunk_costs_a_small_multiple_of_its_size() {
    const MAX_EVENT: usize = 1 << 20;
    let event = format!(
        "event: content_block_delta\ndata: {}\n\n",
        "x".repeat(MAX_EVENT - 100)
    )
    .into_bytes();
    let mut framer = Framer::new(MAX_EVENT);
    let before = alloc::live_bytes();
    alloc::reset_peak();
    let mut completed = 0;
    for &byte in &event {
        // Each chunk in its own allocation, as a network read would be.
        framer.push(Bytes::copy_from_slice(&[byte]));
        while let Some(ev) = framer.next_event() {
            assert_eq!(ev.expect("within the limit"), &event[..]);
            completed += 1;
        }
    }
    let peak = (alloc::peak_bytes() - before) as usize;
    assert_eq!(completed, 1);
    // The carry (grown by doubling) and the readable copy of the completed event.
    assert!(
        peak <= 4 * event.len(),
        "{peak} bytes at the peak for an event of {} bytes",
        event.len()
    );
}

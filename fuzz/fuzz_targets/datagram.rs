//! Arbitrary bytes into a one-peer `Gateway`: as a datagram, as a TUN packet, then as a
//! sequence of records (see `datagram` in `src/bodies.rs`). Must not panic; what it sends must
//! be well-formed and go only to addresses it heard from or was configured with.
#![no_main]

#[path = "../src/bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bodies::datagram(data);
});

//! Arbitrary bytes into the traversal decoders (`sitelink_core::traversal`): header, AEAD open,
//! body parsing, and a rendezvous agent's handling of a packet sealed with a real key (see
//! `traversal` in `src/bodies.rs` for the input format). Must not panic; decoded bodies encode
//! again stably; the hub answers only addresses it heard from.
#![no_main]

#[path = "../src/bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bodies::traversal(data);
});

//! Arbitrary bytes into the STUN client's receive path (`sitelink_core::stun`): the quick
//! `is_stun` test, the `stun-rs` decoder behind `codec::decode`, and a `StunClient` with an
//! outstanding transaction whose ID the input carries (so responses reach the matching code).
//! Must not panic; whatever decodes passed `is_stun`, and a decoded message keeps the
//! transaction ID of its header. The body is `stun` in `src/bodies.rs`.
#![no_main]

#[path = "../src/bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bodies::stun(data);
});

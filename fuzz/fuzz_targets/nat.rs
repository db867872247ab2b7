//! Arbitrary packets through the NAT engine (`sitelink_core::nat`), both ways, on a clock that
//! moves: masquerade (port-restricted cone, a 3-address pool, 16 ports), a forward and a netmap.
//! Must not panic, and every packet it sends back (ICMP errors) must parse as IPv4. The body
//! and the input format are `nat` in `src/bodies.rs`.
#![no_main]

#[path = "../src/bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bodies::nat(data);
});

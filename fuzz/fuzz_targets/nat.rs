//! Arbitrary packets through the NAT engine (`sitelink_core::nat`), both ways, on a clock that
//! moves: masquerade (a 3-address pool, 16 ports) under each preset and address-dependent
//! mapping with endpoint-independent filtering, a forward and a netmap.
//! Must not panic, and every packet it sends back (ICMP errors) must parse as IPv4. The body
//! and the input format are `nat` in `src/bodies.rs`.
#![no_main]

#[path = "../src/bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bodies::nat(data);
});

//! Property tests: translation round trips, checksums against full recomputation, and
//! ownership of external endpoints.

use std::collections::HashMap;
use std::net::SocketAddrV4;

use proptest::prelude::*;

use super::tests::{
    build, checksums_ok, ends, icmp_error, masq, port_unreachable, Harness, Kind, ACK,
};
use super::*;

const PRESETS: [&str; 4] = [
    "full-cone",
    "restricted-cone",
    "port-restricted-cone",
    "symmetric",
];

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Udp), Just(ACK), Just(Kind::EchoRequest)]
}

fn reply_kind(k: Kind) -> Kind {
    match k {
        Kind::EchoRequest => Kind::EchoReply,
        k => k,
    }
}

/// Zeroes the UDP checksum of a packet built by `build` (no options, so at bytes 26..28).
fn zero_udp_checksum(p: &mut [u8]) {
    p[26] = 0;
    p[27] = 0;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// An outbound packet and the reply to it: the translated packet is byte for byte the
    /// packet a host at the external endpoint would have built (so every checksum equals a full
    /// recomputation), and the translated reply is the reply to the original.
    #[test]
    fn outbound_then_reply_restores_the_original(
        kind in kind(),
        preset in 0..4usize,
        host in (1u8..255, 1u8..255, any::<u16>()),
        remote in (1u8..255, 1u8..255, any::<u16>()),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        zero_udp in any::<bool>(),
        delay in 0u64..30,
        quote in 28usize..200,
    ) {
        let zero_udp = zero_udp && kind == Kind::Udp;
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 168, host.0, host.1), host.2);
        let rport = if kind == Kind::EchoRequest { 0 } else { remote.2 };
        let dst = SocketAddrV4::new(Ipv4Addr::new(198, 51, remote.0, remote.1), rport);
        let mut h = Harness::new(&masq(PRESETS[preset]));

        let mut original = build(kind, src, dst, &payload);
        if zero_udp { zero_udp_checksum(&mut original); }
        let (v, sent) = h.out(original.clone(), 0);
        prop_assert_eq!(v, Verdict::Forward);
        let ext = ends(&sent).0;
        prop_assert_eq!(*ext.ip(), Ipv4Addr::new(203, 0, 113, 1));
        let mut expected = build(kind, ext, dst, &payload);
        if zero_udp { zero_udp_checksum(&mut expected); }
        prop_assert_eq!(&sent, &expected);
        prop_assert!(checksums_ok(&sent));

        // An ICMP error quoting (part of) what was sent comes back with the original quoted.
        // A quote cut inside the TCP checksum cannot have that byte fixed (the other is
        // missing); routers quote 8 bytes or more than 18, so leave that case out.
        let quote = quote.min(sent.len());
        let quote = if quote == 20 + 17 { 36 } else { quote };
        let err = icmp_error(port_unreachable(), Ipv4Addr::new(198, 51, 100, 254), *ext.ip(), &sent[..quote]);
        let (v, err) = h.inb(err, delay);
        prop_assert_eq!(v, Verdict::Forward);
        prop_assert!(checksums_ok(&err));
        prop_assert_eq!(&err[28..], &original[..quote]);

        let mut reply = build(reply_kind(kind), dst, ext, &payload);
        if zero_udp { zero_udp_checksum(&mut reply); }
        let (v, back) = h.inb(reply, delay);
        prop_assert_eq!(v, Verdict::Forward);
        let mut expected = build(reply_kind(kind), dst, src, &payload);
        if zero_udp { zero_udp_checksum(&mut expected); }
        prop_assert_eq!(&back, &expected);
    }

    /// Whatever the traffic and the clock do, an external endpoint belongs to one inside
    /// endpoint, and under dependent mapping to one remote (address, or address and port).
    #[test]
    fn external_endpoints_are_never_shared(
        preset in 0..5usize,
        ops in proptest::collection::vec(
            (0u8..4, prop_oneof![Just(53u16), Just(5000), Just(5001)], 0u8..4,
             prop_oneof![Just(80u16), Just(81)], any::<bool>(), 0u64..90, any::<bool>()),
            1..60,
        ),
    ) {
        // 4 = address-dependent mapping and filtering (no preset has it).
        let config = if preset == 4 {
            tests::config("host_port_quota = 0\nport_reuse_delay = 5\n[[masquerade]]\npool = [\"203.0.113.1\", \"203.0.113.2/31\"]\nmapping = \"address-dependent\"\nfiltering = \"address-dependent\"\n")
        } else {
            let mut c = masq(PRESETS[preset]);
            c.port_reuse_delay = 5;
            c
        };
        let mut h = Harness::new(&config);
        let mut t = 0;
        let mut seen: Vec<SocketAddrV4> = Vec::new();
        for (host, sport, remote, rport, tcp, step, probe) in ops {
            t += step;
            h.tick(t);
            let src = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, host + 1), sport);
            let dst = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, remote + 1), rport);
            let k = if tcp { ACK } else { Kind::Udp };
            if probe && !seen.is_empty() {
                // An outside host tries an external endpoint it may or may not be let in to.
                let target = seen[usize::from(remote) % seen.len()];
                let (v, p) = h.inb(build(k, dst, target, b"probe"), t);
                prop_assert!(matches!(v, Verdict::Forward | Verdict::Drop(_)));
                if v == Verdict::Forward { prop_assert!(checksums_ok(&p)); }
            } else {
                let (v, p) = h.out(build(k, src, dst, b"x"), t);
                prop_assert_eq!(&v, &Verdict::Forward);
                seen.push(ends(&p).0);
            }
            let mut owners: HashMap<(Proto, SocketAddrV4), (SocketAddrV4, SocketAddrV4)> = HashMap::new();
            let mut flows = std::collections::HashSet::new();
            for s in h.nat.sessions(h.at(t)) {
                prop_assert!(flows.insert((s.proto, s.external, s.remote)), "flow listed twice");
                let owner = owners.entry((s.proto, s.external)).or_insert((s.internal, s.remote));
                prop_assert_eq!(owner.0, s.internal, "external endpoint shared by two inside endpoints");
                match s.mapping {
                    Dependency::EndpointIndependent => {}
                    Dependency::AddressDependent => prop_assert_eq!(owner.1.ip(), s.remote.ip()),
                    Dependency::AddressAndPortDependent => prop_assert_eq!(owner.1, s.remote),
                }
            }
        }
    }
}

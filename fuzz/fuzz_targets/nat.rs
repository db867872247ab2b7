//! Arbitrary packets through the NAT engine (`sitelink_core::nat`), both ways, on a clock that
//! moves: masquerade (port-restricted cone, a 4-address pool, 16 ports), a forward and a netmap.
//! Must not panic, and every packet it sends back (ICMP errors) must parse as IPv4.
//!
//! Input: records of `[control, len, len bytes of packet]`. Control bit 0: inbound (else
//! outbound); bits 1-7: seconds to advance the clock first.
#![no_main]

use std::time::{Duration, Instant};

use sitelink_core::nat::{
    ForwardProto, MasqueradeRule, Nat, NatConfig, NetmapRule, PortForward, PortRange, Preset,
    Verdict,
};

fn config() -> NatConfig {
    NatConfig {
        netmap: vec![NetmapRule {
            real: "10.1.0.0/16".parse().expect("prefix"),
            mapped: "10.2.0.0/16".parse().expect("prefix"),
        }],
        masquerade: vec![MasqueradeRule {
            source: vec!["192.168.0.0/16".parse().expect("prefix")],
            destination: Vec::new(),
            pool: vec![
                "203.0.113.0/30".parse().expect("prefix"),
                "198.51.100.9".parse().expect("address"),
            ],
            preset: Some(Preset::PortRestrictedCone),
            mapping: None,
            filtering: None,
        }],
        forward: vec![PortForward {
            proto: ForwardProto::Udp,
            external_port: 53,
            external_addr: None,
            to: "192.168.1.53".parse().expect("target"),
            source: None,
        }],
        port_range: Some(PortRange {
            lo: 40000,
            hi: 40015,
        }),
        session_limit: 64,
        host_port_quota: 8,
        ..NatConfig::default()
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let Ok(mut nat) = Nat::new(&config(), 1, t0) else {
        return;
    };
    let mut now = t0;
    let mut rest = data;
    while let [control, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let mut packet = tail[..n].to_vec();
        rest = &tail[n..];
        now += Duration::from_secs(u64::from(control >> 1));
        if nat.poll_timeout().is_some_and(|t| t <= now) {
            nat.handle_timeout(now);
        }
        let verdict = if control & 1 == 1 {
            nat.translate_inbound(&mut packet, now)
        } else {
            nat.translate_outbound(&mut packet, now)
        };
        if let Verdict::Reply { packet, .. } = verdict {
            assert!(
                packet.len() >= 20 && packet[0] >> 4 == 4,
                "reply is not IPv4"
            );
        }
        while nat.poll_event().is_some() {}
    }
    let _ = nat.sessions(now).count();
    let _ = nat.counters();
});

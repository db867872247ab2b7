//! Two gateways joined in memory, for the data plane's tests and benchmarks (included with
//! `#[path]` by `tests/no_alloc.rs` and `benches/dataplane.rs`).
//!
//! Gateway A (LAN 192.168.10.0/24, tunnel 10.77.0.1) and gateway B (LAN 192.168.20.0/24,
//! tunnel 10.77.0.2) are each other's peer; [`Pair::new`] completes their handshake by passing
//! datagrams back and forth until both are quiet.

#![allow(dead_code, reason = "each includer uses part of it")]

use std::net::SocketAddr;
use std::time::Instant;

use ipnet::IpNet;
use sitelink_core::gateway::{Gateway, Sink};
use sitelink_core::keys::PrivateKey;
use sitelink_core::peer::PeerSpec;

pub(crate) const A_WAN: &str = "198.51.100.1:51820";
pub(crate) const B_WAN: &str = "198.51.100.2:51820";
pub(crate) const LAN_A_HOST: [u8; 4] = [192, 168, 10, 10];
pub(crate) const LAN_B_HOST: [u8; 4] = [192, 168, 20, 10];

pub(crate) fn socket(s: &str) -> SocketAddr {
    s.parse().expect("constant socket address")
}

pub(crate) fn net(s: &str) -> IpNet {
    s.parse().expect("constant prefix")
}

/// Keeps the last datagram and the last TUN packet in buffers reserved once: never allocates
/// (every packet fits the reservation). A driver's cost per packet is a copy into the kernel;
/// this is a copy into memory.
pub(crate) struct MemSink {
    pub(crate) datagram: Vec<u8>,
    pub(crate) datagram_dst: Option<SocketAddr>,
    pub(crate) datagrams: usize,
    pub(crate) tun: Vec<u8>,
    pub(crate) tun_packets: usize,
}

impl MemSink {
    pub(crate) fn new() -> Self {
        Self {
            datagram: Vec::with_capacity(65_536),
            datagram_dst: None,
            datagrams: 0,
            tun: Vec::with_capacity(65_536),
            tun_packets: 0,
        }
    }
}

impl Sink for MemSink {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) {
        self.datagram.clear();
        self.datagram.extend_from_slice(datagram);
        self.datagram_dst = Some(dst);
        self.datagrams += 1;
    }

    fn write_tun(&mut self, packet: &[u8]) {
        self.tun.clear();
        self.tun.extend_from_slice(packet);
        self.tun_packets += 1;
    }
}

/// Collects every datagram and counts TUN packets, for the handshake (allocates).
#[derive(Default)]
pub(crate) struct Outbox(pub(crate) Vec<Vec<u8>>, pub(crate) usize);

impl Sink for Outbox {
    fn send_to(&mut self, _dst: SocketAddr, datagram: &[u8]) {
        self.0.push(datagram.to_vec());
    }
    fn write_tun(&mut self, _packet: &[u8]) {
        self.1 += 1;
    }
}

/// Gateways A and B after a completed handshake.
pub(crate) struct Pair {
    pub(crate) a: Gateway,
    pub(crate) b: Gateway,
    pub(crate) now: Instant,
}

impl Pair {
    /// Makes both gateways, lets `setup_b` configure B (e.g. its NAT), then has A send `first`
    /// (a packet from A's LAN to B's) and completes the handshake it starts; panics unless
    /// `first` reaches B's TUN device.
    pub(crate) fn new(first: &[u8], setup_b: impl FnOnce(&mut Gateway, Instant)) -> Self {
        let a_key = PrivateKey::from_bytes([0x11; 32]);
        let b_key = PrivateKey::from_bytes([0x22; 32]);
        let now = Instant::now();
        let mut a = Gateway::new(a_key.clone(), now);
        let mut b = Gateway::new(b_key.clone(), now);
        a.add_peer(PeerSpec {
            name: "office-b".into(),
            public_key: b_key.public_key(),
            preshared_key: None,
            endpoint: Some(socket(B_WAN)),
            allowed_ips: vec![net("10.77.0.2/32"), net("192.168.20.0/24")],
            persistent_keepalive: None,
        })
        .expect("add peer B to A");
        b.add_peer(PeerSpec {
            name: "office-a".into(),
            public_key: a_key.public_key(),
            preshared_key: None,
            endpoint: Some(socket(A_WAN)),
            allowed_ips: vec![net("10.77.0.1/32"), net("192.168.10.0/24")],
            persistent_keepalive: None,
        })
        .expect("add peer A to B");
        setup_b(&mut b, now);

        // The first packet waits for the handshake; pass datagrams back and forth until quiet.
        let mut to_b = Outbox::default();
        a.handle_tun_packet(first, now, &mut to_b);
        let mut delivered = 0;
        for _ in 0..8 {
            let mut to_a = Outbox::default();
            for d in to_b.0.drain(..) {
                b.handle_datagram(socket(A_WAN), &d, now, &mut to_a);
            }
            delivered += to_a.1;
            for d in to_a.0.drain(..) {
                a.handle_datagram(socket(B_WAN), &d, now, &mut to_b);
            }
            if to_b.0.is_empty() {
                break;
            }
        }
        assert_eq!(delivered, 1, "handshake did not complete in memory");
        Self { a, b, now }
    }
}

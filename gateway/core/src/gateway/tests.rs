//! In-memory gateway pairs: two [`Gateway`]s wired through a virtual network.

use super::*;
use crate::keys::{PresharedKey, PrivateKey};
use rand_core::OsRng;

const A_ADDR: &str = "198.51.100.1:51820";
const B_ADDR: &str = "198.51.100.2:51820";

#[derive(Default)]
struct Capture {
    sent: Vec<(SocketAddr, Vec<u8>)>,
    tun: Vec<Vec<u8>>,
}

impl Sink for Capture {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) {
        self.sent.push((dst, datagram.to_vec()));
    }
    fn write_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// A minimal IPv4/UDP packet from `src` to `dst` carrying `payload` (checksum left zero:
/// the tunnel does not look at it).
fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(total).expect("len").to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&1234u16.to_be_bytes());
    p[22..24].copy_from_slice(&5678u16.to_be_bytes());
    p[24..26].copy_from_slice(&u16::try_from(8 + payload.len()).expect("len").to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

struct Pair {
    a: Gateway,
    b: Gateway,
    a_key: PrivateKey,
    b_key: PrivateKey,
}

fn pair(psk_a: Option<PresharedKey>, psk_b: Option<PresharedKey>) -> Pair {
    let a_key = PrivateKey::generate(&mut OsRng);
    let b_key = PrivateKey::generate(&mut OsRng);
    let now = Instant::now();
    let mut a = Gateway::new(a_key.clone(), now);
    let mut b = Gateway::new(b_key.clone(), now);
    a.add_peer(PeerSpec {
        name: "office-b".into(),
        public_key: b_key.public_key(),
        preshared_key: psk_a,
        endpoint: Some(addr(B_ADDR)),
        allowed_ips: vec![
            "10.77.0.2/32".parse().expect("p"),
            "192.168.20.0/24".parse().expect("p"),
        ],
        persistent_keepalive: None,
    })
    .expect("add b");
    b.add_peer(PeerSpec {
        name: "office-a".into(),
        public_key: a_key.public_key(),
        preshared_key: psk_b,
        endpoint: None,
        allowed_ips: vec![
            "10.77.0.1/32".parse().expect("p"),
            "192.168.10.0/24".parse().expect("p"),
        ],
        persistent_keepalive: None,
    })
    .expect("add a");
    Pair { a, b, a_key, b_key }
}

/// Delivers every datagram in `out.sent` addressed to `to` into `gw` as if from `from`, until
/// both sides are quiet. Returns what was written to each TUN device.
fn exchange(p: &mut Pair, mut a_out: Capture) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let now = Instant::now();
    let (mut a_tun, mut b_tun) = (std::mem::take(&mut a_out.tun), Vec::new());
    let mut pending_to_b: Vec<Vec<u8>> = a_out.sent.into_iter().map(|(_, d)| d).collect();
    let mut pending_to_a: Vec<Vec<u8>> = Vec::new();
    for _ in 0..10 {
        let mut b_out = Capture::default();
        for d in pending_to_b.drain(..) {
            p.b.handle_datagram(addr(A_ADDR), &d, now, &mut b_out);
        }
        b_tun.append(&mut b_out.tun);
        pending_to_a.extend(b_out.sent.into_iter().map(|(_, d)| d));
        let mut a_out = Capture::default();
        for d in pending_to_a.drain(..) {
            p.a.handle_datagram(addr(B_ADDR), &d, now, &mut a_out);
        }
        a_tun.append(&mut a_out.tun);
        pending_to_b.extend(a_out.sent.into_iter().map(|(_, d)| d));
        if pending_to_b.is_empty() {
            break;
        }
    }
    (a_tun, b_tun)
}

#[test]
fn packet_crosses_after_handshake_and_back() {
    let mut p = pair(None, None);
    let pkt = ipv4([192, 168, 10, 10], [192, 168, 20, 10], b"hello");
    let mut out = Capture::default();
    p.a.handle_tun_packet(&pkt, Instant::now(), &mut out);
    assert_eq!(out.sent.len(), 1, "a handshake initiation");
    assert_eq!(out.sent[0].0, addr(B_ADDR));
    let (_, b_tun) = exchange(&mut p, out);
    assert_eq!(
        b_tun,
        vec![pkt.clone()],
        "queued packet delivered after the handshake"
    );
    // B learned A's endpoint from the handshake and can answer.
    let reply = ipv4([192, 168, 20, 10], [192, 168, 10, 10], b"world");
    let mut out = Capture::default();
    p.b.handle_tun_packet(&reply, Instant::now(), &mut out);
    assert_eq!(out.sent.len(), 1);
    assert_eq!(out.sent[0].0, addr(A_ADDR));
    let mut a_out = Capture::default();
    p.a.handle_datagram(addr(B_ADDR), &out.sent[0].1, Instant::now(), &mut a_out);
    assert_eq!(a_out.tun, vec![reply]);
    let st = p.a.status();
    assert!(st.peers[0].latest_handshake_secs_ago.is_some());
    assert_eq!(st.counters.rx_auth_failed, 0);
    let _ = (&p.a_key, &p.b_key);
}

#[test]
fn spoofed_inner_source_is_dropped_and_counted() {
    let mut p = pair(None, None);
    let mut out = Capture::default();
    p.a.handle_tun_packet(
        &ipv4([192, 168, 10, 10], [192, 168, 20, 10], b"x"),
        Instant::now(),
        &mut out,
    );
    exchange(&mut p, out);
    // B sends a packet whose source is not in B's allowed_ips at A.
    let bad = ipv4([10, 9, 9, 9], [192, 168, 10, 10], b"spoof");
    let mut out = Capture::default();
    p.b.handle_tun_packet(&bad, Instant::now(), &mut out);
    let mut a_out = Capture::default();
    p.a.handle_datagram(addr(B_ADDR), &out.sent[0].1, Instant::now(), &mut a_out);
    assert!(a_out.tun.is_empty());
    assert_eq!(p.a.counters().rx_source_not_allowed, 1);
}

#[test]
fn garbage_and_replays_get_no_answer() {
    let mut p = pair(None, None);
    let mut out = Capture::default();
    p.a.handle_tun_packet(
        &ipv4([192, 168, 10, 10], [192, 168, 20, 10], b"x"),
        Instant::now(),
        &mut out,
    );
    let init = out.sent[0].1.clone();
    exchange(&mut p, out);
    let now = Instant::now();
    let mut b_out = Capture::default();
    // Replayed initiation.
    p.b.handle_datagram(addr(A_ADDR), &init, now, &mut b_out);
    // Garbage of every size, and messages with a valid type but corrupt bodies.
    for len in 0..200usize {
        let mut g = vec![0xa5u8; len];
        p.b.handle_datagram(addr("192.0.2.66:4444"), &g, now, &mut b_out);
        if len >= 4 {
            g[..4].copy_from_slice(&(1 + (len as u32 % 4)).to_le_bytes());
            p.b.handle_datagram(addr("192.0.2.66:4444"), &g, now, &mut b_out);
        }
    }
    // Corrupted copy of the initiation (one bit flipped in the encrypted static key).
    let mut corrupt = init.clone();
    corrupt[50] ^= 1;
    p.b.handle_datagram(addr("192.0.2.66:4444"), &corrupt, now, &mut b_out);
    assert!(
        b_out.sent.is_empty(),
        "nothing answered: {:?}",
        b_out.sent.len()
    );
    assert!(b_out.tun.is_empty());
    let c = p.b.counters();
    assert_eq!(c.rx_replayed, 1);
    assert!(c.rx_malformed > 100);
    assert!(c.rx_auth_failed >= 1);
    // The tunnel still works.
    let pkt = ipv4([192, 168, 10, 10], [192, 168, 20, 11], b"still");
    let mut out = Capture::default();
    p.a.handle_tun_packet(&pkt, Instant::now(), &mut out);
    let mut b_out = Capture::default();
    p.b.handle_datagram(addr(A_ADDR), &out.sent[0].1, now, &mut b_out);
    assert_eq!(b_out.tun, vec![pkt]);
}

#[test]
fn unknown_key_gets_no_answer() {
    let mut p = pair(None, None);
    // A stranger who knows B's public key but is not B's peer.
    let stranger = PrivateKey::generate(&mut OsRng);
    let mut s = Gateway::new(stranger, Instant::now());
    s.add_peer(PeerSpec {
        name: "b".into(),
        public_key: p.b_key.public_key(),
        preshared_key: None,
        endpoint: Some(addr(B_ADDR)),
        allowed_ips: vec!["0.0.0.0/0".parse().expect("p")],
        persistent_keepalive: None,
    })
    .expect("add");
    let mut out = Capture::default();
    s.handle_tun_packet(
        &ipv4([1, 1, 1, 1], [192, 168, 20, 10], b"x"),
        Instant::now(),
        &mut out,
    );
    let mut b_out = Capture::default();
    p.b.handle_datagram(
        addr("203.0.113.9:1"),
        &out.sent[0].1,
        Instant::now(),
        &mut b_out,
    );
    assert!(b_out.sent.is_empty());
    assert_eq!(p.b.counters().rx_unknown_peer, 1);
}

#[test]
fn wrong_preshared_key_never_establishes() {
    let mut p = pair(
        Some(PresharedKey::generate(&mut OsRng)),
        Some(PresharedKey::generate(&mut OsRng)),
    );
    let mut out = Capture::default();
    p.a.handle_tun_packet(
        &ipv4([192, 168, 10, 10], [192, 168, 20, 10], b"x"),
        Instant::now(),
        &mut out,
    );
    let (_, b_tun) = exchange(&mut p, out);
    assert!(b_tun.is_empty());
    assert!(p.a.counters().rx_auth_failed >= 1);
}

#[test]
fn per_source_initiation_limit() {
    let mut p = pair(None, None);
    let mut inits = Vec::new();
    for _ in 0..20 {
        let mut out = Capture::default();
        // Force a fresh initiation each time by asking boringtun directly through timers is
        // awkward; instead replay the same one: the limiter runs before the replay check.
        p.a.handle_tun_packet(
            &ipv4([192, 168, 10, 10], [192, 168, 20, 10], b"x"),
            Instant::now(),
            &mut out,
        );
        inits.extend(out.sent.into_iter().map(|(_, d)| d));
    }
    let init = inits.first().cloned().expect("one initiation");
    let now = Instant::now();
    let mut b_out = Capture::default();
    for _ in 0..50 {
        p.b.handle_datagram(addr(A_ADDR), &init, now, &mut b_out);
    }
    assert_eq!(
        p.b.counters().handshake_rate_limited,
        50 - u64::from(crate::ratelimit::INITIATIONS_BURSTABLE)
    );
}

#[test]
fn peer_removal_and_duplicate_checks() {
    let mut p = pair(None, None);
    let dup = PeerSpec {
        name: "again".into(),
        public_key: p.b_key.public_key(),
        preshared_key: None,
        endpoint: None,
        allowed_ips: vec![],
        persistent_keepalive: None,
    };
    assert!(matches!(
        p.a.add_peer(dup),
        Err(GatewayError::DuplicateKey { .. })
    ));
    let other = PrivateKey::generate(&mut OsRng).public_key();
    let taken = PeerSpec {
        name: "c".into(),
        public_key: other,
        preshared_key: None,
        endpoint: None,
        allowed_ips: vec!["192.168.20.0/24".parse().expect("p")],
        persistent_keepalive: None,
    };
    assert!(matches!(
        p.a.add_peer(taken),
        Err(GatewayError::PrefixTaken { .. })
    ));
    assert!(p.a.remove_peer(&p.b_key.public_key()));
    let mut out = Capture::default();
    p.a.handle_tun_packet(
        &ipv4([192, 168, 10, 10], [192, 168, 20, 10], b"x"),
        Instant::now(),
        &mut out,
    );
    assert!(out.sent.is_empty());
    assert_eq!(p.a.counters().tx_no_route, 1);
}

#[test]
fn initiation_storm_is_answered_a_slice_at_a_time() {
    let b_key = PrivateKey::generate(&mut OsRng);
    let now = Instant::now();
    let mut b = Gateway::new(b_key.clone(), now);
    let n = 20u8;
    let mut inits = Vec::new();
    for i in 0..n {
        let key = PrivateKey::generate(&mut OsRng);
        b.add_peer(PeerSpec {
            name: format!("worker-{i}"),
            public_key: key.public_key(),
            preshared_key: None,
            endpoint: None,
            allowed_ips: vec![format!("10.9.0.{}/32", i + 1).parse().expect("p")],
            persistent_keepalive: None,
        })
        .expect("add peer");
        let mut initiator = Tunn::new(
            key.to_static_secret(),
            b_key.public_key().to_dalek(),
            None,
            None,
            u32::from(i),
            None,
        );
        let mut buf = [0u8; 256];
        let TunnResult::WriteToNetwork(init) =
            initiator.format_handshake_initiation(&mut buf, false)
        else {
            panic!("no initiation");
        };
        // One source each: the per-source limit is not what this is about.
        inits.push((SocketAddr::from(([192, 0, 2, i + 1], 51820)), init.to_vec()));
    }
    let responses = |c: &Capture| c.sent.iter().filter(|(_, d)| d[0] == 2).count();

    // One batch (one `now`): a few answered at once, the rest wait and make the timer due.
    let mut at_once = Capture::default();
    for (src, init) in &inits {
        b.handle_datagram(*src, init, now, &mut at_once);
    }
    assert_eq!(responses(&at_once), INLINE_INITIATIONS as usize);
    assert!(
        b.poll_timeout() <= now,
        "waiting initiations make the timer due"
    );

    // Each timeout answers a slice; until none wait, the timer stays due.
    let mut later = Capture::default();
    b.handle_timeout(now, &mut later);
    assert_eq!(responses(&later), INITIATIONS_PER_TIMEOUT);
    let mut rounds = 1;
    while b.poll_timeout() <= now {
        b.handle_timeout(now, &mut later);
        rounds += 1;
        assert!(rounds < 10, "the queue drains");
    }
    assert_eq!(responses(&at_once) + responses(&later), usize::from(n));
    assert_eq!(b.counters().handshake_queue_dropped, 0);
    // A later batch is answered at once again.
    assert!(b.poll_timeout() > now);
}

//! Hub and two peers on a simulated network with a hand-moved clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::keys::PrivateKey;

use crate::stun::test_rng::TestRng;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| unreachable!())
}

const HUB: &str = "203.0.113.1:51820";
const A_PUB: &str = "198.51.100.1:40000";
const B_PUB: &str = "198.51.100.2:41000";

struct Sim {
    now: Instant,
    wall: SystemTime,
    rng: TestRng,
    hub: Traversal,
    a: Traversal,
    b: Traversal,
    keys: [PublicKey; 3],
    /// Whether a packet from A's public address reaches B's, and the reverse.
    a_to_b: bool,
    b_to_a: bool,
    /// Relayed WireGuard datagrams that arrived: (receiver, from, bytes).
    delivered: Vec<(usize, PublicKey, Vec<u8>)>,
    /// The agents' decryption buffer.
    scratch: Vec<u8>,
    events: Vec<(usize, PathEvent)>,
}

impl Sim {
    fn new(a_to_b: bool, b_to_a: bool) -> Self {
        let hk = PrivateKey::from_bytes([10; 32]);
        let ak = PrivateKey::from_bytes([11; 32]);
        let bk = PrivateKey::from_bytes([12; 32]);
        let now = Instant::now();
        let tp =
            |name: &str, key: &PrivateKey, hub: Option<(&PrivateKey, SocketAddr)>| TraversalPeer {
                name: name.into(),
                key: key.public_key(),
                rendezvous: hub.map(|(h, _)| h.public_key()),
                rendezvous_endpoint: None,
            };
        let hub_peers = vec![tp("a", &ak, None), tp("b", &bk, None)];
        let hub_entry = TraversalPeer {
            rendezvous_endpoint: Some(addr(HUB)),
            ..tp("hub", &hk, None)
        };
        let a_peers = vec![
            hub_entry.clone(),
            TraversalPeer {
                rendezvous_endpoint: Some(addr(HUB)),
                ..tp("b", &bk, Some((&hk, addr(HUB))))
            },
        ];
        let b_peers = vec![
            hub_entry,
            TraversalPeer {
                rendezvous_endpoint: Some(addr(HUB)),
                ..tp("a", &ak, Some((&hk, addr(HUB))))
            },
        ];
        let cfg = PunchConfig::default();
        let mk = |k: &PrivateKey, p: &[TraversalPeer], r: bool| {
            Traversal::new(k, p, r, cfg, now).unwrap_or_else(|| unreachable!())
        };
        Self {
            now,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            rng: TestRng(7),
            hub: mk(&hk, &hub_peers, true),
            a: mk(&ak, &a_peers, false),
            b: mk(&bk, &b_peers, false),
            keys: [hk.public_key(), ak.public_key(), bk.public_key()],
            a_to_b,
            b_to_a,
            delivered: Vec::new(),
            scratch: Vec::new(),
            events: Vec::new(),
        }
    }

    fn agent(&mut self, i: usize) -> &mut Traversal {
        match i {
            0 => &mut self.hub,
            1 => &mut self.a,
            _ => &mut self.b,
        }
    }

    /// Moves every queued packet until the network is quiet.
    fn deliver(&mut self) {
        let public = [addr(HUB), addr(A_PUB), addr(B_PUB)];
        loop {
            let mut moved = false;
            for from in 0..3 {
                while let Some(t) = self.agent(from).poll_transmit() {
                    moved = true;
                    let (dst, payload) = (t.dst, t.payload.to_vec());
                    let Some(to) = public.iter().position(|p| *p == dst) else {
                        continue;
                    };
                    let allowed = match (from, to) {
                        (1, 2) => self.a_to_b,
                        (2, 1) => self.b_to_a,
                        _ => true,
                    };
                    if !allowed {
                        continue;
                    }
                    let (now, wall) = (self.now, self.wall);
                    let mut rng = TestRng(self.rng.0.wrapping_add(from as u64 * 31 + 1));
                    self.rng.0 = self.rng.0.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let src = public[from];
                    let mut scratch = std::mem::take(&mut self.scratch);
                    if let Ok(Some(r)) = self.agent(to).handle_input(
                        src,
                        &payload,
                        &mut scratch,
                        now,
                        wall,
                        &mut rng,
                    ) {
                        self.delivered.push((to, r.from, r.datagram.to_vec()));
                    }
                    self.scratch = scratch;
                }
                while let Some(e) = self.agent(from).poll_event() {
                    self.events.push((from, e));
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Runs the clock to `until`, servicing every agent's timers.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.deliver();
            let next = [
                self.hub.poll_timeout(),
                self.a.poll_timeout(),
                self.b.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until);
            if next > until {
                break;
            }
            let step = next.saturating_duration_since(self.now);
            self.now = self.now.max(next);
            self.wall += step;
            let (now, wall) = (self.now, self.wall);
            for i in 0..3 {
                let mut rng = TestRng(self.rng.0 ^ (i as u64 + 99));
                self.rng.0 = self.rng.0.wrapping_add(0x9e37_79b9);
                self.agent(i).handle_timeout(now, wall, &mut rng);
            }
        }
        let step = until.saturating_duration_since(self.now);
        self.now = self.now.max(until);
        self.wall += step;
        self.deliver();
    }
}

#[test]
fn open_paths_go_direct_within_a_round_trip_or_two() {
    let mut s = Sim::new(true, true);
    let t0 = s.now;
    s.run_until(t0 + Duration::from_secs(2));
    let (a_key, b_key) = (s.keys[1], s.keys[2]);
    let (path, ttd) = s.a.path(&b_key).expect("a punches to b");
    assert_eq!(path, Path::Direct(addr(B_PUB)));
    assert!(ttd.expect("time to direct") < Duration::from_secs(2));
    assert_eq!(
        s.b.path(&a_key).map(|p| p.0),
        Some(Path::Direct(addr(A_PUB)))
    );
    // The hub saw both registrations and put the reflexive address first.
    assert_eq!(s.a.remote_candidates(&b_key).first(), Some(&addr(B_PUB)));
    // Nobody fell back to the relay.
    assert!(s
        .events
        .iter()
        .all(|(_, e)| matches!(e.path, Path::Direct(_))));
    // Keepalives hold it for minutes.
    s.run_until(t0 + Duration::from_secs(300));
    assert_eq!(
        s.a.path(&b_key).map(|p| p.0),
        Some(Path::Direct(addr(B_PUB)))
    );
}

#[test]
fn one_way_filtering_still_punches_through_from_the_other_side() {
    // A's packets reach B, B's do not reach A until A has sent to B (port-restricted NAT at A,
    // open at B): A's probes open A's NAT, B's acks then come back.
    let mut s = Sim::new(true, false);
    let t0 = s.now;
    s.run_until(t0 + Duration::from_secs(2));
    // With B→A blocked entirely, acks never reach A, but B's acks for A's probes do not need
    // B→A in this model either, so A stays undecided while B sees A's probes.
    let (a_key, b_key) = (s.keys[1], s.keys[2]);
    assert_eq!(s.b.path(&a_key).map(|p| p.0), Some(Path::Unknown));
    s.b_to_a = true; // A's probes opened A's NAT for B.
    s.run_until(t0 + Duration::from_secs(3));
    assert_eq!(
        s.a.path(&b_key).map(|p| p.0),
        Some(Path::Direct(addr(B_PUB)))
    );
    assert_eq!(
        s.b.path(&a_key).map(|p| p.0),
        Some(Path::Direct(addr(A_PUB)))
    );
}

#[test]
fn blocked_pairs_fall_back_to_the_relay_and_move_to_direct_later() {
    let mut s = Sim::new(false, false);
    let t0 = s.now;
    let (a_key, b_key) = (s.keys[1], s.keys[2]);
    s.run_until(t0 + Duration::from_millis(4900));
    assert_eq!(s.a.path(&b_key).map(|p| p.0), Some(Path::Unknown));
    s.run_until(t0 + Duration::from_secs(6));
    assert_eq!(s.a.path(&b_key).map(|p| p.0), Some(Path::Relayed));
    assert_eq!(s.b.path(&a_key).map(|p| p.0), Some(Path::Relayed));
    let relay_ev = s
        .events
        .iter()
        .find(|(i, e)| *i == 1 && e.path == Path::Relayed)
        .expect("relay event for a");
    assert!(is_relay_address(&relay_ev.1.endpoint));
    assert_eq!(s.a.relay_peer(&relay_ev.1.endpoint), Some(b_key));

    // A WireGuard datagram A→B goes through the hub and comes out at B, from A.
    let (wall, mut rng) = (s.wall, TestRng(5));
    assert!(s.a.relay(&b_key, &[4, 0, 0, 0, 42], wall, &mut rng));
    s.deliver();
    assert_eq!(s.delivered, vec![(2, a_key, vec![4, 0, 0, 0, 42])]);
    assert_eq!(s.hub.counters().relayed_for_peers, 1);

    // A relay frame recorded on the wire and sent again is refused by the hub.
    assert!(s.a.relay(&b_key, &[4, 0, 0, 0, 43], wall, &mut rng));
    let frame = s.a.poll_transmit().expect("frame").payload.to_vec();
    let (now, wall) = (s.now, s.wall);
    let mut scratch = Vec::new();
    assert!(s
        .hub
        .handle_input(addr(A_PUB), &frame, &mut scratch, now, wall, &mut rng)
        .is_ok());
    assert!(matches!(
        s.hub
            .handle_input(addr(A_PUB), &frame, &mut scratch, now, wall, &mut rng),
        Err(TraversalError::Packet(PacketError::Replayed))
    ));

    // Background probing finds the path once the NATs let it through.
    s.a_to_b = true;
    s.b_to_a = true;
    s.run_until(t0 + Duration::from_secs(70));
    assert_eq!(
        s.a.path(&b_key).map(|p| p.0),
        Some(Path::Direct(addr(B_PUB)))
    );
    assert_eq!(
        s.b.path(&a_key).map(|p| p.0),
        Some(Path::Direct(addr(A_PUB)))
    );
}

#[test]
fn unknown_keys_and_non_rendezvous_senders_are_refused() {
    let mut s = Sim::new(true, true);
    let (now, wall, mut rng) = (s.now, s.wall, TestRng(3));
    let mut scratch = Vec::new();
    let stranger = PrivateKey::from_bytes([66; 32]);
    let key = PairKey::derive(
        &stranger.to_static_secret(),
        &stranger.public_key(),
        &s.keys[0],
    );
    let bytes = key.seal(
        &stranger.public_key(),
        1,
        [0; 24],
        &Body::RelayTo {
            peer: s.keys[2],
            datagram: &[1],
        },
    );
    assert!(matches!(
        s.hub
            .handle_input(addr(A_PUB), &bytes, &mut scratch, now, wall, &mut rng),
        Err(TraversalError::Packet(PacketError::UnknownKey(_)))
    ));
    // B (not the rendezvous) telling A where "b" is: refused.
    let ab = PairKey::derive(
        &PrivateKey::from_bytes([12; 32]).to_static_secret(),
        &s.keys[2],
        &s.keys[1],
    );
    let lie = ab.seal(
        &s.keys[2],
        5,
        [1; 24],
        &Body::PeerCandidates {
            peer: s.keys[2],
            candidates: vec![],
        },
    );
    assert!(matches!(
        s.a.handle_input(addr(B_PUB), &lie, &mut scratch, now, wall, &mut rng),
        Err(TraversalError::Unexpected(_))
    ));
    // A non-rendezvous gateway relays nothing.
    let relay = ab.seal(
        &s.keys[2],
        6,
        [2; 24],
        &Body::RelayTo {
            peer: s.keys[0],
            datagram: &[1],
        },
    );
    assert!(s
        .a
        .handle_input(addr(B_PUB), &relay, &mut scratch, now, wall, &mut rng)
        .is_err());
    assert!(s.a.poll_transmit().is_none() || s.a.poll_transmit().is_none());
}

//! Client ↔ access point on a virtual clock, over the real lease pool (memory store) and the real
//! data-plane peer table.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Access;
use crate::config::GatewayConfig;
use crate::control::client::{ClientConfig, ControlClient, Event};
use crate::control::tests::{rng, TestRng};
use crate::gateway::{Gateway, Sink};
use crate::keys::{write_secret_file, PrivateKey};
use crate::lease::MemoryStore;

const GATEWAY_ADDR: &str = "198.51.100.1:51820";

#[derive(Default)]
struct Outbox(Vec<(SocketAddr, Vec<u8>)>);

impl Sink for Outbox {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) {
        self.0.push((dst, datagram.to_vec()));
    }
    fn write_tun(&mut self, _packet: &[u8]) {}
}

struct World {
    dir: PathBuf,
    config: GatewayConfig,
    gateway: Gateway,
    access: Option<Access<MemoryStore>>,
    now: Instant,
    wall: SystemTime,
    rng: TestRng,
}

fn client_key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

/// The key of client number `n` of a large population.
fn many_key(n: u32) -> PrivateKey {
    let mut bytes = [0x99; 32];
    bytes[1..5].copy_from_slice(&n.to_le_bytes()); // byte 0 is clamped
    PrivateKey::from_bytes(bytes)
}

fn client_block(name: &str, n: u8, fixed: Option<&str>) -> String {
    block(name, &client_key(n), fixed)
}

fn block(name: &str, key: &PrivateKey, fixed: Option<&str>) -> String {
    let fixed = fixed
        .map(|a| format!("fixed_address = \"{a}\"\n"))
        .unwrap_or_default();
    format!(
        "[[client]]\nname = \"{name}\"\npublic_key = \"{}\"\n{fixed}",
        key.public_key().to_base64()
    )
}

impl World {
    /// A gateway whose pool has two addresses (10.77.100.2–.3) and a fixed one for "fixed" (.4).
    fn new() -> Self {
        let clients: String = (1..=3)
            .map(|n| client_block(&format!("c{n}"), n, None))
            .chain([client_block("fixed", 4, Some("10.77.100.4"))])
            .collect();
        Self::with(
            "ranges = [\"10.77.100.0/29\"]\nexclude = [\"10.77.100.5-10.77.100.7\"]",
            &clients,
        )
    }

    /// A gateway with `pool` lines (ranges, exclusions) and `clients` (`[[client]]` blocks).
    fn with(pool: &str, clients: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sitelink-access-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let gw_key = PrivateKey::from_bytes([0x42; 32]);
        write_secret_file(&dir.join("gw.key"), &format!("{}\n", gw_key.to_base64()))
            .expect("key file");
        let text = format!(
            "[interface]\nname = \"sl0\"\nprivate_key_file = \"gw.key\"\nlisten_port = 51820\n\
             address = [\"10.77.100.1/24\"]\n\
             [pool]\n{pool}\nlease_time = 60\nroutes = [\"192.168.10.0/24\"]\nstore = \"leases.db\"\n\
             {clients}"
        );
        let config = GatewayConfig::parse(&text, &dir.join("gw.toml"))
            .unwrap_or_else(|e| panic!("config: {e}"));
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut gateway = Gateway::new(gw_key, now);
        let access = Access::new(&config, MemoryStore::new(), &mut gateway, now, wall)
            .unwrap_or_else(|e| panic!("access: {e}"));
        Self {
            dir,
            config,
            gateway,
            access: Some(access),
            now,
            wall,
            rng: rng(7),
        }
    }

    fn access(&mut self) -> &mut Access<MemoryStore> {
        self.access.as_mut().expect("gateway up")
    }

    fn client(&self, n: u8) -> ControlClient {
        let cfg = ClientConfig::new(
            client_key(n),
            self.gateway.public_key(),
            GATEWAY_ADDR.parse().expect("addr"),
        );
        ControlClient::new(cfg, self.now)
    }

    fn src(n: u8) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, 2], 40_000 + u16::from(n)))
    }

    /// Moves datagrams between `client` (at `src(n)`) and the gateway until quiet; returns the
    /// client's events.
    fn settle(&mut self, n: u8, client: &mut ControlClient) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let mut moved = false;
            while let Some(t) = client.poll_transmit() {
                moved = true;
                let mut out = Outbox::default();
                let (now, wall) = (self.now, self.wall);
                let access = self.access.as_mut().expect("gateway up");
                let _ = access.handle_datagram(
                    Self::src(n),
                    &t.contents,
                    now,
                    wall,
                    &mut self.rng,
                    &mut self.gateway,
                    &mut out,
                );
                for (dst, bytes) in out.0 {
                    assert_eq!(dst, Self::src(n));
                    let _ = client.handle_input(&bytes, self.now, self.wall, &mut self.rng);
                }
            }
            while let Some(e) = client.poll_event() {
                events.push(e);
            }
            if !moved {
                return events;
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.wall += by;
        let mut out = Outbox::default();
        let (now, wall) = (self.now, self.wall);
        if let Some(access) = self.access.as_mut() {
            access.handle_timeout(now, wall, &mut self.gateway, &mut out);
        }
    }

    fn bind(&mut self, n: u8, client: &mut ControlClient) -> Option<Ipv4Addr> {
        for _ in 0..20 {
            client.handle_timeout(self.now, self.wall, &mut self.rng);
            for e in self.settle(n, client) {
                if let Event::Bound(b) = e {
                    return Some(b.lease.address);
                }
            }
            self.advance(Duration::from_secs(1));
        }
        None
    }

    /// Sends a fresh client's handshake initiation from `src`; returns how many datagrams the
    /// gateway answered with.
    fn send_init(&mut self, key: PrivateKey, src: SocketAddr) -> usize {
        let gateway_addr: SocketAddr = GATEWAY_ADDR.parse().expect("addr");
        let cfg = ClientConfig::new(key, self.gateway.public_key(), gateway_addr);
        let mut c = ControlClient::new(cfg, self.now);
        c.handle_timeout(self.now, self.wall, &mut self.rng);
        let init = c.poll_transmit().expect("handshake initiation");
        let mut out = Outbox::default();
        let (now, wall) = (self.now, self.wall);
        let access = self.access.as_mut().expect("up");
        let _ = access.handle_datagram(
            src,
            &init.contents,
            now,
            wall,
            &mut self.rng,
            &mut self.gateway,
            &mut out,
        );
        out.0.len()
    }

    fn peer_ips(&self, n: u8) -> Option<Vec<String>> {
        let key = client_key(n).public_key();
        self.gateway
            .status()
            .peers
            .into_iter()
            .find(|p| p.public_key == key)
            .map(|p| p.allowed_ips.iter().map(ToString::to_string).collect())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn fixed_client_is_a_peer_before_any_lease() {
    let w = World::new();
    assert_eq!(w.peer_ips(4), Some(vec!["10.77.100.4/32".to_owned()]));
    assert_eq!(w.peer_ips(1), None);
    assert_eq!(w.gateway.peer_count(), 1);
}

#[test]
fn lease_adds_a_peer_and_release_removes_it() {
    let mut w = World::new();
    let mut c1 = w.client(1);
    let address = w.bind(1, &mut c1).expect("c1 bound");
    assert_eq!(w.peer_ips(1), Some(vec![format!("{address}/32")]));
    let status = w.gateway.status();
    let peer = status
        .peers
        .iter()
        .find(|p| p.public_key == client_key(1).public_key())
        .expect("peer");
    assert_eq!(peer.endpoint, Some(World::src(1)));

    c1.release(w.now, w.wall, &mut w.rng);
    let events = w.settle(1, &mut c1);
    assert!(events.iter().any(|e| matches!(e, Event::Released { .. })));
    assert_eq!(w.peer_ips(1), None);
    assert_eq!(w.access().counters().leases_released, 1);
}

#[test]
fn fixed_client_keeps_its_peer_through_lease_and_release() {
    let mut w = World::new();
    let mut c4 = w.client(4);
    assert_eq!(w.bind(4, &mut c4), Some(Ipv4Addr::new(10, 77, 100, 4)));
    assert_eq!(w.gateway.peer_count(), 1);
    c4.release(w.now, w.wall, &mut w.rng);
    w.settle(4, &mut c4);
    assert_eq!(w.peer_ips(4), Some(vec!["10.77.100.4/32".to_owned()]));
}

#[test]
fn expired_lease_removes_the_peer_and_frees_the_address() {
    let mut w = World::new();
    let mut c1 = w.client(1);
    let mut c2 = w.client(2);
    let a1 = w.bind(1, &mut c1).expect("c1");
    let a2 = w.bind(2, &mut c2).expect("c2");
    assert_ne!(a1, a2);
    // The pool (.2, .3) is full: c3 is refused.
    let mut c3 = w.client(3);
    assert_eq!(w.bind(3, &mut c3), None);
    // c1 goes silent (never renews): after its lease the peer is gone and c3 gets an address.
    drop(c1);
    for _ in 0..70 {
        c2.handle_timeout(w.now, w.wall, &mut w.rng);
        w.settle(2, &mut c2);
        w.advance(Duration::from_secs(1));
    }
    assert_eq!(w.peer_ips(1), None, "expired lease must remove the peer");
    assert_eq!(w.peer_ips(2), Some(vec![format!("{a2}/32")]), "c2 renewed");
    assert!(w.access().counters().leases_expired >= 1);
    let mut c3 = w.client(3);
    assert_eq!(w.bind(3, &mut c3), Some(a1));
}

#[test]
fn restart_restores_leased_peers_from_the_store() {
    let mut w = World::new();
    let mut c1 = w.client(1);
    let a1 = w.bind(1, &mut c1).expect("c1");
    // "kill -9": the gateway's memory is gone, the store stays.
    let store = w.access.take().expect("up").into_store();
    let mut gateway = Gateway::new(PrivateKey::from_bytes([0x42; 32]), w.now);
    let access = Access::new(&w.config, store, &mut gateway, w.now, w.wall).expect("restart");
    w.gateway = gateway;
    w.access = Some(access);
    assert_eq!(w.peer_ips(1), Some(vec![format!("{a1}/32")]));
    let wall = w.wall;
    let rows = w.access().leases(wall);
    assert_eq!(rows.iter().filter(|r| r.entry.address == a1).count(), 1);
    // A new client does not get c1's address.
    let mut c2 = w.client(2);
    let a2 = w.bind(2, &mut c2).expect("c2");
    assert_ne!(a1, a2);
}

/// Runs `count` clients at once against a pool of `pool` lines: every client's datagrams are
/// interleaved with everyone else's (round-robin, in a shuffled order each round, with every
/// other round's first datagram of each client held back one round). Returns the addresses
/// bound, by client, after checking that no address went to two clients.
fn stampede(count: u32, pool: &str) -> (World, Vec<Option<Ipv4Addr>>) {
    let clients: String = (0..count)
        .map(|n| block(&format!("w{n}"), &many_key(n), None))
        .collect();
    let mut w = World::with(pool, &clients);
    let gateway_addr: SocketAddr = GATEWAY_ADDR.parse().expect("addr");
    let mut clients: Vec<ControlClient> = (0..count)
        .map(|n| {
            let cfg = ClientConfig::new(many_key(n), w.gateway.public_key(), gateway_addr);
            ControlClient::new(cfg, w.now)
        })
        .collect();
    // Each client behind its own home router (a crowd behind one address would meet the
    // per-source limit under load, by design).
    let src = |n: u32| {
        let [_, _, hi, lo] = n.to_be_bytes();
        SocketAddr::from(([100, 64, hi, lo], 40_000))
    };
    let mut bound: Vec<Option<Ipv4Addr>> = vec![None; count as usize];
    let mut order: Vec<u32> = (0..count).collect();
    let mut held: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut shuffle = rng(99);
    let mut last_progress = 0;
    for round in 0..40 {
        let done = bound.iter().flatten().count();
        if done == count as usize {
            break;
        }
        if done > last_progress {
            last_progress = done;
        } else if round > 12 {
            break; // nothing moved for a while: the pool is full
        }
        for c in &mut clients {
            c.handle_timeout(w.now, w.wall, &mut w.rng);
        }
        // Fisher–Yates with the test RNG.
        for i in (1..order.len()).rev() {
            let j = (rand_core::RngCore::next_u64(&mut shuffle) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut inbound: Vec<(u32, Vec<u8>)> = std::mem::take(&mut held);
        for &n in &order {
            while let Some(t) = clients[n as usize].poll_transmit() {
                inbound.push((n, t.contents));
            }
        }
        let mut replies: Vec<(u32, Vec<u8>)> = Vec::new();
        for (n, bytes) in inbound {
            let mut out = Outbox::default();
            let (now, wall) = (w.now, w.wall);
            let access = w.access.as_mut().expect("up");
            let _ = access.handle_datagram(
                src(n),
                &bytes,
                now,
                wall,
                &mut w.rng,
                &mut w.gateway,
                &mut out,
            );
            replies.extend(out.0.into_iter().map(|(_, b)| (n, b)));
        }
        for (i, (n, bytes)) in replies.into_iter().enumerate() {
            if round % 2 == 0 && i % 7 == 0 {
                held.push((n, bytes)); // delivered late: a reply to a retransmission's predecessor
                continue;
            }
            let _ = clients[n as usize].handle_input(&bytes, w.now, w.wall, &mut w.rng);
        }
        for (n, c) in clients.iter_mut().enumerate() {
            while let Some(e) = c.poll_event() {
                if let Event::Bound(b) = e {
                    bound[n] = Some(b.lease.address);
                }
            }
        }
        w.advance(Duration::from_millis(1500));
    }
    let mut owners: HashMap<Ipv4Addr, u32> = HashMap::new();
    for (n, a) in bound.iter().enumerate() {
        if let Some(a) = a {
            if let Some(other) = owners.insert(*a, n as u32) {
                panic!("{a} bound by clients {other} and {n}");
            }
        }
    }
    // The pool and the data plane agree with what the clients think they hold.
    let wall = w.wall;
    let rows = w.access().leases(wall);
    let mut seen = HashSet::new();
    for r in &rows {
        assert!(
            seen.insert(r.entry.address),
            "{} listed twice",
            r.entry.address
        );
    }
    (w, bound)
}

#[test]
fn ten_thousand_concurrent_clients_never_share_an_address() {
    // A /18 has room for everyone.
    let (w, bound) = stampede(10_000, "ranges = [\"10.77.0.0/18\"]");
    let got = bound.iter().flatten().count();
    assert_eq!(got, 10_000, "every client should be bound");
    assert_eq!(w.gateway.peer_count(), 10_000);
}

#[test]
fn a_crowd_larger_than_the_pool_fills_it_without_sharing() {
    // 254 usable addresses (minus the gateway's own), 600 clients.
    let (w, bound) = stampede(600, "ranges = [\"10.77.100.0/24\"]");
    let got = bound.iter().flatten().count();
    let size = usize::try_from(w.access.as_ref().expect("up").pool().size()).unwrap_or(0);
    assert_eq!(got, size, "the pool should be filled exactly");
    assert_eq!(w.gateway.peer_count(), size);
}

#[test]
fn per_source_limit_applies_only_under_load() {
    let clients: String = (0..150)
        .map(|n| block(&format!("w{n}"), &many_key(n), None))
        .collect();
    let mut w = World::with("ranges = [\"10.77.0.0/22\"]", &clients);
    let one_nat = SocketAddr::from(([203, 0, 113, 9], 40_000));
    let answered: usize = (0..150).map(|n| w.send_init(many_key(n), one_nat)).sum();
    // The first HANDSHAKES_BEFORE_LIMIT are taken from anyone; then this address gets its burst.
    let limited = w.access().counters().handshakes_rate_limited;
    assert_eq!(answered as u64 + limited, 150);
    assert!(
        (40..=45).contains(&limited),
        "expected about 150 - 100 - burst limited, got {limited}"
    );
    // A second later the gateway is no longer under load: the same address is answered again.
    w.advance(Duration::from_secs(2));
    assert_eq!(w.send_init(many_key(0), one_nat), 1);
}

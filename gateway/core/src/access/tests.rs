//! Client ↔ access point on a virtual clock, over the real lease pool (memory store) and the real
//! data-plane peer table.

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

impl World {
    /// A gateway whose pool has two addresses (10.77.100.2–.3) and a fixed one for "fixed" (.4).
    fn new() -> Self {
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
             [pool]\nranges = [\"10.77.100.0/29\"]\nexclude = [\"10.77.100.5-10.77.100.7\"]\n\
             lease_time = 60\nroutes = [\"192.168.10.0/24\"]\nstore = \"leases.db\"\n\
             [[client]]\nname = \"c1\"\npublic_key = \"{}\"\n\
             [[client]]\nname = \"c2\"\npublic_key = \"{}\"\n\
             [[client]]\nname = \"c3\"\npublic_key = \"{}\"\n\
             [[client]]\nname = \"fixed\"\npublic_key = \"{}\"\nfixed_address = \"10.77.100.4\"\n",
            client_key(1).public_key().to_base64(),
            client_key(2).public_key().to_base64(),
            client_key(3).public_key().to_base64(),
            client_key(4).public_key().to_base64(),
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

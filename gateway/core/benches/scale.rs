//! Many peers: how long a gateway with 10 000 peers takes to load its config and build its peer
//! table, and how much heap one idle peer costs.
//!
//! `cargo bench -p sitelink-core --bench scale` (prints a small table; `SCALE_PEERS=N` to change
//! the count). Heap is counted by a wrapping global allocator, so the figure is exact for this
//! process: config structures plus the data plane's per-peer state (boringtun `Tunn`, routes).
//!
//! Then the control server with as many sessions (`SCALE_SESSIONS=N`, default 10 000, one
//! handshake each, 1 ms apart): the cost of `poll_timeout`, which the gateway's event loop asks
//! on every wake-up, and of a `handle_timeout` with nothing due.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use rand_core::OsRng;

use sitelink_core::config::GatewayConfig;
use sitelink_core::control::client::{ClientConfig, ControlClient};
use sitelink_core::control::server::{AuthorizedClient, ControlServer, ServerConfig};
use sitelink_core::gateway::{Gateway, Sink};
use sitelink_core::keys::{write_secret_file, PrivateKey, PublicKey};
use sitelink_core::lease::{AddressAuthority, LeaseInfo, Refusal};
use sitelink_core::peer::PeerSpec;

#[path = "../tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{live_bytes as live, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

fn key(n: u32) -> PrivateKey {
    let mut bytes = [0x5a; 32];
    bytes[1..5].copy_from_slice(&n.to_le_bytes());
    PrivateKey::from_bytes(bytes)
}

struct NullSink;

impl Sink for NullSink {
    fn send_to(&mut self, _dst: SocketAddr, _datagram: &[u8]) {}
    fn write_tun(&mut self, _packet: &[u8]) {}
}

/// A minimal IPv4 header (20 bytes, no payload) to `dst`.
fn ipv4_packet(dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[3] = 20;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&dst);
    p
}

fn main() {
    let peers: u32 = std::env::var("SCALE_PEERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("sitelink-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let own = PrivateKey::from_bytes([0x42; 32]);
    write_secret_file(&dir.join("gw.key"), &format!("{}\n", own.to_base64())).expect("key");

    // The fixture: a config with `peers` site peers, each with a /32 and a /24 behind it.
    let mut text = String::from(
        "[interface]\nname = \"sl0\"\nprivate_key_file = \"gw.key\"\nlisten_port = 51820\naddress = [\"10.0.0.1/8\"]\n",
    );
    for n in 0..peers {
        let [_, a, b, c] = n.to_be_bytes();
        let _ = write!(
            text,
            "[[peer]]\nname = \"site-{n}\"\npublic_key = \"{}\"\nendpoint = \"198.51.{}.{}:51820\"\n\
             allowed_ips = [\"10.{a}.{b}.{c}/32\", \"100.{}.{}.0/24\"]\n",
            key(n).public_key().to_base64(),
            100 + (n / 250) % 100,
            1 + n % 250,
            64 + (n >> 8) % 64,
            n & 0xff,
        );
    }
    let path = dir.join("gw.toml");
    std::fs::write(&path, &text).expect("write config");

    let before = live();
    let t0 = Instant::now();
    let config = GatewayConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let parsed = t0.elapsed();
    let after_config = live();

    let t1 = Instant::now();
    let mut gateway = Gateway::new(config.interface.private_key.clone(), t1);
    for p in &config.peers {
        gateway.add_peer(PeerSpec::from(p)).expect("add peer");
    }
    let built = t1.elapsed();
    let after_gateway = live();
    assert_eq!(gateway.peer_count(), peers as usize);

    let per = |bytes: isize| bytes as f64 / f64::from(peers);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("peers: {peers}");
    println!(
        "config load:   {:8.1} ms   {:7.0} B/peer (parsed config kept in memory)",
        ms(parsed),
        per(after_config - before)
    );
    println!(
        "peer table:    {:8.1} ms   {:7.0} B/peer (idle peers: spec, routes, indices)",
        ms(built),
        per(after_gateway - after_config)
    );
    println!(
        "start-up core: {:8.1} ms   (config + peer table; the daemon adds TUN, routes, socket)",
        ms(parsed + built)
    );
    // Peers that talk: every one gets its WireGuard state machine (a routed packet makes it).
    let t2 = Instant::now();
    let mut sink = NullSink;
    for n in 0..peers {
        let [_, a, b, c] = n.to_be_bytes();
        gateway.handle_tun_packet(&ipv4_packet([10, a, b, c]), t2, &mut sink);
    }
    let woke = t2.elapsed();
    let after_active = live();
    println!(
        "all active:    {:8.1} ms   {:7.0} B/peer (after one packet to every peer)",
        ms(woke),
        per(after_active - after_config)
    );
    drop(gateway);
    drop(config);
    let _ = std::fs::remove_dir_all(&dir);
    control_sessions();
}

/// Refuses everything: the benchmark only makes handshakes, which never ask.
struct NoAddresses;

impl AddressAuthority for NoAddresses {
    fn offer(
        &mut self,
        _: &PublicKey,
        _: Option<Ipv4Addr>,
        _: SystemTime,
    ) -> Result<LeaseInfo, Refusal> {
        Err(Refusal::PoolExhausted)
    }
    fn request(&mut self, _: &PublicKey, _: Ipv4Addr, _: SystemTime) -> Result<LeaseInfo, Refusal> {
        Err(Refusal::PoolExhausted)
    }
    fn renew(&mut self, _: &PublicKey, _: Ipv4Addr, _: SystemTime) -> Result<LeaseInfo, Refusal> {
        Err(Refusal::PoolExhausted)
    }
    fn release(&mut self, _: &PublicKey, _: Ipv4Addr, _: SystemTime) -> Result<(), Refusal> {
        Err(Refusal::PoolExhausted)
    }
}

/// Mean time of one call of `f`, over enough calls to take about 0.2 s.
fn time_per_call(mut f: impl FnMut()) -> Duration {
    let mut calls = 1u32;
    loop {
        let t = Instant::now();
        for _ in 0..calls {
            f();
        }
        let took = t.elapsed();
        if took > Duration::from_millis(200) || calls >= 1 << 24 {
            return took / calls;
        }
        calls *= 4;
    }
}

fn control_sessions() {
    let sessions: u32 = std::env::var("SCALE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let gateway_key = PrivateKey::from_bytes([0x43; 32]);
    let gateway_addr = SocketAddr::from(([203, 0, 113, 1], 51_820));
    let keys: Vec<PrivateKey> = (0..sessions).map(|n| key(n + 1_000_000)).collect();
    let mut server = ControlServer::new(ServerConfig {
        private_key: gateway_key.clone(),
        clients: keys
            .iter()
            .map(|k| AuthorizedClient {
                key: k.public_key(),
                name: None,
            })
            .collect(),
        routes: Vec::new(),
        dns: Vec::new(),
    })
    .expect("valid server config");
    let start = Instant::now();
    let wall = SystemTime::now();
    let t = Instant::now();
    for (n, k) in keys.iter().enumerate() {
        let now = start + Duration::from_millis(n as u64);
        let config = ClientConfig::new(k.clone(), gateway_key.public_key(), gateway_addr);
        let mut client = ControlClient::new(config, now);
        client.handle_timeout(now, wall, &mut OsRng);
        let init = client.poll_transmit().expect("a handshake initiation");
        let [_, _, a, b] = (n as u32).to_be_bytes();
        let src = SocketAddr::from(([198, 51, a, b], 40_000));
        server
            .handle_input(src, &init.contents, now, wall, &mut OsRng, &mut NoAddresses)
            .expect("handshake accepted");
        while server.poll_transmit().is_some() {}
    }
    let built = t.elapsed();
    assert_eq!(server.session_count(), sessions as usize);
    let poll = time_per_call(|| {
        black_box(black_box(&server).poll_timeout());
    });
    let idle = time_per_call(|| server.handle_timeout(black_box(start)));
    println!(
        "control:       {sessions} sessions ({:.1} ms of handshakes); poll_timeout {:.0} ns, \
         handle_timeout with none due {:.0} ns",
        built.as_secs_f64() * 1e3,
        poll.as_secs_f64() * 1e9,
        idle.as_secs_f64() * 1e9,
    );
    assert_eq!(server.session_count(), sessions as usize);
}

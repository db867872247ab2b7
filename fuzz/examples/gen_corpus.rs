//! Writes the seed corpus under `corpus/<target>/` (run from `fuzz/`:
//! `cargo run --example gen_corpus`). Seeds are made with boringtun from the fixed keys in
//! `src/bodies.rs`, so they carry valid MACs for the fuzzed gateway. Ephemeral keys are random:
//! rerunning changes the binary seeds, so commit only when the set of seeds changes.

#[path = "../src/bodies.rs"]
mod bodies;

use std::net::IpAddr;
use std::path::Path;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use bodies::{
    record, GATEWAY_KEY, OP_DATAGRAM_FROM_OTHER, OP_DATAGRAM_FROM_PEER, OP_TIMER, OP_TUN_PACKET,
    PEER_KEY, PSK,
};

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let datagram = root.join("datagram");
    let config = root.join("config");
    std::fs::create_dir_all(&datagram)?;
    std::fs::create_dir_all(&config)?;
    for (name, bytes) in datagram_seeds() {
        std::fs::write(datagram.join(name), bytes)?;
    }
    for (name, text) in config_seeds() {
        std::fs::write(config.join(name), text)?;
    }
    Ok(())
}

fn out(r: TunnResult<'_>) -> Vec<u8> {
    match r {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("expected a datagram, got {other:?}"),
    }
}

fn datagram_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let gw_secret = StaticSecret::from(GATEWAY_KEY);
    let gw_public = PublicKey::from(&gw_secret);
    let peer_secret = StaticSecret::from(PEER_KEY);
    let peer_public = PublicKey::from(&peer_secret);
    let mut buf = vec![0u8; 2048];

    // The peer initiates to the gateway.
    let mut peer = Tunn::new(peer_secret.clone(), gw_public, Some(PSK), None, 5, None);
    let init_known = out(peer.format_handshake_initiation(&mut buf, false));

    // Someone the gateway does not know.
    let mut stranger = Tunn::new(
        StaticSecret::from([0x44; 32]),
        gw_public,
        None,
        None,
        9,
        None,
    );
    let init_unknown = out(stranger.format_handshake_initiation(&mut buf, false));

    // The gateway (simulated by a Tunn with its key and peer index 0) initiates; the peer
    // answers. The response is addressed to the gateway's first session index.
    let mut gw_side = Tunn::new(gw_secret, peer_public, Some(PSK), None, 0, None);
    let mut peer_side = Tunn::new(peer_secret, gw_public, Some(PSK), None, 7, None);
    let gw_init = out(gw_side.format_handshake_initiation(&mut buf, false));
    let response = out(peer_side.decapsulate(None, &gw_init, &mut buf));

    // A cookie reply to the gateway's initiation, from an overloaded peer.
    let limiter = RateLimiter::new(&peer_public, 0);
    let peer_ip: IpAddr = "198.51.100.2".parse().expect("address");
    let mut cookie_buf = vec![0u8; 256];
    let cookie = match limiter.verify_packet(Some(peer_ip), &gw_init, &mut cookie_buf) {
        Err(TunnResult::WriteToNetwork(c)) => c.to_vec(),
        _ => panic!("no cookie reply from a limiter with limit 0"),
    };

    // Finish that handshake and send a data packet from the peer's LAN.
    let keepalive = out(gw_side.decapsulate(None, &response, &mut buf));
    let _ = peer_side.decapsulate(None, &keepalive, &mut buf);
    let inner = ipv4([192, 168, 20, 10], [192, 168, 10, 10]);
    let data = out(peer_side.encapsulate(&inner, &mut buf));

    let to_lan_b = ipv4([192, 168, 10, 10], [192, 168, 20, 10]);
    let to_nowhere = ipv4([192, 168, 10, 10], [172, 16, 0, 1]);
    let v6 = ipv6();

    let mut sequence = Vec::new();
    sequence.extend(record(OP_DATAGRAM_FROM_PEER, 0, &init_known));
    sequence.extend(record(OP_TUN_PACKET, 0, &to_lan_b));
    sequence.extend(record(OP_TIMER, 50, &[]));
    sequence.extend(record(OP_DATAGRAM_FROM_OTHER, 3, &init_known));
    sequence.extend(record(OP_TUN_PACKET, 0, &v6));
    sequence.extend(record(OP_DATAGRAM_FROM_PEER, 0, &data));
    sequence.extend(record(OP_TIMER, 63, &[]));

    let mut from_others = Vec::new();
    from_others.extend(record(OP_DATAGRAM_FROM_OTHER, 1, &init_unknown));
    from_others.extend(record(OP_DATAGRAM_FROM_OTHER, 2, &cookie));
    from_others.extend(record(OP_DATAGRAM_FROM_OTHER, 2, &response));
    from_others.extend(record(OP_TUN_PACKET, 0, &to_nowhere));

    vec![
        ("init-known.bin", init_known),
        ("init-unknown.bin", init_unknown),
        ("response.bin", response),
        ("cookie-reply.bin", cookie),
        ("data.bin", data),
        ("tun-ipv4.bin", to_lan_b),
        ("tun-ipv6.bin", v6),
        ("short.bin", vec![4, 0, 0, 0, 1]),
        ("records-handshake-traffic.bin", sequence),
        ("records-others.bin", from_others),
    ]
}

/// A 28-byte IPv4/UDP packet (checksums zero; nothing on this path checks them).
fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&5000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5001u16.to_be_bytes());
    p[24..26].copy_from_slice(&8u16.to_be_bytes());
    p
}

/// A 48-byte IPv6/UDP packet to 2001:db8::2.
fn ipv6() -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&8u16.to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..10].copy_from_slice(&[0x20, 0x01]);
    p[10..12].copy_from_slice(&[0x0d, 0xb8]);
    p[23] = 1;
    p[24..26].copy_from_slice(&[0x20, 0x01]);
    p[26..28].copy_from_slice(&[0x0d, 0xb8]);
    p[39] = 2;
    p
}

fn config_seeds() -> Vec<(&'static str, String)> {
    let peer = |k: u8| {
        sitelink_core::keys::PrivateKey::from_bytes([k; 32])
            .public_key()
            .to_base64()
    };
    let full = format!(
        r#"# A config using every key.
[interface]
name = "sl0"
private_key_file = "fuzz.key"
listen_port = 51820
address = ["10.77.0.1/24", "fd00:77::1/64"]
mtu = 1420

[[peer]]
name = "office-b"
public_key = "{b}"
preshared_key_file = "fuzz.psk"
endpoint = "198.51.100.2:51820"
allowed_ips = ["10.77.0.2/32", "192.168.20.0/24"]
persistent_keepalive = 25

[[peer]]
name = "office-c"
public_key = "{c}"
endpoint = "[2001:db8::3]:51820"
allowed_ips = ["10.77.0.3/32", "fd00:30::/48"]
"#,
        b = peer(0x22),
        c = peer(0x55),
    );
    let minimal = "[interface]\nname = \"sl0\"\nprivate_key_file = \"fuzz.key\"\n\
                   listen_port = 51820\naddress = [\"10.77.0.1/24\"]\n"
        .to_owned();
    let errors = format!(
        r#"[interface]
name = "sl0"
private_key_file = "fuzz.key"
listen_port = 51820
address = ["10.77.0.1/24"]

[[peer]]
name = "office-b"
public_key = "{b}"
allowed_ips = ["192.168.20.0/33"]
unknown_key = true
"#,
        b = peer(0x22),
    );
    vec![
        ("full.toml", full),
        ("minimal.toml", minimal),
        ("errors.toml", errors),
    ]
}

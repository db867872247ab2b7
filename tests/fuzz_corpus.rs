//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets'
//! bodies, so plain `cargo test` covers them without cargo-fuzz or a nightly toolchain.
//!
//! The bodies live in `fuzz/src/bodies.rs` and are included here by path (the root package
//! does not depend on the fuzz crate, which has a workspace of its own). Crashes the fuzzer
//! finds belong in the corpus too, once fixed: copy `fuzz/artifacts/<target>/crash-*` into
//! `fuzz/corpus/<target>/`.

#[path = "../fuzz/src/bodies.rs"]
mod bodies;

use std::path::{Path, PathBuf};

/// Every file in `fuzz/corpus/<target>/`, sorted; fails if there are none.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Feeds every seed of `target` to `body`, naming each first (a panic then shows which).
fn replay(target: &str, mut body: impl FnMut(&[u8])) {
    for path in corpus(target) {
        eprintln!("{target}: {}", path.display());
        body(&read(&path));
    }
}

#[test]
fn datagram_corpus() {
    replay("datagram", |bytes| {
        let _ = bodies::datagram(bytes);
    });
}

/// The seeds were made with the fuzzed gateway's keys: the peer's initiation is answered (so
/// the fuzzer starts from inputs that reach the handshake, not just the MAC check), and the
/// recorded session's traffic goes out as a handshake first.
#[test]
fn seeds_reach_the_handshake() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/datagram");
    let init = bodies::datagram(&read(&dir.join("init-known.bin")));
    // One handshake response; the same bytes as a TUN packet are not IP.
    assert_eq!(init.sent, 1, "init-known.bin: {init:?}");
    let unknown = bodies::datagram(&read(&dir.join("init-unknown.bin")));
    assert_eq!(unknown.sent, 0, "init-unknown.bin: {unknown:?}");
    let sequence = bodies::datagram(&read(&dir.join("records-handshake-traffic.bin")));
    assert!(
        sequence.sent >= 2,
        "records-handshake-traffic.bin: {sequence:?}"
    );
}

#[test]
fn config_corpus() {
    let dir = KeyDir::new();
    replay("config", |bytes| bodies::config(bytes, &dir.0));
}

/// The seed configs parse: the replay reaches peer validation rather than stopping at a
/// missing key file.
#[test]
fn seed_configs_are_valid() {
    let dir = KeyDir::new();
    for name in ["full.toml", "minimal.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/config")
            .join(name);
        let text = String::from_utf8(read(&path)).expect("UTF-8 seed");
        if let Err(e) = sitelink_core::config::GatewayConfig::parse(&text, &dir.0.join("fuzz.toml"))
        {
            panic!("{name} does not parse: {e}");
        }
    }
}

#[test]
fn nat_corpus() {
    replay("nat", |bytes| {
        let _ = bodies::nat(bytes);
    });
}

/// The NAT seeds reach what they were written for: answers find their sessions, the forward
/// and the hairpin translate, the exhaustion seed is refused with ICMP errors.
#[test]
fn nat_seeds_reach_the_sessions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/nat");
    let run = |name: &str| bodies::nat(&read(&dir.join(name)));
    let udp = run("udp-flow.bin");
    // Out, the answer, out again; the late answer after expiry is not translated.
    assert_eq!(udp.translated, 3, "udp-flow.bin: {udp:?}");
    assert_eq!(udp.sessions, 0, "udp-flow.bin: {udp:?}");
    let tcp = run("tcp-flow.bin");
    assert!(tcp.translated >= 8, "tcp-flow.bin: {tcp:?}");
    let icmp = run("icmp.bin");
    assert!(icmp.translated >= 6, "icmp.bin: {icmp:?}");
    // The forward, its answer and the hairpin; the same client through the other pool
    // address is refused (the target already has that flow).
    let forward = run("forward-hairpin.bin");
    assert_eq!(forward.translated, 3, "forward-hairpin.bin: {forward:?}");
    let netmap = run("netmap.bin");
    assert_eq!(netmap.translated, 4, "netmap.bin: {netmap:?}");
    let exhaustion = run("exhaustion.bin");
    assert!(exhaustion.replies >= 4, "exhaustion.bin: {exhaustion:?}");
}

#[test]
fn stun_corpus() {
    replay("stun", |bytes| {
        let _ = bodies::stun(bytes);
    });
}

/// The STUN seeds carry the transaction the fuzzed client waits for.
#[test]
fn stun_seeds_reach_the_client() {
    use sitelink_core::stun::client::Input;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/stun");
    let run = |name: &str| bodies::stun(&read(&dir.join(name)));
    for name in ["success.bin", "success-other-address.bin", "error.bin"] {
        assert!(matches!(run(name), Input::Answered(_)), "{name}");
    }
    assert!(matches!(run("request.bin"), Input::Request(_)));
    assert_eq!(run("wireguard.bin"), Input::NotStun);
}

#[test]
fn traversal_corpus() {
    replay("traversal", |bytes| {
        let _ = bodies::traversal(bytes);
    });
}

/// The sealed seeds decode, and reach the rendezvous agent past the AEAD: a probe is answered,
/// a registration gets the other peer's candidates, a relay frame for a peer the hub has not
/// heard from is dropped quietly, and what only a hub may send is refused there.
#[test]
fn traversal_seeds_reach_the_agent() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/traversal");
    let run = |name: &str| bodies::traversal(&read(&dir.join(name)));
    let outcome = |accepted, transmits| bodies::TraversalOutcome {
        decoded: true,
        accepted,
        transmits,
    };
    assert_eq!(run("sealed-probe.bin"), outcome(true, 1));
    assert!(run("sealed-register.bin").transmits >= 1);
    assert!(run("sealed-register.bin").accepted);
    assert_eq!(run("sealed-relay-to.bin"), outcome(true, 0));
    assert_eq!(run("sealed-relay-from.bin"), outcome(false, 0));
    assert_eq!(run("sealed-peer-candidates.bin"), outcome(false, 0));
    let raw = run("raw-header-only.bin");
    assert!(!raw.decoded && !raw.accepted, "{raw:?}");
}

/// A temporary directory holding the key files the seed configs name; removed on drop.
struct KeyDir(PathBuf);

impl KeyDir {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sitelink-fuzz-corpus-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the key dir");
        bodies::write_key_files(&dir).expect("writing the key files");
        Self(dir)
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

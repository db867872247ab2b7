//! Bad input on a gateway's listen port, sent from an attacker on the simulated internet.
//!
//! Two offices with the tunnel up; an extra "attacker" namespace routed off the internet router
//! (203.0.113.0/24) sends, with `wg_load` (examples/wg_load.rs): corrupt datagrams, initiations
//! from keys the gateway does not know (with a valid mac1), a replayed initiation, and a flood of
//! garbage. After each: pings still cross the tunnel, `tcpdump` in the attacker namespace saw no
//! datagram from gateway A's port to the attack's source addresses, and the matching counter in
//! `status --json` went up.
//!
//! "Saw nothing" needs a barrier: after each attack a known peer ("probe") sends one valid
//! initiation and the test waits until the capture holds the gateway's response. The gateway
//! answers datagrams of its one socket in order, so any reply to the attack would have been
//! captured before it.
//!
//! A wrong pre-shared key is its own test: WireGuard's initiation does not involve the PSK, so a
//! responder cannot tell a wrong-PSK initiator from a good one and answers it (wg and
//! wireguard-go do the same). The side that can tell is the initiator, so there gateway A
//! initiates to a stock `wireguard-go` holding the wrong PSK: A must count the bad response
//! (`rx_auth_failed`), never complete the handshake, and send it nothing but initiations.
//!
//! Needs root, iproute2, /dev/net/tun, ping, tcpdump (and wireguard-go and wg for the PSK test);
//! skips with a printed reason without them. `wg_load` comes from `cargo build --examples`
//! (`tests/run-all.sh` builds all targets).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use common::bins::{self, KeyPair};
use common::config::PeerConfig;
use common::sites::{Options, LISTEN_PORT};
use common::status::Status;
use common::topology::{LAN_A_HOST, LAN_B_HOST, WAN_A};
use common::traffic::wait_ping;
use common::{must, skip_unless_root_and, unique_id, veth, wait_until, Daemon, Netns, TwoOffices};

const PING_TIMEOUT: Duration = Duration::from_secs(15);
const TOOLS: &[&str] = &["ping", "tcpdump"];

/// The attacker's network, routed by the internet router.
const ATTACKER_ROUTER: &str = "203.0.113.254";
/// The attacker's main address.
const ATTACKER: &str = "203.0.113.66";
/// The known peer whose handshake is the capture barrier.
const PROBE: &str = "203.0.113.5";
/// Where the replayed initiation is first sent from (a legitimate send).
const REPLAY_ORIGINAL: &str = "203.0.113.6";
/// The stock WireGuard responder with the wrong pre-shared key.
const WRONG_PSK_PEER: &str = "203.0.113.77";
/// Extra source addresses for floods: 203.0.113.10 ..
const FLOOD_FIRST: u8 = 10;
const FLOOD_SOURCES: u8 = 16;
/// Length of a WireGuard handshake response and initiation.
const RESPONSE_LEN: u64 = 92;
const INIT_LEN: u64 = 148;

#[test]
fn bad_input_gets_no_reply_and_is_counted() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let mut t = must(TwoOffices::new("bad-input", &Options::default()));
    let probe = must(add_probe_peer(&mut t));
    must(t.start());
    let atk = must(Attacker::new(&t));
    let capture = must(Capture::start(&atk.ns, &t.dir.join("attacker.pcap")));
    must(bad_input(&mut t, &atk, &capture, &probe));
}

fn bad_input(t: &mut TwoOffices, atk: &Attacker, cap: &Capture, probe: &KeyPair) -> Result<()> {
    wait_ping(&t.net.lan_a, LAN_B_HOST, PING_TIMEOUT).context("tunnel up before the attacks")?;
    let server = t.a.keys.public_key.clone();
    let target = format!("{WAN_A}:{LISTEN_PORT}");
    let mut probes = 0;
    let mut before = t.status_a()?;

    // 1. Corrupt datagrams: random bytes, valid initiations with a flipped byte, and messages of
    //    the right type and size with random contents aimed at office-b's session indices.
    let random = atk.wg_load(&format!(
        "garbage --target {target} --bind {ATTACKER} --kind random --count 20 --rate 200"
    ))?;
    let flipped = atk.wg_load(&format!(
        "garbage --target {target} --server-public-key {server} --bind {ATTACKER} \
         --kind flipped --count 3 --rate 10"
    ))?;
    let typed = atk.wg_load(&format!(
        "garbage --target {target} --bind {ATTACKER} --kind typed --peer-index 0 \
         --count 12 --rate 10"
    ))?;
    for summary in [&random, &flipped, &typed] {
        ensure_no_replies(summary)?;
    }
    let after = checkpoint(
        t,
        atk,
        cap,
        probe,
        &mut probes,
        &[ATTACKER],
        "corrupt datagrams",
    )?;
    ensure_grew(&before, &after, "rx_malformed", 20)?;
    ensure_grew(&before, &after, "rx_auth_failed", 3)?;
    let rejected = |s: &Status| {
        ["rx_malformed", "rx_auth_failed", "rx_unknown_peer"]
            .iter()
            .map(|c| s.counter(c).unwrap_or(0))
            .sum::<u64>()
    };
    ensure!(
        rejected(&after) >= rejected(&before) + 20 + 3 + 12,
        "not every corrupt datagram was counted as malformed, auth failed or unknown peer:\n\
         before: {}\nafter: {}",
        before.0["counters"],
        after.0["counters"]
    );
    before = after;

    // 2. Initiations from keys the gateway does not know (mac1 is valid: anyone can compute it).
    let unknown = atk.wg_load(&format!(
        "flood-init --target {target} --server-public-key {server} --bind {ATTACKER} \
         --count 3 --rate 10"
    ))?;
    ensure_no_replies(&unknown)?;
    let after = checkpoint(t, atk, cap, probe, &mut probes, &[ATTACKER], "unknown keys")?;
    ensure_grew(&before, &after, "rx_unknown_peer", 3)?;
    before = after;

    // 3. A replayed initiation: sent once from REPLAY_ORIGINAL (answered), then the same bytes
    //    three times from the attacker's address.
    let key = probe.private_key_file.display();
    let replay = atk.wg_load(&format!(
        "replay --target {target} --server-public-key {server} --private-key-file {key} \
         --bind {REPLAY_ORIGINAL} --replay-bind {ATTACKER} --replays 3"
    ))?;
    ensure!(
        replay["original_response"] == "valid",
        "the original initiation was not answered: {replay}"
    );
    ensure!(
        replay["replies_to_replays"]["total"] == 0,
        "the replays were answered: {replay}"
    );
    let after = checkpoint(
        t,
        atk,
        cap,
        probe,
        &mut probes,
        &[ATTACKER],
        "replayed initiation",
    )?;
    ensure_grew(&before, &after, "rx_replayed", 3)?;
    before = after;

    // 4. A flood of garbage from several addresses, while pings cross the tunnel.
    let sources = flood_sources();
    let args = format!(
        "garbage --target {target} --server-public-key {server} --kind mixed --count 15000 \
         --rate 3000 --duration 20 --bind {}",
        sources.join(" --bind ")
    );
    let out = t.dir.join("garbage-flood.out");
    let mut flood = atk.spawn_wg_load("garbage flood", &out, &args)?;
    wait_ping(&t.net.lan_a, LAN_B_HOST, PING_TIMEOUT).context("ping during the garbage flood")?;
    ensure!(
        flood.daemon.is_running(),
        "the flood ended before a ping got through during it; make it longer"
    );
    let flood = flood.finish(Duration::from_secs(60))?;
    ensure_no_replies(&flood)?;
    let source_refs: Vec<&str> = sources.iter().map(String::as_str).collect();
    let after = checkpoint(
        t,
        atk,
        cap,
        probe,
        &mut probes,
        &source_refs,
        "garbage flood",
    )?;
    ensure_grew(&before, &after, "rx_malformed", 1000)?;
    ensure_grew(&before, &after, "rx_auth_failed", 100)?;
    ensure_grew(&before, &after, "handshake_rate_limited", 100)?;

    // Nothing above moved office-b's endpoint.
    ensure!(
        after.endpoint("office-b").as_deref() == Some("198.51.100.2:51820"),
        "office-b's endpoint moved:\n{after}"
    );
    Ok(())
}

/// The end of one attack: the tunnel still carries pings, the probe's response shows up in the
/// capture (so every earlier reply would have too), nothing went to `sources`; returns A's status.
fn checkpoint(
    t: &mut TwoOffices,
    atk: &Attacker,
    cap: &Capture,
    probe: &KeyPair,
    probes: &mut usize,
    sources: &[&str],
    what: &str,
) -> Result<Status> {
    let ctx = || format!("after: {what}");
    wait_ping(&t.net.lan_a, LAN_B_HOST, PING_TIMEOUT).with_context(ctx)?;
    wait_ping(&t.net.lan_b, LAN_A_HOST, PING_TIMEOUT).with_context(ctx)?;
    t.ensure_running().with_context(ctx)?;

    let summary = atk.wg_load(&format!(
        "flood-init --target {WAN_A}:{LISTEN_PORT} --server-public-key {} \
         --private-key-file {} --bind {PROBE} --count 1 --linger-ms 3000",
        t.a.keys.public_key,
        probe.private_key_file.display()
    ))?;
    ensure!(
        summary["responses_valid"] == 1,
        "{}: the probe's initiation was not answered: {summary}",
        ctx()
    );
    *probes += 1;
    let want = *probes;
    let mut seen = 0;
    wait_until(
        Duration::from_secs(10),
        "the probe's response in the capture",
        || {
            seen = cap
                .packets()
                .map(|p| {
                    p.iter()
                        .filter(|p| p.dst == PROBE && p.len == RESPONSE_LEN)
                        .count()
                })
                .unwrap_or(0);
            seen >= want
        },
    )
    .with_context(|| format!("{}: {seen} of {want} probe responses captured", ctx()))?;

    let packets = cap.packets()?;
    let replies: Vec<&Packet> = packets
        .iter()
        .filter(|p| sources.contains(&p.dst.as_str()))
        .collect();
    let bytes: u64 = replies.iter().map(|p| p.len).sum();
    ensure!(
        replies.is_empty(),
        "{}: the gateway sent {} datagrams ({bytes} bytes) to the attacker: {replies:?}",
        ctx(),
        replies.len()
    );
    t.status_a()
}

fn ensure_no_replies(summary: &Value) -> Result<()> {
    ensure!(
        summary["net"]["replies"]["total"] == 0,
        "wg_load got replies: {summary}"
    );
    Ok(())
}

fn ensure_grew(before: &Status, after: &Status, counter: &str, at_least: u64) -> Result<()> {
    let b = before.counter(counter).context(counter.to_owned())?;
    let a = after.counter(counter).context(counter.to_owned())?;
    ensure!(
        a >= b + at_least,
        "counter {counter} went from {b} to {a}, expected at least +{at_least}; counters now: {}",
        after.0["counters"]
    );
    Ok(())
}

fn flood_sources() -> Vec<String> {
    (0..FLOOD_SOURCES)
        .map(|i| format!("203.0.113.{}", FLOOD_FIRST + i))
        .collect()
}

/// Adds peer "probe" (a key the test holds) to gateway A's config; returns its keys.
fn add_probe_peer(t: &mut TwoOffices) -> Result<KeyPair> {
    let probe = KeyPair::generate(&t.dir.join("probe.key"))?;
    t.a.config.peers.push(PeerConfig {
        name: "probe".to_owned(),
        public_key: probe.public_key.clone(),
        preshared_key_file: None,
        endpoint: None,
        allowed_ips: vec!["10.77.0.50/32".to_owned()],
        persistent_keepalive: None,
    });
    t.a.config.write(&t.a.config_path)?;
    Ok(probe)
}

// ---------------------------------------------------------------------------------------------
// Wrong pre-shared key

#[test]
fn wrong_preshared_key_is_rejected_and_answered_with_nothing() {
    if !skip_unless_root_and(&["ping", "tcpdump", "wireguard-go", "wg"]) {
        return;
    }
    let mut t = must(TwoOffices::new("wrong-psk", &Options::default()));
    let branch = must(add_wrong_psk_peer(&mut t));
    must(t.start());
    let atk = must(Attacker::new(&t));
    let capture = must(Capture::start(&atk.ns, &t.dir.join("attacker.pcap")));
    let wg = must(WireguardGo::start(&atk.ns, &t, &branch));
    must(wrong_psk(&mut t, &capture, &wg));
}

/// Keys for "branch-c": A holds `good.psk`, the wireguard-go responder `wrong.psk`.
struct Branch {
    keys: KeyPair,
    wrong_psk: PathBuf,
}

const BRANCH_NET: &str = "10.99.0.0/24";
const BRANCH_HOST: &str = "10.99.0.1";

fn add_wrong_psk_peer(t: &mut TwoOffices) -> Result<Branch> {
    let keys = KeyPair::generate(&t.dir.join("branch-c.key"))?;
    bins::generate_psk(&t.dir.join("good.psk"))?;
    let wrong_psk = t.dir.join("wrong.psk");
    bins::generate_psk(&wrong_psk)?;
    t.a.config.peers.push(PeerConfig {
        name: "branch-c".to_owned(),
        public_key: keys.public_key.clone(),
        preshared_key_file: Some(PathBuf::from("good.psk")),
        endpoint: Some(format!("{WRONG_PSK_PEER}:{LISTEN_PORT}")),
        allowed_ips: vec![BRANCH_NET.to_owned()],
        persistent_keepalive: None,
    });
    t.a.config.write(&t.a.config_path)?;
    Ok(Branch { keys, wrong_psk })
}

fn wrong_psk(t: &mut TwoOffices, cap: &Capture, wg: &WireguardGo) -> Result<()> {
    wait_ping(&t.net.lan_a, LAN_B_HOST, PING_TIMEOUT).context("tunnel up")?;
    let before = t.status_a()?;
    // Traffic for branch-c's prefix makes A initiate; wireguard-go answers with a response
    // keyed with the wrong PSK, which A must reject.
    wait_until(
        Duration::from_secs(30),
        "gateway A to reject a response from the wrong-PSK peer",
        || {
            let _ = t
                .net
                .lan_a
                .succeeds(&["ping", "-n", "-q", "-c", "1", "-W", "1", BRANCH_HOST]);
            t.status_a()
                .ok()
                .and_then(|s| s.counter("rx_auth_failed"))
                .is_some_and(|n| n > before.counter("rx_auth_failed").unwrap_or(0))
        },
    )?;
    ensure!(
        wg.handshake_attempted()?,
        "wireguard-go never saw gateway A's initiation"
    );
    let after = t.status_a()?;
    ensure!(
        after.latest_handshake_secs_ago("branch-c").is_none(),
        "the handshake with the wrong-PSK peer completed:\n{after}"
    );
    ensure!(
        !t.net
            .lan_a
            .succeeds(&["ping", "-n", "-q", "-c", "1", "-W", "1", BRANCH_HOST]),
        "a ping crossed a tunnel with a wrong pre-shared key"
    );
    wait_ping(&t.net.lan_a, LAN_B_HOST, PING_TIMEOUT).context("office tunnel after")?;
    t.ensure_running()?;

    // wireguard-go answers from whichever attacker address the kernel picks, so look at
    // everything A sent into the attacker namespace (nothing else there talks to A here).
    let packets = cap.packets()?;
    ensure!(
        packets
            .iter()
            .any(|p| p.dst == WRONG_PSK_PEER && p.len == INIT_LEN),
        "no initiation to the wrong-PSK peer captured: {packets:?}"
    );
    let replies: Vec<&Packet> = packets.iter().filter(|p| p.len != INIT_LEN).collect();
    ensure!(
        replies.is_empty(),
        "gateway A sent the wrong-PSK peer something besides initiations: {replies:?}"
    );
    Ok(())
}

/// Stock `wireguard-go` in the attacker namespace as branch-c, with the wrong PSK and no
/// endpoint (it only answers).
struct WireguardGo {
    ns_name: String,
    iface: String,
    daemon: Daemon,
}

impl WireguardGo {
    fn start(ns: &Netns, t: &TwoOffices, branch: &Branch) -> Result<Self> {
        // The UAPI socket is /var/run/wireguard/<iface>.sock on the shared filesystem: the
        // name must be unique on the host.
        let iface = format!("wg{}", unique_id());
        ensure!(iface.len() <= 15, "interface name {iface} too long");
        let mut cmd = ns.command("wireguard-go");
        cmd.env("WG_PROCESS_FOREGROUND", "1").args(["-f", &iface]);
        let mut daemon =
            Daemon::spawn_command("wireguard-go branch-c", &t.dir.join("wg-c.log"), cmd)?;
        let sock = wg_socket(&iface);
        wait_until(
            Duration::from_secs(10),
            "wireguard-go to create its TUN",
            || !daemon.is_running() || (ns.has_link(&iface) && sock.exists()),
        )?;
        daemon.ensure_running()?;
        let wg = Self {
            ns_name: ns.name().to_owned(),
            iface,
            daemon,
        };
        let key = branch.keys.private_key_file.to_string_lossy();
        let psk = branch.wrong_psk.to_string_lossy();
        let port = LISTEN_PORT.to_string();
        ns.run(&[
            "wg",
            "set",
            &wg.iface,
            "private-key",
            &key,
            "listen-port",
            &port,
            "peer",
            &t.a.keys.public_key,
            "preshared-key",
            &psk,
            "allowed-ips",
            "10.77.0.0/24",
        ])
        .context("wg set")?;
        ns.run(&[
            "ip",
            "addr",
            "add",
            &format!("{BRANCH_HOST}/24"),
            "dev",
            &wg.iface,
        ])?;
        ns.run(&["ip", "link", "set", &wg.iface, "up"])?;
        Ok(wg)
    }

    /// Whether wireguard-go has learned gateway A's endpoint (it got an initiation).
    fn handshake_attempted(&self) -> Result<bool> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "wg",
                "show",
                &self.iface,
                "endpoints",
            ])
            .output()
            .context("wg show endpoints")?;
        Ok(String::from_utf8_lossy(&out.stdout).contains(WAN_A))
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        if self.daemon.is_running() {
            self.daemon.signal(libc::SIGTERM);
            let _ = self.daemon.wait_exit(Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(wg_socket(&self.iface));
    }
}

fn wg_socket(iface: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{iface}.sock"))
}

// ---------------------------------------------------------------------------------------------
// The forged-response check

/// Anyone can compute mac1 for the gateway's key, and handshake *responses* bypass the
/// per-source limit on initiations. A stream of forged responses (random contents, valid mac1,
/// receiver index aimed at office-b's peer slot) from one address puts the gateway under load;
/// it must then still send the forger nothing and keep office-b's endpoint.
#[test]
fn forged_responses_get_no_reply_and_do_not_move_the_endpoint() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let mut t = must(TwoOffices::new("forged-resp", &Options::default()));
    let probe = must(add_probe_peer(&mut t));
    must(t.start());
    let atk = must(Attacker::new(&t));
    let capture = must(Capture::start(&atk.ns, &t.dir.join("attacker.pcap")));
    must(forged_responses(&mut t, &atk, &capture, &probe));
}

fn forged_responses(
    t: &mut TwoOffices,
    atk: &Attacker,
    cap: &Capture,
    probe: &KeyPair,
) -> Result<()> {
    wait_ping(&t.net.lan_a, LAN_B_HOST, PING_TIMEOUT).context("tunnel up")?;
    let target = format!("{WAN_A}:{LISTEN_PORT}");
    let summary = atk.wg_load(&format!(
        "garbage --target {target} --server-public-key {} --bind {ATTACKER} \
         --kind response-mac1 --peer-index 0 --count 1000 --rate 500",
        t.a.keys.public_key
    ))?;
    let status = t.status_a()?;
    ensure!(
        status.endpoint("office-b").as_deref() == Some("198.51.100.2:51820"),
        "forged responses moved office-b's endpoint: {:?}; wg_load: {summary}",
        status.endpoint("office-b")
    );
    ensure_no_replies(&summary)?;
    let mut probes = 0;
    checkpoint(
        t,
        atk,
        cap,
        probe,
        &mut probes,
        &[ATTACKER],
        "forged responses",
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers private to this test: the attacker namespace, wg_load, tcpdump.

/// A namespace on 203.0.113.0/24 behind the internet router, with [`ATTACKER`], [`PROBE`],
/// [`REPLAY_ORIGINAL`], [`WRONG_PSK_PEER`] and the flood sources on its `eth0`.
struct Attacker {
    ns: Netns,
}

impl Attacker {
    fn new(t: &TwoOffices) -> Result<Self> {
        let ns = Netns::new(format!("sl-{}-atk", unique_id()))?;
        veth(&t.net.inet, "to-atk", &ns, "eth0")?;
        t.net
            .inet
            .addr("to-atk", &format!("{ATTACKER_ROUTER}/24"))?;
        for addr in [ATTACKER, PROBE, REPLAY_ORIGINAL, WRONG_PSK_PEER] {
            ns.addr("eth0", &format!("{addr}/24"))?;
        }
        for addr in flood_sources() {
            ns.addr("eth0", &format!("{addr}/24"))?;
        }
        ns.route_via("default", ATTACKER_ROUTER)?;
        Ok(Self { ns })
    }

    /// Runs `wg_load ARGS` in the attacker namespace; returns its JSON summary. `args` is split
    /// on whitespace (keys are base64, paths are under the test dir).
    fn wg_load(&self, args: &str) -> Result<Value> {
        let out = self
            .ns
            .command(wg_load_path())
            .args(args.split_whitespace())
            .output()
            .context("running wg_load")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wg_load {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_str(stdout.trim())
            .with_context(|| format!("wg_load printed no JSON: {stdout:?}"))
    }

    /// Starts `wg_load ARGS` in the background; stdout goes to `out`.
    fn spawn_wg_load(&self, label: &str, out: &Path, args: &str) -> Result<Background> {
        let mut cmd = self.ns.command(wg_load_path());
        cmd.args(args.split_whitespace());
        let daemon = Daemon::spawn_command(label, out, cmd)?;
        Ok(Background { daemon })
    }
}

/// A `wg_load` running in the background.
struct Background {
    daemon: Daemon,
}

impl Background {
    /// Waits for it to exit and parses its summary (the last line of its output).
    fn finish(mut self, timeout: Duration) -> Result<Value> {
        let status = self.daemon.wait_exit(timeout)?;
        let log = self.daemon.log();
        ensure!(status.success(), "wg_load failed ({status}): {log}");
        let last = log.lines().last().unwrap_or_default();
        serde_json::from_str(last).with_context(|| format!("wg_load printed no JSON: {log:?}"))
    }
}

/// `target/<profile>/examples/wg_load`, next to the test binary's `deps/` directory (or under
/// `$SITELINK_BIN_DIR/examples/`).
fn wg_load_path() -> PathBuf {
    let dir = match std::env::var_os("SITELINK_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("current_exe of the test binary");
            let deps = exe.parent().expect("test binary has a parent dir");
            deps.parent().expect("deps has a parent dir").to_owned()
        }
    };
    let path = dir.join("examples").join("wg_load");
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --examples` (or `cargo test --all-targets`) first",
        path.display()
    );
    path
}

/// `tcpdump` in the attacker namespace, writing every UDP datagram from gateway A's listen port
/// to a pcap file.
struct Capture {
    daemon: Daemon,
    file: PathBuf,
}

/// One captured datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Packet {
    dst: String,
    dst_port: u16,
    /// UDP payload length.
    len: u64,
}

impl Capture {
    fn start(ns: &Netns, file: &Path) -> Result<Self> {
        let filter = format!("udp and src host {WAN_A} and src port {LISTEN_PORT}");
        let file_s = file.to_string_lossy();
        let log = file.with_extension("log");
        let mut daemon = Daemon::spawn(
            ns,
            "tcpdump (attacker)",
            &log,
            &[
                "tcpdump", "-i", "eth0", "-n", "-U", "-Z", "root", "-w", &file_s, &filter,
            ],
        )?;
        daemon.wait_for_log("listening on", Duration::from_secs(10))?;
        Ok(Self {
            daemon,
            file: file.to_owned(),
        })
    }

    /// Everything captured so far.
    fn packets(&self) -> Result<Vec<Packet>> {
        let out = Command::new("tcpdump")
            .args(["-r"])
            .arg(&self.file)
            .args(["-n", "-q"])
            .output()
            .context("tcpdump -r")?;
        // A capture being written may end in a partial record; tcpdump then complains on
        // stderr but prints every whole one.
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(parse_tcpdump_line)
            .collect())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.daemon.signal(libc::SIGINT);
        let _ = self.daemon.wait_exit(Duration::from_secs(5));
    }
}

/// `12:00:00.000000 IP 198.51.100.1.51820 > 203.0.113.66.40000: UDP, length 64`.
fn parse_tcpdump_line(line: &str) -> Option<Packet> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == ">")?;
    let dst = words.next()?.trim_end_matches(':');
    let (ip, port) = dst.rsplit_once('.')?;
    let len = line.rsplit_once("length ")?.1.trim().parse().ok()?;
    Some(Packet {
        dst: ip.to_owned(),
        dst_port: port.parse().ok()?,
        len,
    })
}

#[test]
fn tcpdump_line_parses() {
    let p = parse_tcpdump_line(
        "22:38:01.123456 IP 198.51.100.1.51820 > 203.0.113.66.40000: UDP, length 64",
    );
    assert_eq!(
        p,
        Some(Packet {
            dst: "203.0.113.66".to_owned(),
            dst_port: 40000,
            len: 64
        })
    );
    assert_eq!(parse_tcpdump_line("reading from file x.pcap"), None);
}

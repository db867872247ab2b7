//! Interoperability: gateway A is sitelink, gateway B is stock `wireguard-go` configured with
//! `wg` and `ip`, with and without a pre-shared key.
//!
//! Needs root, iproute2, /dev/net/tun, wireguard-go, wg, ping and socat; skips (passes with a
//! printed reason) without them.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use common::sites::{Options, LISTEN_PORT, TUN_A, TUN_B};
use common::topology::{LAN_A_HOST, LAN_A_NET, LAN_B_HOST, WAN_A};
use common::traffic::{ping, tcp_transfer, wait_ping, TransferSpec};
use common::{must, skip_unless_root_and, unique_id, wait_until, Daemon, TwoOffices};

const PING_TIMEOUT: Duration = Duration::from_secs(10);
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
const TOOLS: &[&str] = &["wireguard-go", "wg", "ping", "socat", "ss"];

#[test]
fn sitelink_to_wireguard_go() {
    interop("interop", false);
}

#[test]
fn sitelink_to_wireguard_go_with_psk() {
    interop("interop-psk", true);
}

fn interop(test: &str, psk: bool) {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let opts = Options {
        psk,
        keepalive: Some(25),
    };
    let mut t = must(TwoOffices::new(test, &opts));
    must(t.start_a());
    let wg_b = must(WireguardGo::start(&t, psk));
    must(check(&mut t, &wg_b));
}

/// The pre-shared key is really used: sitelink with one, wireguard-go without, never connect.
#[test]
fn psk_on_one_side_only_never_connects() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let opts = Options {
        psk: true,
        keepalive: Some(25),
    };
    let mut t = must(TwoOffices::new("interop-psk-mismatch", &opts));
    must(t.start_a());
    let wg_b = must(WireguardGo::start(&t, false));
    must(psk_mismatch(&mut t, &wg_b));
}

fn psk_mismatch(t: &mut TwoOffices, wg_b: &WireguardGo) -> Result<()> {
    // A few tries from both sides, each of which starts or retries a handshake.
    for _ in 0..3 {
        ensure!(
            !ping(&t.net.lan_a, LAN_B_HOST),
            "LAN A reached LAN B although the pre-shared keys differ"
        );
        ensure!(
            !ping(&t.net.lan_b, LAN_A_HOST),
            "LAN B reached LAN A although the pre-shared keys differ"
        );
    }
    ensure!(
        wg_b.latest_handshake(t)? == 0,
        "wireguard-go completed a handshake although the pre-shared keys differ"
    );
    let status = t.status_a()?;
    ensure!(
        status.latest_handshake_secs_ago("office-b").is_none(),
        "sitelink completed a handshake although the pre-shared keys differ; status:\n{status}"
    );
    t.ensure_running()
}

/// `wireguard-go -f IFACE` in gw-b, configured as office B. On drop the daemon gets SIGTERM
/// (it then removes its TUN and UAPI socket); a socket left behind is removed.
struct WireguardGo {
    daemon: Daemon,
    iface: String,
}

impl WireguardGo {
    /// Starts and configures it; `psk` gives it the same pre-shared key file as sitelink's.
    fn start(t: &TwoOffices, psk: bool) -> Result<Self> {
        // The UAPI socket lives in /var/run/wireguard/<iface>.sock on the shared filesystem,
        // so the interface name must be unique on the host, not just in the namespace.
        let iface = format!("wg{}", unique_id());
        ensure!(iface.len() <= 15, "interface name {iface} too long");
        let ns = &t.net.gw_b;
        let mut cmd = ns.command("wireguard-go");
        cmd.env("WG_PROCESS_FOREGROUND", "1").args(["-f", &iface]);
        let mut daemon = Daemon::spawn_command("wireguard-go B", &t.dir.join("wg-b.log"), cmd)?;
        let this_socket = socket_path(&iface);
        wait_until(
            Duration::from_secs(10),
            "wireguard-go to create its TUN",
            || !daemon.is_running() || (ns.has_link(&iface) && this_socket.exists()),
        )?;
        daemon.ensure_running()?;
        let wg = Self { daemon, iface };

        let b = &t.b;
        let key = b.keys.private_key_file.to_string_lossy().into_owned();
        let port = LISTEN_PORT.to_string();
        let endpoint = format!("{WAN_A}:{LISTEN_PORT}");
        let allowed = format!("{TUN_A}/32,{LAN_A_NET}");
        let psk_path = t.dir.join("ab.psk");
        let psk_file = psk_path.to_string_lossy();
        let mut set = vec![
            "wg",
            "set",
            &wg.iface,
            "private-key",
            &key,
            "listen-port",
            &port,
            "peer",
            &t.a.keys.public_key,
        ];
        if psk {
            set.extend(["preshared-key", &psk_file]);
        }
        set.extend([
            "endpoint",
            &endpoint,
            "allowed-ips",
            &allowed,
            "persistent-keepalive",
            "25",
        ]);
        ns.run(&set).context("wg set")?;
        ns.run(&[
            "ip",
            "addr",
            "add",
            &format!("{TUN_B}/24"),
            "dev",
            &wg.iface,
        ])?;
        ns.run(&["ip", "link", "set", &wg.iface, "mtu", "1420", "up"])?;
        ns.run(&["ip", "route", "add", LAN_A_NET, "dev", &wg.iface])?;
        Ok(wg)
    }

    /// `wg show IFACE latest-handshakes`: seconds since the epoch of the last handshake, or 0.
    fn latest_handshake(&self, t: &TwoOffices) -> Result<u64> {
        let out = t
            .net
            .gw_b
            .run(&["wg", "show", &self.iface, "latest-handshakes"])?;
        Ok(out
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        if self.daemon.is_running() {
            self.daemon.signal(libc::SIGTERM);
            let _ = self.daemon.wait_exit(Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(socket_path(&self.iface));
    }
}

fn socket_path(iface: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{iface}.sock"))
}

fn check(t: &mut TwoOffices, wg_b: &WireguardGo) -> Result<()> {
    wait_ping(&t.net.lan_a, LAN_B_HOST, PING_TIMEOUT).context("LAN A -> LAN B")?;
    wait_ping(&t.net.lan_b, LAN_A_HOST, PING_TIMEOUT).context("LAN B -> LAN A")?;
    ensure!(
        wg_b.latest_handshake(t)? > 0,
        "wireguard-go reports no handshake"
    );
    let status = t.status_a()?;
    ensure!(
        status.latest_handshake_secs_ago("office-b").is_some(),
        "sitelink reports no handshake with wireguard-go; status:\n{status}"
    );

    for (label, from, to, to_addr, port) in [
        ("a-to-b", &t.net.lan_a, &t.net.lan_b, LAN_B_HOST, 5001),
        ("b-to-a", &t.net.lan_b, &t.net.lan_a, LAN_A_HOST, 5002),
    ] {
        tcp_transfer(
            &TransferSpec {
                label,
                from,
                to,
                to_addr,
                port,
                bytes: 2 * 1024 * 1024,
                dir: t.dir.path(),
            },
            TRANSFER_TIMEOUT,
        )?;
    }
    t.ensure_running()
}

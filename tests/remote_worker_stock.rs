//! A stock WireGuard client (`wireguard-go` + `wg`) behind the home NAT router, configured from
//! `sitelink-gateway export-client NAME --endpoint …` (the client's fixed allocation), reaches
//! office A (issue #3).
//!
//! `export-client` prints a `wg-quick` file; `wg setconf` takes only its WireGuard subset, so
//! `Address`, `DNS` and `MTU` are stripped and applied with `ip` (see
//! `common::workers::StockClient`). The private key is pasted in, as a user would.
//!
//! Needs root, iproute2, /dev/net/tun, nft, ping, socat, ss, wireguard-go and wg; skips (passes
//! with a printed reason) without them.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use common::bins;
use common::sites::LISTEN_PORT;
use common::topology::{LAN_A_HOST, LAN_B_NET, WAN_A};
use common::traffic::{tcp_transfer, wait_ping, TransferSpec};
use common::workers::{PoolSpec, RemoteWorkers, Setup, StockClient, WorkerSpec};
use common::{must, skip_unless_root_and};

const TOOLS: &[&str] = &["ping", "socat", "ss", "nft", "wireguard-go", "wg"];
const FIXED: &str = "10.77.100.60";

#[test]
fn stock_wireguard_go_from_exported_config_reaches_office_a() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let setup = Setup {
        pool: PoolSpec::default(),
        workers: vec![WorkerSpec::fixed("phone", FIXED)],
        client_keepalive: None,
    };
    let mut rw = must(RemoteWorkers::new("rw-stock", &setup));
    must(rw.t.start_a());
    must(stock(&mut rw));
}

/// `sitelink-gateway export-client NAME --config A ARGS…` in gw-a; returns stdout.
fn export(rw: &RemoteWorkers, name: &str, args: &[&str]) -> Result<String> {
    let gateway = bins::bin(bins::GATEWAY);
    let gateway = gateway.to_string_lossy();
    let config = rw.t.a.config_path.to_string_lossy();
    let mut argv = vec![&*gateway, "export-client", name, "--config", &config];
    argv.extend_from_slice(args);
    rw.t.net
        .gw_a
        .run(&argv)
        .context("sitelink-gateway export-client")
}

fn stock(rw: &mut RemoteWorkers) -> Result<()> {
    let endpoint = format!("{WAN_A}:{LISTEN_PORT}");
    let exported = export(rw, "phone", &["--endpoint", &endpoint])?;
    eprintln!("export-client printed:\n{exported}");
    for needle in [
        format!("Address = {FIXED}/32"),
        format!("PublicKey = {}", rw.t.a.keys.public_key),
        format!("Endpoint = {endpoint}"),
    ] {
        ensure!(
            exported.contains(&needle),
            "export-client output lacks `{needle}`:\n{exported}"
        );
    }
    ensure!(
        exported.contains(LAN_B_NET),
        "export-client output does not route office B's LAN {LAN_B_NET}:\n{exported}"
    );
    let qr = export(rw, "phone", &["--endpoint", &endpoint, "--qr"])?;
    ensure!(
        qr.lines().count() > 20 && qr.contains(['█', '▀', '▄']),
        "export-client --qr printed no QR code:\n{qr}"
    );

    // Without --private-key-file the user pastes the key in; with it, it is filled in.
    ensure!(
        exported.contains("PrivateKey = <"),
        "export-client without --private-key-file has no placeholder:\n{exported}"
    );
    let phone = &rw.workers[0];
    let key_file = phone.keys.private_key_file.to_string_lossy().into_owned();
    let config = export(
        rw,
        "phone",
        &["--endpoint", &endpoint, "--private-key-file", &key_file],
    )?;
    ensure!(
        config.contains(&format!("PrivateKey = {}", phone.keys.private_key)),
        "export-client --private-key-file did not fill in the key:\n{config}"
    );
    let client = StockClient::start(&phone.ns, &config, rw.t.dir.path())?;

    wait_ping(&phone.ns, LAN_A_HOST, Duration::from_secs(30))
        .context("stock client -> office A")?;
    ensure!(
        client.latest_handshake(&phone.ns)? > 0,
        "wireguard-go reports no handshake"
    );
    tcp_transfer(
        &TransferSpec {
            label: "phone-to-a",
            from: &phone.ns,
            to: &rw.t.net.lan_a,
            to_addr: LAN_A_HOST,
            port: 5601,
            bytes: 1024 * 1024,
            dir: rw.t.dir.path(),
        },
        Duration::from_secs(120),
    )?;
    // And back: office A reaches the phone's fixed address.
    wait_ping(&rw.t.net.lan_a, FIXED, Duration::from_secs(10)).context("office A -> phone")?;

    // wireguard-go sends whatever source address it is given; gateway A must accept only the
    // phone's own address from its key.
    let spoofed = "10.77.100.61";
    let before =
        rw.t.status_a()?
            .counter("rx_source_not_allowed")
            .unwrap_or(0);
    phone.ns.run(&[
        "ip",
        "addr",
        "add",
        &format!("{spoofed}/32"),
        "dev",
        &client.iface,
    ])?;
    let got_through = phone.ns.succeeds(&[
        "ping", "-n", "-q", "-c", "3", "-W", "1", "-I", spoofed, LAN_A_HOST,
    ]);
    ensure!(
        !got_through,
        "a stock client reached office A with source {spoofed}, not its address {FIXED}"
    );
    let after =
        rw.t.status_a()?
            .counter("rx_source_not_allowed")
            .unwrap_or(0);
    ensure!(
        after >= before + 3,
        "gateway A counted {} packets with a source not allowed, expected at least 3",
        after - before
    );
    wait_ping(&phone.ns, LAN_A_HOST, Duration::from_secs(10)).context("phone after spoofing")?;
    rw.t.ensure_running()
}

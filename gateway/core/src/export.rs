//! Settings for a stock WireGuard app: a `wg-quick` config file and its QR code.
//!
//! A phone or laptop without sitelink's client can still reach a gateway as a plain WireGuard
//! peer. It cannot ask for a lease, so the exported config carries what a lease would have
//! pushed: a fixed tunnel address (normally the client's `fixed_address` in the gateway's
//! `[[client]]` table), the routes and the DNS servers.
//!
//! ```text
//! [Interface]
//! # The client's private key: its public key is the one in the gateway's [[client]] table.
//! PrivateKey = <paste the client's private key>
//! Address = 10.77.100.50/32
//! DNS = 192.168.10.53
//!
//! [Peer]
//! PublicKey = <the gateway's public key>
//! Endpoint = vpn.example.com:51820
//! AllowedIPs = 192.168.10.0/24, 192.168.20.0/24
//! PersistentKeepalive = 25
//! ```
//!
//! [`wg_quick_config`] renders the text; [`qr_terminal`] renders it (or any text) as a QR code
//! for a terminal, which the WireGuard mobile apps scan with "Create from QR code".

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use qrcode::types::QrError;
use qrcode::{Color, EcLevel, QrCode};

use crate::config::{GatewayConfig, GatewayEndpoint, DEFAULT_CLIENT_KEEPALIVE};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};

/// What `PrivateKey =` says when the private key is not supplied: the gateway never knows a
/// client's private key, so whoever installs the config pastes it in.
pub const PRIVATE_KEY_PLACEHOLDER: &str = "<paste the client's private key>";

/// The most bytes a QR code holds at the error correction level [`qr_terminal`] uses (version 40,
/// level L, byte mode).
pub const MAX_QR_BYTES: usize = 2953;

/// Modules of light margin around a QR code, as the QR standard asks.
const QUIET_ZONE: usize = 4;

/// Why a config could not be exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The gateway config has no `[pool]`, so it has no routes or DNS servers for clients.
    #[error("the gateway config has no [pool] table, so it serves no remote-worker clients")]
    NoPool,
    /// The gateway config has no `[[client]]` with this name.
    #[error("the gateway config has no [[client]] named {name:?} (known: {known})")]
    UnknownClient {
        /// The name asked for.
        name: String,
        /// The names of the `[[client]]` tables, comma-separated.
        known: String,
    },
    /// The client has no `fixed_address`; a stock app cannot lease one.
    #[error(
        "client {name:?} has no fixed_address: a stock WireGuard app cannot ask for a lease, so \
         give the client a fixed_address in the gateway's [[client]] table"
    )]
    NoFixedAddress {
        /// The client's name.
        name: String,
    },
    /// The text is longer than a QR code holds.
    #[error("{len} bytes do not fit in a QR code (at most {MAX_QR_BYTES})")]
    TooLongForQr {
        /// The text's length in bytes.
        len: usize,
    },
    /// The QR encoder refused the text for another reason.
    #[error("cannot encode a QR code: {reason}")]
    Qr {
        /// The encoder's explanation.
        reason: String,
    },
}

/// Everything a `wg-quick` config for one client holds.
///
/// Build one with [`ExportParams::new`] (then set the optional fields) or
/// [`ExportParams::from_gateway`], and render it with [`wg_quick_config`].
#[derive(Debug, Clone)]
pub struct ExportParams {
    /// The client's private key, written as `PrivateKey =` when given. When `None` (the gateway
    /// does not know it), the line holds [`PRIVATE_KEY_PLACEHOLDER`] for the user to replace.
    pub private_key: Option<PrivateKey>,
    /// The client's tunnel address, written as `Address = <address>/32` (`/128` for IPv6).
    pub address: IpAddr,
    /// DNS servers, written as `DNS =` when not empty.
    pub dns: Vec<IpAddr>,
    /// The tunnel MTU, written as `MTU =` when given; otherwise the app picks one.
    pub mtu: Option<u16>,
    /// The gateway's public key (`[Peer] PublicKey =`).
    pub gateway_public_key: PublicKey,
    /// A pre-shared key both sides use (`PresharedKey =`), if any.
    pub preshared_key: Option<PresharedKey>,
    /// Where the gateway listens (`Endpoint =`), as the client reaches it: usually the gateway's
    /// public address or DNS name and its `listen_port`.
    pub endpoint: GatewayEndpoint,
    /// Prefixes sent through the tunnel (`AllowedIPs =`), e.g. the gateway's `[pool]` routes.
    /// Ignored when `full_tunnel` is set. The line is left out when there are none.
    pub routes: Vec<IpNet>,
    /// Send all traffic through the tunnel: `AllowedIPs = 0.0.0.0/0, ::/0`. `::/0` is there
    /// although leases are IPv4, so that IPv6 traffic cannot bypass the tunnel.
    pub full_tunnel: bool,
    /// Seconds between keepalives (`PersistentKeepalive =`), which keep the phone's NAT mapping
    /// open; `None` leaves the line out. [`ExportParams::new`] sets
    /// [`DEFAULT_CLIENT_KEEPALIVE`] (25).
    pub persistent_keepalive: Option<u16>,
}

impl ExportParams {
    /// Parameters with the required values and defaults for the rest: no private key
    /// (placeholder), no DNS, no MTU, no pre-shared key, no routes, split tunnel, keepalive 25.
    pub fn new(address: IpAddr, gateway_public_key: PublicKey, endpoint: GatewayEndpoint) -> Self {
        Self {
            private_key: None,
            address,
            dns: Vec::new(),
            mtu: None,
            gateway_public_key,
            preshared_key: None,
            endpoint,
            routes: Vec::new(),
            full_tunnel: false,
            persistent_keepalive: Some(DEFAULT_CLIENT_KEEPALIVE),
        }
    }

    /// Parameters for the `[[client]]` named `client` of a gateway config: its `fixed_address`,
    /// the `[pool]`'s routes, DNS servers and `full_tunnel`, and the gateway's public key.
    /// `endpoint` is where clients reach the gateway, which its config does not say.
    pub fn from_gateway(
        config: &GatewayConfig,
        client: &str,
        endpoint: GatewayEndpoint,
    ) -> Result<Self, ExportError> {
        let pool = config.pool.as_ref().ok_or(ExportError::NoPool)?;
        let entry = config
            .clients
            .iter()
            .find(|c| c.name == client)
            .ok_or_else(|| ExportError::UnknownClient {
                name: client.to_owned(),
                known: config
                    .clients
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let address = entry
            .fixed_address
            .ok_or_else(|| ExportError::NoFixedAddress {
                name: entry.name.clone(),
            })?;
        let mut params = Self::new(
            IpAddr::V4(address),
            config.interface.private_key.public_key(),
            endpoint,
        );
        params.routes = pool.routes.iter().map(|&r| IpNet::V4(r)).collect();
        params.dns = pool.dns.iter().map(|&d| IpAddr::V4(d)).collect();
        params.full_tunnel = pool.full_tunnel;
        Ok(params)
    }
}

/// Renders `params` as a `wg-quick` config file (an `[Interface]` and one `[Peer]`), which the
/// WireGuard apps import and `wg-quick up` reads.
pub fn wg_quick_config(params: &ExportParams) -> String {
    // Writing to a String cannot fail; the results are discarded for that reason.
    let mut out = String::new();
    out.push_str("[Interface]\n");
    match &params.private_key {
        Some(key) => {
            let _ = writeln!(out, "PrivateKey = {}", key.to_base64());
        }
        None => {
            out.push_str(
                "# The client's private key: its public key is the one in the gateway's \
                 [[client]] table.\n",
            );
            let _ = writeln!(out, "PrivateKey = {PRIVATE_KEY_PLACEHOLDER}");
        }
    }
    let host_bits = if params.address.is_ipv4() { 32 } else { 128 };
    let _ = writeln!(out, "Address = {}/{host_bits}", params.address);
    if !params.dns.is_empty() {
        let _ = writeln!(out, "DNS = {}", join(&params.dns));
    }
    if let Some(mtu) = params.mtu {
        let _ = writeln!(out, "MTU = {mtu}");
    }

    out.push_str("\n[Peer]\n");
    let _ = writeln!(out, "PublicKey = {}", params.gateway_public_key.to_base64());
    if let Some(psk) = &params.preshared_key {
        let _ = writeln!(out, "PresharedKey = {}", psk.to_base64());
    }
    let _ = writeln!(out, "Endpoint = {}", params.endpoint);
    if params.full_tunnel {
        out.push_str("AllowedIPs = 0.0.0.0/0, ::/0\n");
    } else if !params.routes.is_empty() {
        let _ = writeln!(out, "AllowedIPs = {}", join(&params.routes));
    }
    if let Some(seconds) = params.persistent_keepalive {
        let _ = writeln!(out, "PersistentKeepalive = {seconds}");
    }
    out
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders `text` as a QR code for a terminal, two rows of modules per line with Unicode half
/// blocks (`▀`, `▄`, `█`), like `qrencode -t ansiutf8`.
///
/// Each line sets a black background and a bright white foreground with ANSI escapes and resets
/// them at its end, so the code reads the same on dark and light terminals; the light modules
/// (including a 4-module quiet zone) are drawn as foreground. The code uses error correction
/// level L, which keeps it small enough for an 80-column terminal for a typical config.
pub fn qr_terminal(text: &str) -> Result<String, ExportError> {
    let code =
        QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L).map_err(|e| match e {
            QrError::DataTooLong => ExportError::TooLongForQr { len: text.len() },
            other => ExportError::Qr {
                reason: other.to_string(),
            },
        })?;
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * QUIET_ZONE;
    // Light unless it is a dark module of the code; rows past the bottom are left dark.
    let light = |x: usize, y: usize| -> bool {
        if y >= size {
            return false;
        }
        let inside = |v: usize| (QUIET_ZONE..QUIET_ZONE + width).contains(&v);
        if !inside(x) || !inside(y) {
            return true;
        }
        colors.get((y - QUIET_ZONE) * width + (x - QUIET_ZONE)) != Some(&Color::Dark)
    };
    let mut out = String::with_capacity(size.div_ceil(2) * (size * 3 + 16));
    for y in (0..size).step_by(2) {
        out.push_str("\x1b[40;97m");
        for x in 0..size {
            out.push(match (light(x, y), light(x, y + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push_str("\x1b[0m\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ExportParams {
        ExportParams::new(
            "10.77.100.50".parse().expect("address"),
            PrivateKey::from_bytes([7; 32]).public_key(),
            "vpn.example.com:51820".parse().expect("endpoint"),
        )
    }

    #[test]
    fn minimal_config() {
        let text = wg_quick_config(&params());
        let gateway = PrivateKey::from_bytes([7; 32]).public_key().to_base64();
        assert_eq!(
            text,
            format!(
                "[Interface]\n\
                 # The client's private key: its public key is the one in the gateway's \
                 [[client]] table.\n\
                 PrivateKey = <paste the client's private key>\n\
                 Address = 10.77.100.50/32\n\
                 \n\
                 [Peer]\n\
                 PublicKey = {gateway}\n\
                 Endpoint = vpn.example.com:51820\n\
                 PersistentKeepalive = 25\n"
            )
        );
    }

    #[test]
    fn full_tunnel_ignores_routes() {
        let mut p = params();
        p.routes = vec!["192.168.10.0/24".parse().expect("route")];
        p.full_tunnel = true;
        let text = wg_quick_config(&p);
        assert!(text.contains("\nAllowedIPs = 0.0.0.0/0, ::/0\n"), "{text}");
    }

    #[test]
    fn ipv6_address_is_a_host_route() {
        let mut p = params();
        p.address = "fd77::50".parse().expect("address");
        assert!(wg_quick_config(&p).contains("\nAddress = fd77::50/128\n"));
    }

    #[test]
    fn qr_size_and_shape() {
        let qr = qr_terminal("hello").expect("qr");
        let lines: Vec<&str> = qr.lines().collect();
        // "hello" fits version 1 (21 modules): 29 with the quiet zone, 15 lines of two rows.
        assert_eq!(lines.len(), 15);
        for line in &lines {
            let body = line
                .strip_prefix("\x1b[40;97m")
                .and_then(|l| l.strip_suffix("\x1b[0m"))
                .expect("colour escapes");
            assert_eq!(body.chars().count(), 29);
        }
        // The top of the quiet zone is all light.
        assert!(lines[0].contains(&"█".repeat(29)));
    }

    /// A temp directory, removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new() -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "sitelink-export-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A config with every optional line, and the client's private key.
    fn everything() -> (ExportParams, PrivateKey) {
        let client = PrivateKey::from_bytes([9; 32]);
        let mut p = params();
        p.private_key = Some(client.clone());
        p.dns = vec![
            "192.168.10.53".parse().expect("dns"),
            "fd10::53".parse().expect("dns"),
        ];
        p.mtu = Some(1380);
        p.preshared_key = Some(PresharedKey::from_bytes([5; 32]));
        p.routes = vec![
            "192.168.10.0/24".parse().expect("route"),
            "192.168.20.0/24".parse().expect("route"),
        ];
        (p, client)
    }

    /// The `key = value` lines of each section of a wg-quick style config, comments dropped.
    fn sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                out.push((line.to_owned(), Vec::new()));
                continue;
            }
            let (key, value) = line.split_once('=').expect("key = value");
            let section = out.last_mut().expect("a line before any section");
            section
                .1
                .push((key.trim().to_owned(), value.trim().to_owned()));
        }
        out
    }

    #[test]
    fn every_line() {
        let (p, client) = everything();
        let text = wg_quick_config(&p);
        let gateway = PrivateKey::from_bytes([7; 32]).public_key().to_base64();
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            sections(&text),
            vec![
                (
                    "[Interface]".to_owned(),
                    vec![
                        pair("PrivateKey", &client.to_base64()),
                        pair("Address", "10.77.100.50/32"),
                        pair("DNS", "192.168.10.53, fd10::53"),
                        pair("MTU", "1380"),
                    ]
                ),
                (
                    "[Peer]".to_owned(),
                    vec![
                        pair("PublicKey", &gateway),
                        pair(
                            "PresharedKey",
                            &PresharedKey::from_bytes([5; 32]).to_base64()
                        ),
                        pair("Endpoint", "vpn.example.com:51820"),
                        pair("AllowedIPs", "192.168.10.0/24, 192.168.20.0/24"),
                        pair("PersistentKeepalive", "25"),
                    ]
                ),
            ]
        );
        assert!(!text.contains(PRIVATE_KEY_PLACEHOLDER));
    }

    /// Runs a program, or says why not (not installed, or not root for wg-quick).
    fn run(program: &str, args: &[&str], stdin: &str) -> Option<String> {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let mut child = match Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!("skipping: cannot run {program}: {e}");
                return None;
            }
        };
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).expect("write stdin");
        }
        let output = child.wait_with_output().expect("wait");
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `wg-quick strip` accepts the config and leaves what `wg setconf` reads: the wg-quick-only
    /// lines (Address, DNS, MTU) and the comment go, the rest stays as written, and `wg pubkey`
    /// reads the private key.
    #[test]
    fn wg_quick_strip_accepts_it() {
        // wg-quick re-executes itself with sudo unless it runs as root.
        if run("id", &["-u"], "").as_deref().map(str::trim) != Some("0") {
            eprintln!("skipping: wg-quick strip needs root");
            return;
        }
        let (p, client) = everything();
        let dir = TempDir::new();
        // wg-quick takes the interface name from the file name, and warns about a readable file.
        let path = dir.0.join("wgX.conf");
        let text = wg_quick_config(&p);
        crate::keys::write_secret_file(&path, &text).expect("write wgX.conf");
        let Some(path_str) = path.to_str() else {
            panic!("temp path is not UTF-8: {}", path.display());
        };
        let Some(stripped) = run("wg-quick", &["strip", path_str], "") else {
            return;
        };
        let expected: Vec<_> = sections(&text)
            .into_iter()
            .map(|(header, keys)| {
                let kept = keys
                    .into_iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "Address" | "DNS" | "MTU"))
                    .collect::<Vec<_>>();
                (header, kept)
            })
            .collect();
        assert_eq!(sections(&stripped), expected, "stripped:\n{stripped}");
        // Everything left is a key `wg setconf` knows.
        for (_, keys) in sections(&stripped) {
            for (key, _) in keys {
                assert!(
                    matches!(
                        key.as_str(),
                        "PrivateKey"
                            | "PublicKey"
                            | "PresharedKey"
                            | "Endpoint"
                            | "AllowedIPs"
                            | "PersistentKeepalive"
                    ),
                    "{key} in:\n{stripped}"
                );
            }
        }
        if let Some(public) = run("wg", &["pubkey"], &format!("{}\n", client.to_base64())) {
            assert_eq!(public.trim(), client.public_key().to_base64());
        }
    }

    /// The light (true) and dark modules of a [`qr_terminal`] drawing, two rows per line.
    fn modules(drawing: &str) -> Vec<Vec<bool>> {
        let mut rows = Vec::new();
        for line in drawing.lines() {
            let body = line
                .strip_prefix("\x1b[40;97m")
                .and_then(|l| l.strip_suffix("\x1b[0m"))
                .expect("colour escapes");
            let (top, bottom): (Vec<bool>, Vec<bool>) = body
                .chars()
                .map(|c| match c {
                    '█' => (true, true),
                    '▀' => (true, false),
                    '▄' => (false, true),
                    ' ' => (false, false),
                    other => panic!("unexpected {other:?}"),
                })
                .unzip();
            rows.push(top);
            rows.push(bottom);
        }
        rows
    }

    /// A phone's view: the drawing, light modules white, on a black terminal, decodes to the
    /// config.
    #[test]
    fn qr_decodes_to_the_config() {
        let (p, _) = everything();
        let text = wg_quick_config(&p);
        let drawing = qr_terminal(&text).expect("qr");
        let rows = modules(&drawing);
        let width = rows.first().map_or(0, Vec::len);
        assert!(width <= 80, "{width} columns");
        const SCALE: usize = 4;
        const BORDER: usize = 16;
        let (w, h) = (width * SCALE + 2 * BORDER, rows.len() * SCALE + 2 * BORDER);
        let mut image = rqrr::PreparedImage::prepare_from_bitmap(w, h, |x, y| {
            let light = x >= BORDER
                && y >= BORDER
                && rows
                    .get((y - BORDER) / SCALE)
                    .and_then(|row| row.get((x - BORDER) / SCALE))
                    .copied()
                    .unwrap_or(false);
            !light
        });
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code");
        let (_, content) = grids[0].decode().expect("decodes");
        assert_eq!(content, text);
    }

    #[test]
    fn from_gateway_config() {
        let dir = TempDir::new();
        let gateway = PrivateKey::from_bytes([7; 32]);
        crate::keys::write_secret_file(&dir.0.join("gw.key"), &gateway.to_base64())
            .expect("gw.key");
        let alice = PrivateKey::from_bytes([1; 32]).public_key().to_base64();
        let bob = PrivateKey::from_bytes([2; 32]).public_key().to_base64();
        let text = format!(
            "[interface]\n\
             name = \"sl0\"\n\
             private_key_file = \"gw.key\"\n\
             listen_port = 51820\n\
             address = [\"10.77.0.1/24\"]\n\
             [pool]\n\
             ranges = [\"10.77.100.0/24\"]\n\
             lease_time = 3600\n\
             store = \"leases.db\"\n\
             routes = [\"192.168.10.0/24\"]\n\
             dns = [\"192.168.10.53\"]\n\
             [[client]]\n\
             name = \"alice\"\n\
             public_key = \"{alice}\"\n\
             fixed_address = \"10.77.100.50\"\n\
             [[client]]\n\
             name = \"bob\"\n\
             public_key = \"{bob}\"\n"
        );
        let config = GatewayConfig::parse(&text, &dir.0.join("gw.toml")).expect("config");
        let endpoint: GatewayEndpoint = "198.51.100.1:51820".parse().expect("endpoint");

        let p = ExportParams::from_gateway(&config, "alice", endpoint.clone()).expect("alice");
        assert_eq!(p.address, "10.77.100.50".parse::<IpAddr>().expect("ip"));
        assert_eq!(p.gateway_public_key, gateway.public_key());
        assert_eq!(
            p.routes,
            vec!["192.168.10.0/24".parse::<IpNet>().expect("net")]
        );
        assert_eq!(p.dns, vec!["192.168.10.53".parse::<IpAddr>().expect("ip")]);
        assert!(!p.full_tunnel);
        assert!(p.private_key.is_none());
        assert_eq!(p.persistent_keepalive, Some(25));

        assert_eq!(
            ExportParams::from_gateway(&config, "bob", endpoint.clone()).err(),
            Some(ExportError::NoFixedAddress {
                name: "bob".to_owned()
            })
        );
        let err = ExportParams::from_gateway(&config, "carol", endpoint.clone()).err();
        assert_eq!(
            err,
            Some(ExportError::UnknownClient {
                name: "carol".to_owned(),
                known: "alice, bob".to_owned()
            })
        );

        let mut without_pool = config;
        without_pool.pool = None;
        assert_eq!(
            ExportParams::from_gateway(&without_pool, "alice", endpoint).err(),
            Some(ExportError::NoPool)
        );
    }

    #[test]
    fn qr_too_long() {
        let text = "x".repeat(MAX_QR_BYTES + 1);
        assert_eq!(
            qr_terminal(&text),
            Err(ExportError::TooLongForQr {
                len: MAX_QR_BYTES + 1
            })
        );
        assert!(qr_terminal(&"x".repeat(MAX_QR_BYTES)).is_ok());
    }
}

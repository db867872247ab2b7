//! Writing sitelink gateway config files (TOML) for tests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `[interface]` of a gateway config.
#[derive(Debug, Clone)]
pub(crate) struct InterfaceConfig {
    pub(crate) name: String,
    /// Relative paths are resolved against the config file's directory by the gateway.
    pub(crate) private_key_file: PathBuf,
    pub(crate) listen_port: u16,
    pub(crate) address: Vec<String>,
    pub(crate) mtu: Option<u16>,
}

/// One `[[peer]]` of a gateway config.
#[derive(Debug, Clone)]
pub(crate) struct PeerConfig {
    pub(crate) name: String,
    pub(crate) public_key: String,
    pub(crate) preshared_key_file: Option<PathBuf>,
    pub(crate) endpoint: Option<String>,
    pub(crate) allowed_ips: Vec<String>,
    pub(crate) persistent_keepalive: Option<u16>,
}

/// A whole gateway config file.
#[derive(Debug, Clone)]
pub(crate) struct GatewayConfig {
    pub(crate) interface: InterfaceConfig,
    pub(crate) peers: Vec<PeerConfig>,
}

impl GatewayConfig {
    /// The TOML text, with the fixed key names of the config contract.
    pub(crate) fn to_toml(&self) -> String {
        let i = &self.interface;
        let mut s = String::new();
        let _ = writeln!(s, "[interface]");
        let _ = writeln!(s, "name = {}", quote(&i.name));
        let _ = writeln!(
            s,
            "private_key_file = {}",
            quote(&i.private_key_file.to_string_lossy())
        );
        let _ = writeln!(s, "listen_port = {}", i.listen_port);
        let _ = writeln!(s, "address = {}", list(&i.address));
        if let Some(mtu) = i.mtu {
            let _ = writeln!(s, "mtu = {mtu}");
        }
        for p in &self.peers {
            let _ = writeln!(s, "\n[[peer]]");
            let _ = writeln!(s, "name = {}", quote(&p.name));
            let _ = writeln!(s, "public_key = {}", quote(&p.public_key));
            if let Some(psk) = &p.preshared_key_file {
                let _ = writeln!(s, "preshared_key_file = {}", quote(&psk.to_string_lossy()));
            }
            if let Some(endpoint) = &p.endpoint {
                let _ = writeln!(s, "endpoint = {}", quote(endpoint));
            }
            let _ = writeln!(s, "allowed_ips = {}", list(&p.allowed_ips));
            if let Some(keepalive) = p.persistent_keepalive {
                let _ = writeln!(s, "persistent_keepalive = {keepalive}");
            }
        }
        s
    }

    /// Writes the config to `path` (mode 0644: it holds no secrets, only key file names).
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_toml()).with_context(|| format!("writing {}", path.display()))
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

#[test]
fn toml_shape() {
    let cfg = GatewayConfig {
        interface: InterfaceConfig {
            name: "sl0".into(),
            private_key_file: "a.key".into(),
            listen_port: 51820,
            address: vec!["10.77.0.1/24".into()],
            mtu: Some(1420),
        },
        peers: vec![PeerConfig {
            name: "office-b".into(),
            public_key: "abc=".into(),
            preshared_key_file: None,
            endpoint: Some("198.51.100.2:51820".into()),
            allowed_ips: vec!["10.77.0.2/32".into(), "192.168.20.0/24".into()],
            persistent_keepalive: Some(25),
        }],
    };
    let text = cfg.to_toml();
    assert!(text.contains("address = [\"10.77.0.1/24\"]"), "{text}");
    assert!(
        text.contains("allowed_ips = [\"10.77.0.2/32\", \"192.168.20.0/24\"]"),
        "{text}"
    );
    assert!(text.contains("[[peer]]\nname = \"office-b\""), "{text}");
}

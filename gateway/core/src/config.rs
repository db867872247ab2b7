//! The gateway's config file: TOML in `wg-quick`'s vocabulary.
//!
//! ```toml
//! [interface]
//! name = "sl0"                       # TUN device name
//! private_key_file = "office-a.key"  # relative paths are relative to the config file
//! listen_port = 51820
//! address = ["10.77.0.1/24"]
//! mtu = 1420                         # optional, default 1420
//! busy_poll_us = 200                 # optional, default 200; 0 = off
//!
//! [[peer]]
//! name = "office-b"
//! public_key = "base64…"
//! preshared_key_file = "ab.psk"      # optional
//! endpoint = "198.51.100.2:51820"    # optional; host names are resolved
//! allowed_ips = ["10.77.0.2/32", "192.168.20.0/24"]
//! persistent_keepalive = 25          # optional, seconds
//! ```
//!
//! The field docs of [`InterfaceConfig`] and [`PeerConfig`] are the reference for each key. A
//! gateway that leases addresses to remote-worker clients also has a `[pool]` table and
//! `[[client]]` tables; see [`crate::lease::PoolSettings`] and [`crate::lease::ClientEntry`].
//!
//! Unknown keys are errors. Every error names the file and line, says what is wrong, and on a
//! second line how to fix it:
//!
//! ```text
//! office-a.toml:7: peer "office-b": allowed_ips "192.168.20.0/33" is not a valid prefix
//!   fix: write an address with a prefix length, e.g. "192.168.20.0/24"
//! ```
//!
//! Loading reads the key files named by the config and resolves endpoint host names, so it does
//! file and DNS I/O; everything after loading is pure.
//!
//! # Adding a section
//!
//! A new table is a module with a `Raw*` struct (serde, `deny_unknown_fields`, values wrapped in
//! [`toml::Spanned`] so errors have lines), a `validate` function turning it into the public
//! struct, and a `SectionDoc` with an example line per key; then a field in
//! `RawGatewayConfig` and [`GatewayConfig`], a call in [`GatewayConfig::parse`], and an entry in
//! `SECTIONS`.

mod client;
mod endpoint;
mod error;
mod interface;
mod nat;
mod peer;
mod pool;
mod source;
mod traversal;

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use client::{
    ClientConfig, ClientGatewayConfig, ClientInterfaceConfig, EndpointError, GatewayEndpoint,
    DEFAULT_CLIENT_KEEPALIVE, DEFAULT_STATE_DIR,
};
pub use error::{ConfigError, ConfigErrorKind};
pub use interface::{
    InterfaceConfig, DEFAULT_BUSY_POLL_US, DEFAULT_MTU, MAX_BUSY_POLL_US, MAX_MTU, MAX_NAME_LEN,
    MIN_MTU_IPV4, MIN_MTU_IPV6,
};
pub use peer::PeerConfig;
pub use traversal::{TraversalConfig, DEFAULT_STUN_PORT, MAX_STUN_SERVERS};

use crate::keys::KeyError;
use source::{SectionDoc, Source};

/// Every table of the config file, for explaining schema errors.
const SECTIONS: &[&SectionDoc] = &[
    &interface::DOC,
    &peer::DOC,
    &pool::POOL_DOC,
    &pool::CLIENT_DOC,
    &nat::DOC,
    &traversal::DOC,
];

/// A validated gateway config.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The config file this was loaded from, as the caller named it.
    pub path: PathBuf,
    /// `[interface]`: this gateway's TUN device, key and UDP port.
    pub interface: InterfaceConfig,
    /// `[[peer]]`, in file order: the remote gateways. May be empty.
    pub peers: Vec<PeerConfig>,
    /// `[pool]`: the addresses leased to remote-worker clients; `None` when the gateway serves
    /// none. See [`crate::lease::PoolSettings`] for each key.
    pub pool: Option<crate::lease::PoolSettings>,
    /// `[[client]]`, in file order: the remote-worker clients known by name. Empty without a
    /// `[pool]`.
    pub clients: Vec<crate::lease::ClientEntry>,
    /// `[nat]`: NAT rules between the tunnels and the TUN device; `None` when absent. See
    /// [`crate::nat::NatConfig`] for each key.
    pub nat: Option<crate::nat::NatConfig>,
    /// `[traversal]`: STUN servers, UPnP and rendezvous; the defaults when the table is absent.
    pub traversal: TraversalConfig,
}

/// The whole file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGatewayConfig {
    interface: Spanned<interface::RawInterface>,
    #[serde(default)]
    peer: Vec<Spanned<peer::RawPeer>>,
    #[serde(default)]
    pool: Option<Spanned<pool::RawPool>>,
    #[serde(default)]
    client: Vec<Spanned<pool::RawClient>>,
    #[serde(default)]
    nat: Option<Spanned<crate::nat::NatConfig>>,
    #[serde(default)]
    traversal: Option<Spanned<traversal::RawTraversal>>,
}

impl GatewayConfig {
    /// Reads and validates the config file at `path`, the key files it names, and resolves peer
    /// endpoints.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                path,
                None,
                ConfigErrorKind::Read,
                format!("cannot read the config file: {e}"),
                "check the path, and that the gateway's user may read the file",
            )
        })?;
        Self::parse(&text, path)
    }

    /// Validates config `text` as if it had been read from `path`: errors name `path`, and key
    /// files are read relative to its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let src = Source::new(text, path);
        let raw: RawGatewayConfig = src.deserialize()?;
        let interface = interface::validate(raw.interface, &src)?;
        let peers = peer::validate_all(raw.peer, &src, &interface.private_key.public_key())?;
        let (pool, clients) = pool::validate(raw.pool, raw.client, &src, &interface, &peers)?;
        let nat = nat::validate(raw.nat, &src)?;
        let traversal = traversal::validate(raw.traversal, &src, traversal::Role::Gateway)?;
        Ok(Self {
            path: path.to_owned(),
            interface,
            peers,
            pool,
            clients,
            nat,
            traversal,
        })
    }
}

/// `p` as seen from the config file: absolute paths stay, relative ones are taken relative to the
/// directory holding `config_path`.
pub fn resolve_relative(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_owned();
    }
    match config_path.parent() {
        Some(dir) => dir.join(p),
        None => p.to_owned(),
    }
}

/// A [`ConfigError`] for a key file named by `key = "written"`.
fn key_file_error(
    src: &Source<'_>,
    span: &Range<usize>,
    label: &str,
    key: &str,
    written: &str,
    err: &KeyError,
) -> ConfigError {
    let fix = match err {
        KeyError::NotFound { .. } if Path::new(written).is_relative() => format!(
            "{} (relative paths are relative to the config file's directory)",
            err.fix()
        ),
        _ => err.fix(),
    };
    let problem = match err {
        // The generic message ends with the chmod advice, which the fix line already gives.
        KeyError::LoosePermissions { path, mode } => format!(
            "{} is accessible by group or others (mode {mode:03o})",
            path.display()
        ),
        _ => err.to_string(),
    };
    src.error(
        span,
        ConfigErrorKind::KeyFile,
        format!("{label}{key} {written:?}: {problem}"),
        fix,
    )
}

//! The remote-worker client's config file: its TUN device and key, and the gateways it leases an
//! address from.
//!
//! ```toml
//! [interface]
//! name = "slc0"                      # TUN device name
//! private_key_file = "alice.key"     # relative paths are relative to the config file
//! listen_port = 0                    # optional, default 0: any free port
//! mtu = 1420                         # optional, default 1420
//! dns = false                        # optional: apply the DNS servers the gateway pushes
//! state_dir = "/var/lib/sitelink"    # optional: where the client keeps its last lease
//!
//! [[gateway]]
//! name = "office-a"
//! public_key = "base64…"
//! endpoint = "198.51.100.1:51820"    # or "[2001:db8::1]:51820" or "vpn.example.com:51820"
//! persistent_keepalive = 25          # optional, seconds, default 25; 0 turns it off
//! ```
//!
//! There is no `address` and no `allowed_ips`: the client's tunnel address is leased from the
//! gateway over the control protocol, and the gateway pushes the routes (and DNS servers) with
//! the lease. The field docs of [`ClientInterfaceConfig`] and [`ClientGatewayConfig`] are the
//! reference for each key.
//!
//! Errors read like the gateway config's ([`ConfigError`]: `file:line: message` and a `fix:`
//! line). Loading reads the private key file but resolves no host names: a laptop may start
//! before it has a network, so an endpoint's host name is only checked for syntax and
//! [`GatewayEndpoint::resolve`]d when the client connects.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

use super::endpoint::{self, Parsed};
use super::interface::{check_listen_port, check_mtu, check_name, read_private_key};
use super::source::{SectionDoc, Source};
use super::traversal::{self, TraversalConfig};
use super::{ConfigError, ConfigErrorKind};
use crate::keys::{PrivateKey, PublicKey};

/// Where the client keeps its state (its last lease per gateway) when `state_dir` is absent. The
/// client creates it; under systemd, `StateDirectory=sitelink` does.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sitelink";

/// The keepalive interval, in seconds, used when a `[[gateway]]` has no `persistent_keepalive`.
/// A remote worker is nearly always behind NAT, so keepalives are on unless turned off.
pub const DEFAULT_CLIENT_KEEPALIVE: u16 = 25;

/// A validated client config.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The config file this was loaded from, as the caller named it.
    pub path: PathBuf,
    /// `[interface]`: the client's TUN device, key and UDP port.
    pub interface: ClientInterfaceConfig,
    /// `[[gateway]]`, in file order: the gateways to lease an address from. At least one; names
    /// and public keys are unique.
    pub gateways: Vec<ClientGatewayConfig>,
    /// `[traversal]`: STUN servers and UPnP (no `rendezvous`: only a gateway offers it); the
    /// defaults when the table is absent.
    pub traversal: TraversalConfig,
}

/// The client's `[interface]` table: its own side of the tunnels.
#[derive(Debug, Clone)]
pub struct ClientInterfaceConfig {
    /// `name`: the TUN device to create, e.g. `"slc0"`. At most 15 bytes, no `/`, `:` or
    /// whitespace (Linux's rules for interface names).
    pub name: String,
    /// The private key read from `private_key_file`.
    pub private_key: PrivateKey,
    /// `private_key_file`: the file holding the client's private key in `wg genkey` format,
    /// resolved against the config file's directory. It must be mode 0600 (not accessible by group
    /// or others). The gateway's `[[client]]` table names the matching public key.
    pub private_key_file: PathBuf,
    /// `listen_port`: the local UDP port for WireGuard traffic. Optional; the default, 0, lets the
    /// system pick a free one, which is what a client behind NAT wants.
    pub listen_port: u16,
    /// `mtu`: the TUN device's MTU, 576..=9000. Optional; defaults to 1420.
    pub mtu: u16,
    /// `dns`: whether to apply the DNS servers the gateway pushes with the lease to this host's
    /// resolver. Optional; defaults to `false`, leaving the resolver alone.
    pub dns: bool,
    /// `state_dir`: the directory where the client keeps its last lease from each gateway, so
    /// that it asks for the same address again after a restart. Optional; defaults to
    /// [`DEFAULT_STATE_DIR`]; a relative path is resolved against the config file's directory.
    /// It need not exist when the config is loaded.
    pub state_dir: PathBuf,
}

/// One `[[gateway]]` table: a gateway the client leases an address from.
#[derive(Debug, Clone)]
pub struct ClientGatewayConfig {
    /// `name`: a label for logs, status and error messages, e.g. `"office-a"`. Unique among
    /// gateways.
    pub name: String,
    /// `public_key`: the gateway's public key in `wg pubkey` format (44 base64 characters). Unique
    /// among gateways, and not the client's own key.
    pub public_key: PublicKey,
    /// `endpoint`: where the gateway listens, `"198.51.100.1:51820"`, `"[2001:db8::1]:51820"` or
    /// `"vpn.example.com:51820"`. A host name is not resolved at load time; see
    /// [`GatewayEndpoint::resolve`].
    pub endpoint: GatewayEndpoint,
    /// `persistent_keepalive`: seconds between keepalives that hold the client's NAT mapping
    /// open, 1..=65535. Optional; defaults to [`DEFAULT_CLIENT_KEEPALIVE`]; 0 turns keepalives off
    /// (`None`).
    pub persistent_keepalive: Option<u16>,
}

/// Where a gateway listens: an IP address and port, or a host name and port.
///
/// Displays as written in a config (`198.51.100.1:51820`, `[2001:db8::1]:51820`,
/// `vpn.example.com:51820`), which is also the form `wg-quick`'s `Endpoint =` takes. Parse one
/// with [`str::parse`]; that checks the syntax and resolves nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GatewayEndpoint {
    /// An IP address and a port, e.g. `198.51.100.1:51820`.
    Addr(SocketAddr),
    /// A host name and a port, e.g. `vpn.example.com:51820`; resolved when it is used.
    Host {
        /// The host name, e.g. `vpn.example.com`.
        host: String,
        /// The UDP port, 1..=65535.
        port: u16,
    },
}

impl GatewayEndpoint {
    /// The UDP port.
    pub fn port(&self) -> u16 {
        match self {
            GatewayEndpoint::Addr(addr) => addr.port(),
            GatewayEndpoint::Host { port, .. } => *port,
        }
    }

    /// The address to send to: the address itself, or the host name resolved with the system
    /// resolver, preferring an IPv4 address when the name has both. Blocks while resolving; call
    /// it again when the network changes.
    pub fn resolve(&self) -> io::Result<SocketAddr> {
        match self {
            GatewayEndpoint::Addr(addr) => Ok(*addr),
            GatewayEndpoint::Host { host, port } => endpoint::lookup(host, *port),
        }
    }
}

impl fmt::Display for GatewayEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayEndpoint::Addr(addr) => write!(f, "{addr}"),
            GatewayEndpoint::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for GatewayEndpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match endpoint::parse(s) {
            Ok(parsed) => Ok(parsed.into()),
            Err(problem) => Err(EndpointError {
                message: problem.message,
                fix: problem.fix,
            }),
        }
    }
}

impl From<Parsed<'_>> for GatewayEndpoint {
    fn from(parsed: Parsed<'_>) -> Self {
        match parsed {
            Parsed::Addr(addr) => GatewayEndpoint::Addr(addr),
            Parsed::Host(host, port) => GatewayEndpoint::Host {
                host: host.to_owned(),
                port,
            },
        }
    }
}

/// Why a string is not a [`GatewayEndpoint`]: displays what is wrong and, in parentheses, how
/// to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({fix})")]
pub struct EndpointError {
    message: String,
    fix: String,
}

impl EndpointError {
    /// What is wrong, e.g. `endpoint "198.51.100.1" has no port`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How to write an endpoint instead.
    pub fn fix(&self) -> &str {
        &self.fix
    }
}

/// The whole file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientConfig {
    interface: Spanned<RawClientInterface>,
    #[serde(default)]
    gateway: Vec<Spanned<RawGateway>>,
    #[serde(default)]
    traversal: Option<Spanned<traversal::RawTraversal>>,
}

/// The client's `[interface]` as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientInterface {
    name: Spanned<String>,
    private_key_file: Spanned<String>,
    #[serde(default)]
    listen_port: Option<Spanned<i64>>,
    #[serde(default)]
    mtu: Option<Spanned<i64>>,
    #[serde(default)]
    dns: Option<bool>,
    #[serde(default)]
    state_dir: Option<Spanned<String>>,
}

/// `[[gateway]]` as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    name: Spanned<String>,
    public_key: Spanned<String>,
    endpoint: Spanned<String>,
    #[serde(default)]
    persistent_keepalive: Option<Spanned<i64>>,
}

/// How each key of the client's `[interface]` is written; used in error messages.
const INTERFACE_DOC: SectionDoc = SectionDoc {
    table: "interface",
    array: false,
    examples: &[
        ("name", "name = \"slc0\""),
        ("private_key_file", "private_key_file = \"alice.key\""),
        ("listen_port", "listen_port = 0"),
        ("mtu", "mtu = 1420"),
        ("dns", "dns = true"),
        ("state_dir", "state_dir = \"/var/lib/sitelink\""),
    ],
};

/// How each key of `[[gateway]]` is written; used in error messages.
const GATEWAY_DOC: SectionDoc = SectionDoc {
    table: "gateway",
    array: true,
    examples: &[
        ("name", "name = \"office-a\""),
        (
            "public_key",
            "public_key = \"<the 44 characters printed by sitelink-keys pubkey on the gateway>\"",
        ),
        ("endpoint", "endpoint = \"198.51.100.1:51820\""),
        ("persistent_keepalive", "persistent_keepalive = 25"),
    ],
};

/// Every table of the client's config file, for explaining schema errors.
const SECTIONS: &[&SectionDoc] = &[&INTERFACE_DOC, &GATEWAY_DOC, &traversal::DOC];

impl ClientConfig {
    /// Reads and validates the client config file at `path` and the private key file it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                path,
                None,
                ConfigErrorKind::Read,
                format!("cannot read the config file: {e}"),
                "check the path, and that the client's user may read the file",
            )
        })?;
        Self::parse(&text, path)
    }

    /// Validates client config `text` as if it had been read from `path`: errors name `path`, and
    /// the key file and a relative `state_dir` are taken relative to its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let src = Source::with_sections(text, path, SECTIONS);
        let raw: RawClientConfig = src.deserialize().map_err(with_hint)?;
        let interface = validate_interface(raw.interface, &src)?;
        if raw.gateway.is_empty() {
            return Err(src.error(
                &(text.len()..text.len()),
                ConfigErrorKind::MissingKey,
                "no [[gateway]] table: the client needs a gateway to lease an address from",
                "add a [[gateway]] table with the gateway's name, public_key and endpoint, e.g. \
                 endpoint = \"198.51.100.1:51820\"",
            ));
        }
        let gateways = validate_gateways(raw.gateway, &src, &interface.private_key.public_key())?;
        let traversal = traversal::validate(raw.traversal, &src, traversal::Role::Client)?;
        Ok(Self {
            path: path.to_owned(),
            interface,
            gateways,
            traversal,
        })
    }
}

/// Adds advice to the mistakes that someone used to `wg-quick` configs makes: an `address`,
/// `allowed_ips`, or a list of DNS servers.
fn with_hint(err: ConfigError) -> ConfigError {
    let message = err.message();
    let fix = if err.kind() == ConfigErrorKind::WrongType
        && message.starts_with("interface: `dns` has the wrong type")
    {
        "write `dns = true` to apply the DNS servers the gateway pushes, or `dns = false`; the \
         servers themselves are set by dns in the gateway's [pool]"
    } else if err.kind() != ConfigErrorKind::UnknownKey {
        return err;
    } else if message == "interface: unknown key `address`" {
        "remove `address`: the client's tunnel address is leased from the gateway (a fixed one is \
         set by fixed_address in the gateway's [[client]] table)"
    } else if message.starts_with("gateway")
        && (message.ends_with("unknown key `allowed_ips`")
            || message.ends_with("unknown key `routes`"))
    {
        "remove it: the gateway pushes the routes with the lease (its [pool] routes and \
         full_tunnel)"
    } else {
        return err;
    };
    ConfigError::new(err.file(), err.line(), err.kind(), message, fix)
}

/// Validates the client's `[interface]` and reads its private key file.
fn validate_interface(
    raw: Spanned<RawClientInterface>,
    src: &Source<'_>,
) -> Result<ClientInterfaceConfig, ConfigError> {
    let raw = raw.into_inner();
    let name = check_name(&raw.name, src, "slc0")?;
    let listen_port = match &raw.listen_port {
        None => 0,
        Some(port) => check_listen_port(port, src)?,
    };
    // Leases are IPv4 addresses, so the IPv4 minimum applies.
    let mtu = check_mtu(raw.mtu.as_ref(), false, src)?;
    let state_dir = match &raw.state_dir {
        None => PathBuf::from(DEFAULT_STATE_DIR),
        Some(dir) if dir.get_ref().trim().is_empty() => {
            return Err(src.error(
                &dir.span(),
                ConfigErrorKind::InvalidValue,
                "interface: state_dir is empty",
                format!(
                    "name a directory the client may write, or remove the line to use \
                     {DEFAULT_STATE_DIR}"
                ),
            ));
        }
        Some(dir) => src.resolve(dir.get_ref()),
    };
    let (private_key, private_key_file) = read_private_key(
        &raw.private_key_file,
        src,
        "name the file holding the client's private key, e.g. \"alice.key\"",
    )?;
    Ok(ClientInterfaceConfig {
        name,
        private_key,
        private_key_file,
        listen_port,
        mtu,
        dns: raw.dns.unwrap_or(false),
        state_dir,
    })
}

/// Validates every `[[gateway]]`, including what must differ between them.
fn validate_gateways(
    raws: Vec<Spanned<RawGateway>>,
    src: &Source<'_>,
    own_key: &PublicKey,
) -> Result<Vec<ClientGatewayConfig>, ConfigError> {
    let mut gateways = Vec::with_capacity(raws.len());
    // For each name and key: the gateway that has it and the line it is on.
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut keys: HashMap<PublicKey, (String, usize)> = HashMap::new();

    for raw in raws {
        let raw = raw.into_inner();
        let name = raw.name.get_ref().clone();
        let label = format!("gateway {name:?}: ");
        let error = |span: &Range<usize>, kind, message: String, fix: &str| {
            src.error(span, kind, format!("{label}{message}"), fix)
        };

        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(error(
                &raw.name.span(),
                ConfigErrorKind::InvalidValue,
                "name is empty or has control characters".to_owned(),
                "give each gateway a short label, e.g. name = \"office-a\"",
            ));
        }
        if let Some(first) = names.get(&name) {
            return Err(error(
                &raw.name.span(),
                ConfigErrorKind::Duplicate,
                format!("name is already used by the gateway on line {first}"),
                "give each gateway a different name",
            ));
        }
        names.insert(name.clone(), src.line(raw.name.span().start));

        let key_span = raw.public_key.span();
        let written = raw.public_key.get_ref();
        let public_key = PublicKey::from_base64(written.trim()).map_err(|_| {
            error(
                &key_span,
                ConfigErrorKind::InvalidValue,
                format!("public_key {written:?} is not a base64-encoded 32-byte key"),
                "paste the gateway's public key: run `sitelink-keys pubkey < its.key` on the \
                 gateway (44 characters ending in '=')",
            )
        })?;
        if public_key == *own_key {
            return Err(error(
                &key_span,
                ConfigErrorKind::InvalidValue,
                "public_key is the client's own public key".to_owned(),
                "use the gateway's public key, not the one of this client's private_key_file",
            ));
        }
        if let Some((other, line)) = keys.get(&public_key) {
            return Err(error(
                &key_span,
                ConfigErrorKind::Duplicate,
                format!("public_key is already used by gateway {other:?} on line {line}"),
                "each gateway has its own key pair; check that you pasted the right public key",
            ));
        }
        keys.insert(public_key, (name.clone(), src.line(key_span.start)));

        let endpoint = endpoint::parse(raw.endpoint.get_ref())
            .map_err(|p| error(&raw.endpoint.span(), p.kind, p.message, &p.fix))?
            .into();

        let persistent_keepalive = match &raw.persistent_keepalive {
            None => Some(DEFAULT_CLIENT_KEEPALIVE),
            Some(spanned) => {
                let value = *spanned.get_ref();
                let seconds = u16::try_from(value).map_err(|_| {
                    error(
                        &spanned.span(),
                        ConfigErrorKind::InvalidValue,
                        format!("persistent_keepalive {value} is not between 0 and 65535"),
                        &format!(
                            "give the interval in seconds, e.g. {DEFAULT_CLIENT_KEEPALIVE}, or 0 \
                             to turn keepalives off"
                        ),
                    )
                })?;
                (seconds != 0).then_some(seconds)
            }
        };

        gateways.push(ClientGatewayConfig {
            name,
            public_key,
            endpoint,
            persistent_keepalive,
        });
    }
    Ok(gateways)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_round_trips_through_display() {
        for spec in [
            "198.51.100.1:51820",
            "[2001:db8::1]:51820",
            "vpn.example.com:51820",
        ] {
            let endpoint: GatewayEndpoint = spec.parse().expect(spec);
            assert_eq!(endpoint.to_string(), spec);
            assert_eq!(endpoint.port(), 51820);
        }
    }

    #[test]
    fn endpoint_errors_say_how_to_write_one() {
        let err = "198.51.100.1"
            .parse::<GatewayEndpoint>()
            .expect_err("no port");
        assert!(err.message().contains("has no port"), "{err}");
        assert!(err.to_string().contains("198.51.100.2:51820"), "{err}");
    }

    #[test]
    fn literal_endpoint_resolves_to_itself() {
        let endpoint: GatewayEndpoint = "198.51.100.1:51820".parse().expect("endpoint");
        assert_eq!(
            endpoint.resolve().ok(),
            Some("198.51.100.1:51820".parse().expect("addr"))
        );
    }
}

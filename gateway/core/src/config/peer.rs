//! The `[[peer]]` tables: the remote gateways this one has tunnels to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::endpoint;
use super::source::{SectionDoc, Source};
use super::{key_file_error, ConfigError, ConfigErrorKind};
use crate::keys::{read_preshared_key_file, PresharedKey, PublicKey};

/// One `[[peer]]` table: a remote gateway and the networks behind it.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// `name`: a label for logs, status and error messages, e.g. `"office-b"`. Unique among peers.
    pub name: String,
    /// `public_key`: the peer's public key in `wg pubkey` format (44 base64 characters). Unique
    /// among peers, and not this gateway's own key.
    pub public_key: PublicKey,
    /// The key read from `preshared_key_file`, if given: a file in `wg genpsk` format, resolved
    /// against the config file's directory, mode 0600. Both sides must use the same one.
    pub preshared_key: Option<PresharedKey>,
    /// `endpoint`, resolved: where to send the first handshake. Absent for a peer that always
    /// connects to us; a host name is resolved once at load time, preferring IPv4.
    pub endpoint: Option<SocketAddr>,
    /// `endpoint` as written: `"198.51.100.2:51820"`, `"[2001:db8::2]:51820"` or
    /// `"gw.example.com:51820"`.
    pub endpoint_spec: Option<String>,
    /// `allowed_ips`: the inner addresses routed to this peer and accepted from it, e.g.
    /// `["10.77.0.2/32", "192.168.20.0/24"]`. Host bits are cleared (with a warning). No prefix may
    /// appear under two peers; a more specific prefix inside another peer's is fine (longest
    /// prefix wins).
    pub allowed_ips: Vec<IpNet>,
    /// `persistent_keepalive`: seconds between keepalives to hold a NAT mapping open, 1..=65535.
    /// `None` when absent or 0 (off).
    pub persistent_keepalive: Option<u16>,
    /// `rendezvous`: the name of another `[[peer]]` (with an `endpoint`) through which this
    /// peer is found when both are behind NAT: both register their candidates there, punch a
    /// direct path, and relay through it when no direct path works. Optional; the peer then
    /// needs no `endpoint`.
    pub rendezvous: Option<String>,
}

/// `[[peer]]` as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    name: Spanned<String>,
    public_key: Spanned<String>,
    #[serde(default)]
    preshared_key_file: Option<Spanned<String>>,
    #[serde(default)]
    endpoint: Option<Spanned<String>>,
    allowed_ips: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    persistent_keepalive: Option<Spanned<i64>>,
    #[serde(default)]
    rendezvous: Option<Spanned<String>>,
}

/// How each key of `[[peer]]` is written; used in error messages.
pub(super) const DOC: SectionDoc = SectionDoc {
    table: "peer",
    array: true,
    examples: &[
        ("name", "name = \"office-b\""),
        (
            "public_key",
            "public_key = \"<the 44 characters printed by sitelink-keys pubkey on the peer>\"",
        ),
        ("preshared_key_file", "preshared_key_file = \"ab.psk\""),
        ("endpoint", "endpoint = \"198.51.100.2:51820\""),
        (
            "allowed_ips",
            "allowed_ips = [\"10.77.0.2/32\", \"192.168.20.0/24\"]",
        ),
        ("persistent_keepalive", "persistent_keepalive = 25"),
        ("rendezvous", "rendezvous = \"hub\""),
    ],
};

/// Validates every `[[peer]]`, including what must differ between peers.
pub(super) fn validate_all(
    raws: Vec<Spanned<RawPeer>>,
    src: &Source<'_>,
    own_key: &PublicKey,
) -> Result<Vec<PeerConfig>, ConfigError> {
    let mut peers = Vec::with_capacity(raws.len());
    // For each name, key and prefix: the peer that has it and the line it is on.
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut keys: HashMap<PublicKey, (String, usize)> = HashMap::new();
    let mut prefixes: HashMap<IpNet, (String, usize)> = HashMap::new();
    // Each `rendezvous = "…"` as written, checked once all names are known.
    let mut rendezvous_refs: Vec<(String, Spanned<String>)> = Vec::new();

    for raw in raws {
        let raw = raw.into_inner();
        let name = raw.name.get_ref().clone();
        let label = format!("peer {name:?}: ");
        let line_of = |span: &Range<usize>| src.line(span.start);
        let duplicate = |span: &Range<usize>, message: String, fix: &str| {
            src.error(
                span,
                ConfigErrorKind::Duplicate,
                format!("{label}{message}"),
                fix,
            )
        };
        let invalid = |span: &Range<usize>, message: String, fix: &str| {
            src.error(
                span,
                ConfigErrorKind::InvalidValue,
                format!("{label}{message}"),
                fix,
            )
        };

        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(invalid(
                &raw.name.span(),
                "name is empty or has control characters".to_owned(),
                "give each peer a short label, e.g. name = \"office-b\"",
            ));
        }
        if let Some(first) = names.get(&name) {
            return Err(duplicate(
                &raw.name.span(),
                format!("name is already used by the peer on line {first}"),
                "give each peer a different name",
            ));
        }
        names.insert(name.clone(), line_of(&raw.name.span()));

        let key_span = raw.public_key.span();
        let public_key = PublicKey::from_base64(raw.public_key.get_ref()).map_err(|_| {
            invalid(
                &key_span,
                format!(
                    "public_key {:?} is not a base64-encoded 32-byte key",
                    raw.public_key.get_ref()
                ),
                "paste the peer's public key: run `sitelink-keys pubkey < its.key` on the peer \
                 (44 characters ending in '=')",
            )
        })?;
        if public_key == *own_key {
            return Err(invalid(
                &key_span,
                "public_key is this gateway's own public key".to_owned(),
                "use the public key of the remote gateway, not of this one's private_key_file",
            ));
        }
        if let Some((other, line)) = keys.get(&public_key) {
            return Err(duplicate(
                &key_span,
                format!("public_key is already used by peer {other:?} on line {line}"),
                "each peer has its own key pair; check that you pasted the right public key",
            ));
        }
        keys.insert(public_key, (name.clone(), line_of(&key_span)));

        let preshared_key = match &raw.preshared_key_file {
            None => None,
            Some(file) => {
                let written = file.get_ref();
                let path = src.resolve(written);
                let key = read_preshared_key_file(&path).map_err(|e| {
                    key_file_error(src, &file.span(), &label, "preshared_key_file", written, &e)
                })?;
                Some(key)
            }
        };

        let (endpoint, endpoint_spec) = match &raw.endpoint {
            None => (None, None),
            Some(spec) => {
                let addr = endpoint::resolve(spec.get_ref()).map_err(|p| {
                    src.error(&spec.span(), p.kind, format!("{label}{}", p.message), p.fix)
                })?;
                (Some(addr), Some(spec.get_ref().clone()))
            }
        };

        let mut allowed_ips: Vec<IpNet> = Vec::with_capacity(raw.allowed_ips.get_ref().len());
        for entry in raw.allowed_ips.get_ref() {
            let text = entry.get_ref();
            let span = entry.span();
            let written: IpNet = match text.parse() {
                Ok(net) => net,
                Err(_) => {
                    let fix = if let Ok(ip) = text.parse::<std::net::IpAddr>() {
                        let bits = if ip.is_ipv4() { 32 } else { 128 };
                        format!("write a single address with a prefix length, e.g. \"{ip}/{bits}\"")
                    } else {
                        "write an address with a prefix length, e.g. \"192.168.20.0/24\"".to_owned()
                    };
                    return Err(invalid(
                        &span,
                        format!("allowed_ips {text:?} is not a valid prefix"),
                        &fix,
                    ));
                }
            };
            let net = written.trunc();
            if net != written {
                tracing::warn!(
                    file = %src.path().display(),
                    line = line_of(&span),
                    peer = %name,
                    written = %written,
                    using = %net,
                    "allowed_ips entry has host bits set; using its network prefix"
                );
            }
            if allowed_ips.contains(&net) {
                tracing::warn!(
                    file = %src.path().display(),
                    line = line_of(&span),
                    peer = %name,
                    prefix = %net,
                    "allowed_ips lists the same prefix twice; ignoring the repeat"
                );
                continue;
            }
            if let Some((other, line)) = prefixes.get(&net) {
                return Err(duplicate(
                    &span,
                    format!(
                        "allowed_ips {text:?} is already routed to peer {other:?} (line {line})"
                    ),
                    "a prefix can belong to one peer only: remove it from one of them (a more \
                     specific prefix inside another peer's is fine)",
                ));
            }
            prefixes.insert(net, (name.clone(), line_of(&span)));
            allowed_ips.push(net);
        }
        if allowed_ips.is_empty() {
            tracing::warn!(
                file = %src.path().display(),
                line = line_of(&raw.allowed_ips.span()),
                peer = %name,
                "allowed_ips is empty; no traffic will be routed to or accepted from this peer"
            );
        }

        let persistent_keepalive = match &raw.persistent_keepalive {
            None => None,
            Some(spanned) => {
                let value = *spanned.get_ref();
                let seconds = u16::try_from(value).map_err(|_| {
                    invalid(
                        &spanned.span(),
                        format!("persistent_keepalive {value} is not between 0 and 65535"),
                        "give the interval in seconds, e.g. 25, or 0 (or no line) to turn it off",
                    )
                })?;
                (seconds != 0).then_some(seconds)
            }
        };

        if let Some(r) = &raw.rendezvous {
            rendezvous_refs.push((name.clone(), r.clone()));
        }
        peers.push(PeerConfig {
            rendezvous: raw.rendezvous.as_ref().map(|r| r.get_ref().clone()),
            name,
            public_key,
            preshared_key,
            endpoint,
            endpoint_spec,
            allowed_ips,
            persistent_keepalive,
        });
    }
    for (name, r) in rendezvous_refs {
        let target = r.get_ref();
        let fix = "name another [[peer]] that has an endpoint, e.g. rendezvous = \"hub\"";
        let problem = if *target == name {
            Some(format!("peer {name:?}: rendezvous names the peer itself"))
        } else {
            match peers.iter().find(|p| p.name == *target) {
                None => Some(format!(
                    "peer {name:?}: rendezvous {target:?} is not the name of a [[peer]]"
                )),
                Some(hub) if hub.endpoint.is_none() => Some(format!(
                    "peer {name:?}: rendezvous {target:?} has no endpoint to reach it at"
                )),
                Some(_) => None,
            }
        };
        if let Some(message) = problem {
            return Err(src.error(&r.span(), ConfigErrorKind::InvalidValue, message, fix));
        }
    }
    Ok(peers)
}

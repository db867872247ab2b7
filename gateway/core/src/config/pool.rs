//! The `[pool]` table and the `[[client]]` tables: the virtual addresses remote-worker clients
//! lease, and the clients the gateway knows by name.
//!
//! ```toml
//! [pool]
//! ranges = ["10.77.100.0/24"]
//! exclude = ["10.77.100.1", "10.77.100.2-10.77.100.9"]
//! lease_time = 3600                  # seconds
//! routes = ["192.168.10.0/24", "192.168.20.0/24"]
//! dns = ["192.168.10.53"]            # optional
//! store = "leases.db"                # relative to the config file
//! renew_after_percent = 50           # optional (T1)
//! rebind_after_percent = 75          # optional (T2)
//! full_tunnel = false                # optional
//!
//! [[client]]
//! name = "alice"
//! public_key = "base64…"
//! fixed_address = "10.77.100.50"     # optional
//! ```
//!
//! The result is the lease pool's own [`PoolSettings`] and [`ClientEntry`]s, checked here with
//! [`PoolSettings::validate`] so that a mistake the pool would refuse is reported with its line.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;
use toml::Spanned;

use super::source::{SectionDoc, Source};
use super::{ConfigError, ConfigErrorKind, InterfaceConfig, PeerConfig};
use crate::keys::PublicKey;
use crate::lease::{
    AddressRange, ClientEntry, PoolError, PoolSettings, DEFAULT_REBIND_AFTER_PERCENT,
    DEFAULT_RENEW_AFTER_PERCENT, MAX_LEASE_TIME,
};

/// `[pool]` as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    ranges: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    exclude: Option<Spanned<Vec<Spanned<String>>>>,
    lease_time: Spanned<i64>,
    #[serde(default)]
    routes: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    dns: Option<Spanned<Vec<Spanned<String>>>>,
    store: Spanned<String>,
    #[serde(default)]
    renew_after_percent: Option<Spanned<i64>>,
    #[serde(default)]
    rebind_after_percent: Option<Spanned<i64>>,
    #[serde(default)]
    full_tunnel: Option<Spanned<bool>>,
}

/// `[[client]]` as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    name: Spanned<String>,
    public_key: Spanned<String>,
    #[serde(default)]
    fixed_address: Option<Spanned<String>>,
}

/// How each key of `[pool]` is written; used in error messages.
pub(super) const POOL_DOC: SectionDoc = SectionDoc {
    table: "pool",
    array: false,
    examples: &[
        ("ranges", "ranges = [\"10.77.100.0/24\"]"),
        (
            "exclude",
            "exclude = [\"10.77.100.1\", \"10.77.100.2-10.77.100.9\"]",
        ),
        ("lease_time", "lease_time = 3600"),
        (
            "routes",
            "routes = [\"192.168.10.0/24\", \"192.168.20.0/24\"]",
        ),
        ("dns", "dns = [\"192.168.10.53\"]"),
        ("store", "store = \"leases.db\""),
        ("renew_after_percent", "renew_after_percent = 50"),
        ("rebind_after_percent", "rebind_after_percent = 75"),
        ("full_tunnel", "full_tunnel = false"),
    ],
};

/// How each key of `[[client]]` is written; used in error messages.
pub(super) const CLIENT_DOC: SectionDoc = SectionDoc {
    table: "client",
    array: true,
    examples: &[
        ("name", "name = \"alice\""),
        (
            "public_key",
            "public_key = \"<the 44 characters printed by sitelink-keys pubkey on the client>\"",
        ),
        ("fixed_address", "fixed_address = \"10.77.100.50\""),
    ],
};

/// Where each value that the pool's own checks may refuse was written.
#[derive(Default)]
struct Spans {
    pool: Range<usize>,
    ranges: Range<usize>,
    range: Vec<(Ipv4Net, Range<usize>)>,
    exclude: Vec<(AddressRange, String, Range<usize>)>,
    lease_time: Range<usize>,
    renew: Option<Range<usize>>,
    rebind: Option<Range<usize>>,
    /// Per client: name, span of the name, span of `fixed_address`.
    clients: Vec<(String, Range<usize>, Option<Range<usize>>)>,
}

/// Validates `[pool]` and every `[[client]]`. No `[pool]` means no remote-worker clients, and then
/// a `[[client]]` is an error.
pub(super) fn validate(
    raw_pool: Option<Spanned<RawPool>>,
    raw_clients: Vec<Spanned<RawClient>>,
    src: &Source<'_>,
    interface: &InterfaceConfig,
    peers: &[PeerConfig],
) -> Result<(Option<PoolSettings>, Vec<ClientEntry>), ConfigError> {
    let Some(raw_pool) = raw_pool else {
        if let Some(first) = raw_clients.first() {
            return Err(src.error(
                &first.span(),
                ConfigErrorKind::MissingKey,
                "[[client]] needs a [pool] to lease addresses from",
                "add a [pool] table with ranges, lease_time and store, or remove the [[client]] \
                 tables",
            ));
        }
        return Ok((None, Vec::new()));
    };
    let mut spans = Spans {
        pool: raw_pool.span(),
        ..Spans::default()
    };
    let mut settings = validate_pool(raw_pool.into_inner(), src, interface, &mut spans)?;
    let clients = validate_clients(raw_clients, src, interface, peers, &mut spans)?;

    // The gateway's own tunnel addresses are never handed out.
    for own in interface.address.iter().filter_map(|a| match a {
        IpNet::V4(net) => Some(net.addr()),
        IpNet::V6(_) => None,
    }) {
        let inside = settings.ranges.iter().any(|r| r.contains(&own));
        if inside && !settings.exclude.iter().any(|e| e.contains(own)) {
            tracing::debug!(address = %own, "excluding the gateway's own address from the pool");
            settings.exclude.push(AddressRange::single(own));
        }
    }

    settings
        .validate(&clients)
        .map_err(|e| pool_error(&e, src, &spans, &settings, interface))?;
    Ok((Some(settings), clients))
}

/// Validates the `[pool]` table's values one by one.
fn validate_pool(
    raw: RawPool,
    src: &Source<'_>,
    interface: &InterfaceConfig,
    spans: &mut Spans,
) -> Result<PoolSettings, ConfigError> {
    let invalid = |span: &Range<usize>, message: String, fix: &str| {
        src.error(
            span,
            ConfigErrorKind::InvalidValue,
            format!("pool: {message}"),
            fix,
        )
    };

    spans.ranges = raw.ranges.span();
    let mut ranges: Vec<Ipv4Net> = Vec::with_capacity(raw.ranges.get_ref().len());
    for entry in raw.ranges.get_ref() {
        let (text, span) = (entry.get_ref(), entry.span());
        let net = match text.parse::<IpNet>() {
            Ok(IpNet::V4(net)) => net,
            Ok(IpNet::V6(_)) => {
                return Err(invalid(
                    &span,
                    format!("ranges {text:?} is IPv6; client addresses are IPv4"),
                    "write an IPv4 prefix, e.g. \"10.77.100.0/24\"",
                ))
            }
            Err(_) => {
                let fix = match text.parse::<Ipv4Addr>() {
                    Ok(ip) => format!(
                        "write a prefix: the subnet, e.g. \"{}/24\", or \"{ip}/32\" for this \
                         address alone",
                        Ipv4Net::new(ip, 24).map_or(ip, |n| n.network())
                    ),
                    Err(_) => "write a prefix, e.g. \"10.77.100.0/24\"".to_owned(),
                };
                return Err(invalid(
                    &span,
                    format!("ranges {text:?} is not an IPv4 prefix"),
                    &fix,
                ));
            }
        };
        if net.trunc() != net {
            return Err(invalid(
                &span,
                format!("ranges {text:?} has host bits set"),
                &format!("write the network prefix \"{}\"", net.trunc()),
            ));
        }
        if let Some((other, other_span)) = spans
            .range
            .iter()
            .find(|(other, _)| other.contains(&net.network()) || net.contains(&other.network()))
        {
            return Err(src.error(
                &span,
                ConfigErrorKind::Duplicate,
                format!(
                    "pool: ranges {text:?} overlaps {other} (line {})",
                    src.line(other_span.start)
                ),
                "list each address once: remove one of the ranges or split them",
            ));
        }
        spans.range.push((net, span));
        ranges.push(net);
    }
    if ranges.is_empty() {
        return Err(invalid(
            &spans.ranges,
            "ranges is empty".to_owned(),
            "give the pool at least one prefix to lease from, e.g. ranges = [\"10.77.100.0/24\"]",
        ));
    }

    let mut exclude = Vec::new();
    if let Some(list) = &raw.exclude {
        for entry in list.get_ref() {
            let (text, span) = (entry.get_ref(), entry.span());
            let range = text.parse::<AddressRange>().map_err(|e| {
                invalid(
                    &span,
                    format!("exclude {text:?}: {e}"),
                    "write a single address (\"10.77.100.1\") or an inclusive range \
                     (\"10.77.100.2-10.77.100.9\")",
                )
            })?;
            spans.exclude.push((range, text.clone(), span));
            exclude.push(range);
        }
    }

    spans.lease_time = raw.lease_time.span();
    let seconds = *raw.lease_time.get_ref();
    let lease_time = u64::try_from(seconds)
        .ok()
        .map(Duration::from_secs)
        .filter(|d| !d.is_zero() && *d <= MAX_LEASE_TIME)
        .ok_or_else(|| {
            invalid(
                &spans.lease_time,
                format!(
                    "lease_time {seconds} is not between 1 and {} seconds",
                    MAX_LEASE_TIME.as_secs()
                ),
                "give the lease time in seconds, e.g. lease_time = 3600 for an hour",
            )
        })?;

    let percent = |value: &Option<Spanned<i64>>, key: &str, default: u8| match value {
        None => Ok(default),
        Some(spanned) => {
            let v = *spanned.get_ref();
            u8::try_from(v)
                .ok()
                .filter(|p| (1..=99).contains(p))
                .ok_or_else(|| {
                    invalid(
                        &spanned.span(),
                        format!("{key} {v} is not between 1 and 99"),
                        &format!("give a percentage of lease_time, e.g. {key} = {default}"),
                    )
                })
        }
    };
    let renew_after_percent = percent(
        &raw.renew_after_percent,
        "renew_after_percent",
        DEFAULT_RENEW_AFTER_PERCENT,
    )?;
    let rebind_after_percent = percent(
        &raw.rebind_after_percent,
        "rebind_after_percent",
        DEFAULT_REBIND_AFTER_PERCENT,
    )?;
    spans.renew = raw.renew_after_percent.as_ref().map(Spanned::span);
    spans.rebind = raw.rebind_after_percent.as_ref().map(Spanned::span);

    let mut routes: Vec<Ipv4Net> = Vec::new();
    if let Some(list) = &raw.routes {
        for entry in list.get_ref() {
            let (text, span) = (entry.get_ref(), entry.span());
            let written = match text.parse::<IpNet>() {
                Ok(IpNet::V4(net)) => net,
                Ok(IpNet::V6(_)) => {
                    return Err(invalid(
                        &span,
                        format!("routes {text:?} is IPv6; the client tunnel carries IPv4"),
                        "list the IPv4 networks clients reach through the gateway, e.g. \
                         \"192.168.10.0/24\"",
                    ))
                }
                Err(_) => {
                    return Err(invalid(
                        &span,
                        format!("routes {text:?} is not an IPv4 prefix"),
                        "write a network with its prefix length, e.g. \"192.168.10.0/24\"",
                    ))
                }
            };
            let net = written.trunc();
            if net != written {
                tracing::warn!(
                    file = %src.path().display(),
                    line = src.line(span.start),
                    written = %written,
                    using = %net,
                    "pool routes entry has host bits set; using its network prefix"
                );
            }
            if routes.contains(&net) {
                tracing::warn!(
                    file = %src.path().display(),
                    line = src.line(span.start),
                    prefix = %net,
                    "pool routes lists the same prefix twice; ignoring the repeat"
                );
                continue;
            }
            routes.push(net);
        }
    }

    let mut dns = Vec::new();
    if let Some(list) = &raw.dns {
        for entry in list.get_ref() {
            let (text, span) = (entry.get_ref(), entry.span());
            match text.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => dns.push(ip),
                Ok(IpAddr::V6(_)) => {
                    return Err(invalid(
                        &span,
                        format!("dns {text:?} is IPv6; the client tunnel carries IPv4"),
                        "give the IPv4 address of a DNS server, e.g. \"192.168.10.53\"",
                    ))
                }
                Err(_) => {
                    return Err(invalid(
                        &span,
                        format!("dns {text:?} is not an IP address"),
                        "give the address of a DNS server, e.g. dns = [\"192.168.10.53\"]",
                    ))
                }
            }
        }
    }

    let written = raw.store.get_ref();
    if written.trim().is_empty() {
        return Err(invalid(
            &raw.store.span(),
            "store is empty".to_owned(),
            "name the lease database file, e.g. store = \"leases.db\" (relative to the config \
             file)",
        ));
    }
    let store = src.resolve(written);

    let full_tunnel = raw.full_tunnel.as_ref().is_some_and(|f| *f.get_ref());
    if routes.is_empty() && !full_tunnel {
        tracing::warn!(
            file = %src.path().display(),
            line = src.line(spans.pool.start),
            gateway = %interface.name,
            "pool has no routes and full_tunnel is off: clients will reach only the gateway"
        );
    }

    Ok(PoolSettings {
        ranges,
        exclude,
        lease_time,
        renew_after_percent,
        rebind_after_percent,
        routes,
        dns,
        full_tunnel,
        store,
        ..PoolSettings::new(Vec::new(), lease_time, std::path::PathBuf::new())
    })
}

/// Validates every `[[client]]`, including what must differ between clients and peers.
fn validate_clients(
    raws: Vec<Spanned<RawClient>>,
    src: &Source<'_>,
    interface: &InterfaceConfig,
    peers: &[PeerConfig],
    spans: &mut Spans,
) -> Result<Vec<ClientEntry>, ConfigError> {
    let own_key = interface.private_key.public_key();
    let mut clients = Vec::with_capacity(raws.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut keys: HashMap<PublicKey, (String, usize)> = HashMap::new();
    for raw in raws {
        let raw = raw.into_inner();
        let name = raw.name.get_ref().clone();
        let label = format!("client {name:?}: ");
        let error = |span: &Range<usize>, kind, message: String, fix: &str| {
            src.error(span, kind, format!("{label}{message}"), fix)
        };
        let name_span = raw.name.span();
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(error(
                &name_span,
                ConfigErrorKind::InvalidValue,
                "name is empty or has control characters".to_owned(),
                "give each client a short label, e.g. name = \"alice\"",
            ));
        }
        if let Some(first) = names.get(&name) {
            return Err(error(
                &name_span,
                ConfigErrorKind::Duplicate,
                format!("name is already used by the client on line {first}"),
                "give each client a different name",
            ));
        }
        names.insert(name.clone(), src.line(name_span.start));

        let key_span = raw.public_key.span();
        let public_key = PublicKey::from_base64(raw.public_key.get_ref()).map_err(|_| {
            error(
                &key_span,
                ConfigErrorKind::InvalidValue,
                format!(
                    "public_key {:?} is not a base64-encoded 32-byte key",
                    raw.public_key.get_ref()
                ),
                "paste the client's public key: run `sitelink-keys pubkey < its.key` on the \
                 client (44 characters ending in '=')",
            )
        })?;
        if public_key == own_key {
            return Err(error(
                &key_span,
                ConfigErrorKind::InvalidValue,
                "public_key is this gateway's own public key".to_owned(),
                "use the public key of the client, not of this gateway's private_key_file",
            ));
        }
        if let Some(peer) = peers.iter().find(|p| p.public_key == public_key) {
            return Err(error(
                &key_span,
                ConfigErrorKind::Duplicate,
                format!("public_key is also the key of peer {:?}", peer.name),
                "a key is either a remote gateway ([[peer]]) or a client ([[client]]); give the \
                 client its own key pair",
            ));
        }
        if let Some((other, line)) = keys.get(&public_key) {
            return Err(error(
                &key_span,
                ConfigErrorKind::Duplicate,
                format!("public_key is already used by client {other:?} on line {line}"),
                "each client has its own key pair; check that you pasted the right public key",
            ));
        }
        keys.insert(public_key, (name.clone(), src.line(key_span.start)));

        let fixed_address = match &raw.fixed_address {
            None => None,
            Some(spanned) => {
                let text = spanned.get_ref();
                let address = text.parse::<Ipv4Addr>().map_err(|_| {
                    error(
                        &spanned.span(),
                        ConfigErrorKind::InvalidValue,
                        format!("fixed_address {text:?} is not an IPv4 address"),
                        "write one address from the pool's ranges, without a prefix length, \
                         e.g. fixed_address = \"10.77.100.50\"",
                    )
                })?;
                Some(address)
            }
        };
        spans.clients.push((
            name.clone(),
            name_span,
            raw.fixed_address.as_ref().map(Spanned::span),
        ));
        clients.push(ClientEntry {
            name,
            public_key,
            fixed_address,
        });
    }
    Ok(clients)
}

/// Turns the pool's refusal of valid-looking values into an error at the right line.
fn pool_error(
    e: &PoolError,
    src: &Source<'_>,
    spans: &Spans,
    settings: &PoolSettings,
    interface: &InterfaceConfig,
) -> ConfigError {
    let ranges = settings
        .ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let client = |name: &str| spans.clients.iter().find(|(n, _, _)| n == name);
    let fixed_span = |name: &str| {
        client(name)
            .and_then(|(_, name_span, fixed)| fixed.clone().or_else(|| Some(name_span.clone())))
            .unwrap_or_else(|| spans.pool.clone())
    };
    let invalid = |span: &Range<usize>, message: String, fix: String| {
        src.error(span, ConfigErrorKind::InvalidValue, message, fix)
    };
    match e {
        PoolError::ExclusionOutsideRanges { exclusion } => {
            let (text, span) = spans
                .exclude
                .iter()
                .find(|(r, _, _)| r == exclusion)
                .map_or((exclusion.to_string(), spans.pool.clone()), |(_, t, s)| {
                    (t.clone(), s.clone())
                });
            invalid(
                &span,
                format!("pool: exclude {text:?} is not inside the pool's ranges ({ranges})"),
                "exclude only addresses of ranges: remove it, or add the range it belongs to"
                    .to_owned(),
            )
        }
        PoolError::NoAssignableAddresses => invalid(
            &spans.ranges,
            "pool: ranges leave no address to hand out once exclude and the network and \
             broadcast addresses are taken away"
                .to_owned(),
            "widen ranges or exclude fewer addresses".to_owned(),
        ),
        PoolError::InvalidRenewRebind { renew, rebind } => invalid(
            spans
                .rebind
                .as_ref()
                .or(spans.renew.as_ref())
                .unwrap_or(&spans.pool),
            format!(
                "pool: renew_after_percent ({renew}) must be below rebind_after_percent \
                 ({rebind})"
            ),
            "clients renew before they rebind: e.g. renew_after_percent = 50 and \
             rebind_after_percent = 75"
                .to_owned(),
        ),
        PoolError::FixedAddressOutsideRanges { client, address } => invalid(
            &fixed_span(client),
            format!(
                "client {client:?}: fixed_address {address} is not inside the pool's ranges \
                 ({ranges})"
            ),
            "pick an address inside the pool's ranges".to_owned(),
        ),
        PoolError::FixedAddressExcluded { client, address } => {
            let own = interface
                .address
                .iter()
                .any(|a| a.addr() == IpAddr::V4(*address));
            let (why, fix) = if own {
                (
                    "is this gateway's own tunnel address",
                    "pick another address: the gateway keeps its own",
                )
            } else {
                (
                    "is excluded from the pool",
                    "pick an address that exclude does not list, or take it out of exclude",
                )
            };
            invalid(
                &fixed_span(client),
                format!("client {client:?}: fixed_address {address} {why}"),
                fix.to_owned(),
            )
        }
        PoolError::FixedAddressNotAssignable {
            client,
            address,
            range,
        } => invalid(
            &fixed_span(client),
            format!(
                "client {client:?}: fixed_address {address} is the network or broadcast address \
                 of {range}"
            ),
            format!("pick a host address of {range}"),
        ),
        PoolError::DuplicateFixedAddress {
            address,
            first,
            second,
        } => {
            let first_line = src.line(fixed_span(first).start);
            src.error(
                &fixed_span(second),
                ConfigErrorKind::Duplicate,
                format!(
                    "client {second:?}: fixed_address {address} is already client {first:?}'s \
                     (line {first_line})"
                ),
                "give each client its own fixed_address",
            )
        }
        PoolError::InvalidLeaseTime { .. } => invalid(
            &spans.lease_time,
            format!("pool: {e}"),
            "give the lease time in seconds, e.g. lease_time = 3600".to_owned(),
        ),
        PoolError::RangeHostBits { .. }
        | PoolError::OverlappingRanges { .. }
        | PoolError::NoRanges => {
            let span = match e {
                PoolError::RangeHostBits { range, .. }
                | PoolError::OverlappingRanges { second: range, .. } => spans
                    .range
                    .iter()
                    .find(|(r, _)| r == range)
                    .map_or(&spans.ranges, |(_, s)| s),
                _ => &spans.ranges,
            };
            invalid(
                span,
                format!("pool: {e}"),
                "write each range as a network prefix, e.g. \"10.77.100.0/24\", without overlaps"
                    .to_owned(),
            )
        }
        PoolError::EmptyClientName { .. }
        | PoolError::DuplicateClientName { .. }
        | PoolError::DuplicateClientKey { .. } => invalid(
            &spans.pool,
            e.to_string(),
            "give each [[client]] its own name and key".to_owned(),
        ),
        PoolError::InvalidOfferTime | PoolError::Store(_) => invalid(
            &spans.pool,
            format!("pool: {e}"),
            "check the [pool] table".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::config::GatewayConfig;
    use crate::keys::{write_secret_file, PrivateKey};

    /// A temp directory with the gateway's key `a.key`; removed when dropped.
    struct Dir {
        path: PathBuf,
        own: PublicKey,
    }

    impl Dir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "sitelink-pool-config-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("temp dir");
            let key = PrivateKey::from_bytes([0x42; 32]);
            write_secret_file(&path.join("a.key"), &format!("{}\n", key.to_base64()))
                .expect("a.key");
            Self {
                path,
                own: key.public_key(),
            }
        }

        fn config_path(&self) -> PathBuf {
            self.path.join("gw.toml")
        }

        /// Parses `lines` after a valid `[interface]` and peer (lines 1–9), so that `rest[0]` is
        /// line 10. `@A@`, `@B@`, `@P@` and `@OWN@` become client, peer and own keys.
        fn parse(&self, rest: &[&str]) -> Result<GatewayConfig, ConfigError> {
            let head = [
                "[interface]",
                "name = \"sl0\"",
                "private_key_file = \"a.key\"",
                "listen_port = 51820",
                "address = [\"10.77.100.1/24\"]",
                "[[peer]]",
                "name = \"office-b\"",
                "public_key = \"@P@\"",
                "allowed_ips = [\"192.168.20.0/24\"]",
            ];
            let text = head
                .iter()
                .chain(rest)
                .copied()
                .collect::<Vec<_>>()
                .join("\n")
                .replace("@A@", &key(1).to_base64())
                .replace("@B@", &key(2).to_base64())
                .replace("@P@", &key(3).to_base64())
                .replace("@OWN@", &self.own.to_base64());
            GatewayConfig::parse(&text, &self.config_path())
        }

        fn ok(&self, rest: &[&str]) -> GatewayConfig {
            self.parse(rest)
                .unwrap_or_else(|e| panic!("config should load, got:\n{e}"))
        }

        /// Parses a config that must fail at `line` with `kind`, its text containing `words`.
        fn err(&self, rest: &[&str], line: usize, kind: ConfigErrorKind, words: &[&str]) {
            let err = match self.parse(rest) {
                Ok(c) => panic!("config should fail, got {:#?}", c.pool),
                Err(e) => e,
            };
            let text = err.to_string();
            assert_eq!(err.line(), Some(line), "wrong line in:\n{text}");
            assert_eq!(err.kind(), kind, "wrong kind for:\n{text}");
            assert!(
                text.starts_with(&format!("{}:{line}: ", self.config_path().display())),
                "{text}"
            );
            assert!(text.contains("\n  fix: "), "no fix in:\n{text}");
            for w in words {
                assert!(text.contains(w), "{w:?} missing from:\n{text}");
            }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    fn key(n: u8) -> PublicKey {
        PrivateKey::from_bytes([n; 32]).public_key()
    }

    /// A valid `[pool]` (lines 10–16) with `extra` lines appended from line 17.
    fn pool<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut lines = vec![
            "[pool]",
            "ranges = [\"10.77.100.0/24\"]",
            "exclude = [\"10.77.100.1\", \"10.77.100.2-10.77.100.9\"]",
            "lease_time = 3600",
            "routes = [\"192.168.10.0/24\", \"192.168.20.0/24\"]",
            "dns = [\"192.168.10.53\"]",
            "store = \"leases.db\"",
        ];
        lines.extend_from_slice(extra);
        lines
    }

    /// `pool()` with line `line` (10–16) replaced.
    fn pool_with(line: usize, text: &'static str) -> Vec<&'static str> {
        let mut lines = pool(&[]);
        lines[line - 10] = text;
        lines
    }

    #[test]
    fn pool_and_clients_load() {
        let dir = Dir::new();
        let config = dir.ok(&pool(&[
            "renew_after_percent = 40",
            "rebind_after_percent = 80",
            "full_tunnel = true",
            "[[client]]",
            "name = \"alice\"",
            "public_key = \"@A@\"",
            "fixed_address = \"10.77.100.50\"",
            "[[client]]",
            "name = \"bob\"",
            "public_key = \"@B@\"",
        ]));
        let pool = config.pool.expect("pool");
        assert_eq!(pool.ranges, vec!["10.77.100.0/24".parse().expect("net")]);
        assert_eq!(
            pool.exclude,
            vec![
                "10.77.100.1".parse().expect("range"),
                "10.77.100.2-10.77.100.9".parse().expect("range"),
            ]
        );
        assert_eq!(pool.lease_time, Duration::from_secs(3600));
        assert_eq!(pool.renew_after_percent, 40);
        assert_eq!(pool.rebind_after_percent, 80);
        assert!(pool.full_tunnel);
        assert_eq!(pool.routes.len(), 2);
        assert_eq!(pool.dns, vec![Ipv4Addr::new(192, 168, 10, 53)]);
        assert_eq!(pool.store, dir.path.join("leases.db"));
        assert_eq!(config.clients.len(), 2);
        assert_eq!(config.clients[0].name, "alice");
        assert_eq!(config.clients[0].public_key, key(1));
        assert_eq!(
            config.clients[0].fixed_address,
            Some(Ipv4Addr::new(10, 77, 100, 50))
        );
        assert_eq!(config.clients[1].fixed_address, None);
    }

    #[test]
    fn defaults_and_own_address_excluded() {
        let dir = Dir::new();
        let config = dir.ok(&[
            "[pool]",
            "ranges = [\"10.77.100.0/24\"]",
            "lease_time = 600",
            "store = \"/var/lib/sitelink/leases.db\"",
        ]);
        let pool = config.pool.expect("pool");
        assert_eq!(pool.renew_after_percent, 50);
        assert_eq!(pool.rebind_after_percent, 75);
        assert!(!pool.full_tunnel);
        assert!(pool.routes.is_empty() && pool.dns.is_empty());
        assert_eq!(pool.store, Path::new("/var/lib/sitelink/leases.db"));
        // The gateway's own 10.77.100.1 is never handed out.
        assert_eq!(pool.exclude, vec!["10.77.100.1".parse().expect("range")]);
        assert!(config.clients.is_empty());
    }

    #[test]
    fn no_pool_no_clients() {
        let dir = Dir::new();
        let config = dir.ok(&[]);
        assert!(config.pool.is_none());
        assert!(config.clients.is_empty());
    }

    #[test]
    fn client_without_pool() {
        Dir::new().err(
            &["[[client]]", "name = \"alice\"", "public_key = \"@A@\""],
            10,
            ConfigErrorKind::MissingKey,
            &["needs a [pool]"],
        );
    }

    #[test]
    fn range_mistakes() {
        let dir = Dir::new();
        let kind = ConfigErrorKind::InvalidValue;
        dir.err(
            &pool_with(11, "ranges = [\"10.77.100.0\"]"),
            11,
            kind,
            &["not an IPv4 prefix", "\"10.77.100.0/24\""],
        );
        dir.err(
            &pool_with(11, "ranges = [\"fd77::/64\"]"),
            11,
            kind,
            &["IPv6"],
        );
        dir.err(
            &pool_with(11, "ranges = [\"10.77.100.5/24\"]"),
            11,
            kind,
            &["host bits", "\"10.77.100.0/24\""],
        );
        dir.err(
            &pool_with(11, "ranges = []"),
            11,
            kind,
            &["ranges is empty"],
        );
        dir.err(
            &pool_with(11, "ranges = [\"10.77.100.0/24\",\n  \"10.77.100.128/25\"]"),
            12,
            ConfigErrorKind::Duplicate,
            &["overlaps 10.77.100.0/24 (line 11)"],
        );
        // .1 is the gateway's own address, .2 is excluded: nothing is left of a /30.
        let mut tiny = pool_with(11, "ranges = [\"10.77.100.0/30\"]");
        tiny[12 - 10] = "exclude = [\"10.77.100.2\"]";
        dir.err(&tiny, 11, kind, &["no address to hand out"]);
    }

    #[test]
    fn exclude_mistakes() {
        let dir = Dir::new();
        let kind = ConfigErrorKind::InvalidValue;
        dir.err(
            &pool_with(12, "exclude = [\"10.77.100.9-10.77.100.2\"]"),
            12,
            kind,
            &["ends before it starts"],
        );
        dir.err(
            &pool_with(12, "exclude = [\"10.77.100.0/28\"]"),
            12,
            kind,
            &["not an IPv4 address"],
        );
        dir.err(
            &pool_with(12, "exclude = [\n  \"10.77.100.1\",\n  \"10.77.101.1\"]"),
            14,
            kind,
            &["exclude \"10.77.101.1\" is not inside the pool's ranges (10.77.100.0/24)"],
        );
    }

    #[test]
    fn lease_time_and_percent_mistakes() {
        let dir = Dir::new();
        let kind = ConfigErrorKind::InvalidValue;
        dir.err(
            &pool_with(13, "lease_time = 0"),
            13,
            kind,
            &["lease_time 0"],
        );
        dir.err(
            &pool_with(13, "lease_time = 5000000000"),
            13,
            kind,
            &["lease_time 5000000000"],
        );
        dir.err(
            &pool_with(13, "lease_time = \"1h\""),
            13,
            ConfigErrorKind::WrongType,
            &["lease_time", "integer"],
        );
        dir.err(
            &pool(&["renew_after_percent = 100"]),
            17,
            kind,
            &["renew_after_percent 100 is not between 1 and 99"],
        );
        dir.err(
            &pool(&["renew_after_percent = 80", "rebind_after_percent = 60"]),
            18,
            kind,
            &["renew_after_percent (80) must be below rebind_after_percent (60)"],
        );
        dir.err(
            &pool(&["renew_after_percent = 80"]),
            17,
            kind,
            &["(80) must be below rebind_after_percent (75)"],
        );
    }

    #[test]
    fn routes_dns_store_mistakes() {
        let dir = Dir::new();
        let kind = ConfigErrorKind::InvalidValue;
        dir.err(
            &pool_with(14, "routes = [\"192.168.10.0/33\"]"),
            14,
            kind,
            &["routes \"192.168.10.0/33\" is not an IPv4 prefix"],
        );
        dir.err(
            &pool_with(15, "dns = [\"dns.example\"]"),
            15,
            kind,
            &["not an IP address"],
        );
        dir.err(
            &pool_with(16, "store = \"\""),
            16,
            kind,
            &["store is empty"],
        );
        dir.err(
            &pool_with(16, "# no store"),
            10,
            ConfigErrorKind::MissingKey,
            &["missing required key `store`", "store = \"leases.db\""],
        );
        dir.err(
            &pool(&["lease_tme = 60"]),
            17,
            ConfigErrorKind::UnknownKey,
            &["unknown key `lease_tme`"],
        );
    }

    #[test]
    fn client_identity_mistakes() {
        let dir = Dir::new();
        let client = |name: &'static str, key: &'static str| ["[[client]]", name, key];
        let two = |a: [&'static str; 3], b: [&'static str; 3]| {
            pool(&[a[0], a[1], a[2], b[0], b[1], b[2]])
        };
        dir.err(
            &two(
                client("name = \"alice\"", "public_key = \"@A@\""),
                client("name = \"alice\"", "public_key = \"@B@\""),
            ),
            21,
            ConfigErrorKind::Duplicate,
            &["client \"alice\": name is already used by the client on line 18"],
        );
        dir.err(
            &two(
                client("name = \"alice\"", "public_key = \"@A@\""),
                client("name = \"bob\"", "public_key = \"@A@\""),
            ),
            22,
            ConfigErrorKind::Duplicate,
            &["already used by client \"alice\" on line 19"],
        );
        dir.err(
            &pool(&client("name = \"\"", "public_key = \"@A@\"")),
            18,
            ConfigErrorKind::InvalidValue,
            &["name is empty"],
        );
        dir.err(
            &pool(&client("name = \"alice\"", "public_key = \"abc\"")),
            19,
            ConfigErrorKind::InvalidValue,
            &["not a base64-encoded 32-byte key"],
        );
        dir.err(
            &pool(&client("name = \"alice\"", "public_key = \"@OWN@\"")),
            19,
            ConfigErrorKind::InvalidValue,
            &["this gateway's own public key"],
        );
        dir.err(
            &pool(&client("name = \"alice\"", "public_key = \"@P@\"")),
            19,
            ConfigErrorKind::Duplicate,
            &["also the key of peer \"office-b\""],
        );
        dir.err(
            &pool(&[
                "[[client]]",
                "name = \"alice\"",
                "public_key = \"@A@\"",
                "fixed_addr = \"10.77.100.50\"",
            ]),
            20,
            ConfigErrorKind::UnknownKey,
            &[
                "unknown key `fixed_addr`",
                "in [[client]]",
                "`fixed_address`",
            ],
        );
        dir.err(
            &pool(&["[[client]]", "name = \"alice\""]),
            17,
            ConfigErrorKind::MissingKey,
            &["missing required key `public_key`"],
        );
    }

    #[test]
    fn fixed_address_mistakes() {
        let dir = Dir::new();
        let alice = |fixed: &'static str| {
            pool(&[
                "[[client]]",
                "name = \"alice\"",
                "public_key = \"@A@\"",
                fixed,
            ])
        };
        let kind = ConfigErrorKind::InvalidValue;
        dir.err(
            &alice("fixed_address = \"10.77.100.50/32\""),
            20,
            kind,
            &["not an IPv4 address"],
        );
        dir.err(
            &alice("fixed_address = \"10.77.101.50\""),
            20,
            kind,
            &["client \"alice\": fixed_address 10.77.101.50 is not inside the pool's ranges"],
        );
        dir.err(
            &alice("fixed_address = \"10.77.100.5\""),
            20,
            kind,
            &["10.77.100.5 is excluded from the pool"],
        );
        dir.err(
            &alice("fixed_address = \"10.77.100.255\""),
            20,
            kind,
            &["network or broadcast address of 10.77.100.0/24"],
        );
        dir.err(
            &pool_with(12, "exclude = []")
                .into_iter()
                .chain([
                    "[[client]]",
                    "name = \"alice\"",
                    "public_key = \"@A@\"",
                    "fixed_address = \"10.77.100.1\"",
                ])
                .collect::<Vec<_>>(),
            20,
            kind,
            &["this gateway's own tunnel address"],
        );
        dir.err(
            &pool(&[
                "[[client]]",
                "name = \"alice\"",
                "public_key = \"@A@\"",
                "fixed_address = \"10.77.100.50\"",
                "[[client]]",
                "name = \"bob\"",
                "public_key = \"@B@\"",
                "fixed_address = \"10.77.100.50\"",
            ]),
            24,
            ConfigErrorKind::Duplicate,
            &["fixed_address 10.77.100.50 is already client \"alice\"'s (line 20)"],
        );
    }
}

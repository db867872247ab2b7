//! The `[traversal]` table: how a gateway (or client) behind NAT finds and opens a path.
//!
//! ```toml
//! [traversal]
//! stun_servers = ["198.51.100.10:3478"]  # host:port; the port defaults to 3478
//! upnp = true                            # optional, default true
//! rendezvous = false                     # gateway only; optional, default false
//! ```
//!
//! The table is optional in both the gateway's and the client's config; without it there are no
//! STUN servers, UPnP is on and the gateway offers no rendezvous. STUN server host names are
//! checked for syntax only and resolved when they are used (a laptop may start offline).

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::endpoint;
use super::source::{SectionDoc, Source};
use super::{ConfigError, ConfigErrorKind, GatewayEndpoint};

/// The STUN port servers listen on when a `stun_servers` entry names none (RFC 8489 §9).
pub const DEFAULT_STUN_PORT: u16 = 3478;

/// The most `stun_servers` entries accepted; netcheck and discovery ask each one in turn.
pub const MAX_STUN_SERVERS: usize = 16;

/// The `[traversal]` table: STUN servers, UPnP, rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraversalConfig {
    /// `stun_servers`: STUN servers (RFC 8489 / RFC 5389) to learn the public endpoint from,
    /// `"198.51.100.10:3478"`, `"[2001:db8::10]:3478"` or `"stun.example.com"` (port 3478 when
    /// absent). Asked in file order; two or more let netcheck tell a symmetric NAT apart even
    /// when the servers do not support RFC 5780. Optional; defaults to none, and then netcheck
    /// and endpoint discovery have nothing to ask.
    pub stun_servers: Vec<GatewayEndpoint>,
    /// `upnp`: whether to ask a UPnP IGD router on the LAN to forward the listen port. Optional;
    /// defaults to `true`.
    pub upnp: bool,
    /// `rendezvous`: whether this gateway offers rendezvous and relay to its peers. Gateway only;
    /// optional; defaults to `false`.
    pub rendezvous: bool,
}

impl Default for TraversalConfig {
    fn default() -> Self {
        Self {
            stun_servers: Vec::new(),
            upnp: true,
            rendezvous: false,
        }
    }
}

/// `[traversal]` as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraversal {
    #[serde(default)]
    stun_servers: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    upnp: Option<bool>,
    #[serde(default)]
    rendezvous: Option<Spanned<bool>>,
}

/// How each key of `[traversal]` is written; used in error messages.
pub(super) const DOC: SectionDoc = SectionDoc {
    table: "traversal",
    array: false,
    examples: &[
        ("stun_servers", "stun_servers = [\"198.51.100.10:3478\"]"),
        ("upnp", "upnp = true"),
        ("rendezvous", "rendezvous = false"),
    ],
};

/// Which config file the table is in: the client has no rendezvous to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Gateway,
    Client,
}

/// Validates `[traversal]`; no table gives the defaults.
pub(super) fn validate(
    raw: Option<Spanned<RawTraversal>>,
    src: &Source<'_>,
    role: Role,
) -> Result<TraversalConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(TraversalConfig::default());
    };
    let raw = raw.into_inner();
    let mut config = TraversalConfig {
        upnp: raw.upnp.unwrap_or(true),
        ..TraversalConfig::default()
    };
    if let Some(rendezvous) = &raw.rendezvous {
        if role == Role::Client && *rendezvous.get_ref() {
            return Err(src.error(
                &rendezvous.span(),
                ConfigErrorKind::InvalidValue,
                "traversal: rendezvous = true in a client config; only a gateway offers \
                 rendezvous and relay",
                "remove the line; set rendezvous = true in the config of a reachable gateway",
            ));
        }
        config.rendezvous = *rendezvous.get_ref();
    }
    if let Some(list) = &raw.stun_servers {
        if list.get_ref().len() > MAX_STUN_SERVERS {
            return Err(src.error(
                &list.span(),
                ConfigErrorKind::InvalidValue,
                format!(
                    "traversal: stun_servers has {} entries, more than {MAX_STUN_SERVERS}",
                    list.get_ref().len()
                ),
                "two or three servers are enough: keep the closest ones",
            ));
        }
        for entry in list.get_ref() {
            let server = stun_server(entry.get_ref(), &entry.span(), src)?;
            if let Some(index) = config.stun_servers.iter().position(|s| *s == server) {
                let first = list.get_ref()[index].span();
                return Err(src.error(
                    &entry.span(),
                    ConfigErrorKind::Duplicate,
                    format!(
                        "traversal: stun_servers lists {server} twice (first on line {})",
                        src.line(first.start)
                    ),
                    "remove the repeated entry",
                ));
            }
            config.stun_servers.push(server);
        }
    }
    Ok(config)
}

/// One `stun_servers` entry: `host:port`, `[v6]:port`, or a host or address alone (port 3478).
fn stun_server(
    text: &str,
    span: &Range<usize>,
    src: &Source<'_>,
) -> Result<GatewayEndpoint, ConfigError> {
    let trimmed = text.trim();
    let with_port;
    let spec = if !trimmed.contains(':') || trimmed.parse::<std::net::Ipv6Addr>().is_ok() {
        // A host name, an IPv4 address, or a bare IPv6 address: the default port.
        with_port = match trimmed.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("[{v6}]:{DEFAULT_STUN_PORT}"),
            Err(_) => format!("{trimmed}:{DEFAULT_STUN_PORT}"),
        };
        with_port.as_str()
    } else {
        trimmed
    };
    match endpoint::parse(spec) {
        Ok(parsed) => Ok(parsed.into()),
        Err(problem) => {
            let detail = problem
                .message
                .strip_prefix("endpoint ")
                .unwrap_or(&problem.message);
            Err(src.error(
                span,
                problem.kind,
                format!("traversal: stun_servers entry {detail}"),
                "write \"198.51.100.10:3478\", \"[2001:db8::10]:3478\" or \"stun.example.com\" \
                 (port 3478 when absent)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Wrapper {
        traversal: Option<Spanned<RawTraversal>>,
    }

    const SECTIONS: &[&SectionDoc] = &[&DOC];

    fn parse(text: &str, role: Role) -> Result<TraversalConfig, ConfigError> {
        let src = Source::with_sections(text, Path::new("t.toml"), SECTIONS);
        let raw: Wrapper = src.deserialize()?;
        validate(raw.traversal, &src, role)
    }

    fn err(text: &str, role: Role) -> ConfigError {
        match parse(text, role) {
            Ok(c) => panic!("accepted {text:?} as {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn absent_table_is_the_default() {
        let c = parse("", Role::Gateway).expect("empty");
        assert_eq!(c, TraversalConfig::default());
        assert!(c.upnp);
        assert!(!c.rendezvous);
        assert!(c.stun_servers.is_empty());
    }

    #[test]
    fn full_table() {
        let c = parse(
            "[traversal]\nstun_servers = [\"198.51.100.10:3478\", \"stun.example.com\", \
             \"2001:db8::10\", \"[2001:db8::11]:5349\"]\nupnp = false\nrendezvous = true\n",
            Role::Gateway,
        )
        .expect("valid");
        let shown: Vec<String> = c.stun_servers.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "198.51.100.10:3478",
                "stun.example.com:3478",
                "[2001:db8::10]:3478",
                "[2001:db8::11]:5349"
            ]
        );
        assert!(!c.upnp);
        assert!(c.rendezvous);
    }

    #[test]
    fn bad_entries_name_the_line() {
        let e = err(
            "[traversal]\nupnp = true\nstun_servers = [\"198.51.100.10:0\"]\n",
            Role::Gateway,
        );
        assert_eq!(e.line(), Some(3));
        assert_eq!(e.kind(), ConfigErrorKind::InvalidValue);
        assert!(
            e.message().starts_with("traversal: stun_servers entry"),
            "{e}"
        );
        assert!(e.fix().contains("3478"), "{e}");

        let e = err(
            "[traversal]\nstun_servers = [\"a.example:3478\",\n \"a.example\"]\n",
            Role::Gateway,
        );
        assert_eq!(e.kind(), ConfigErrorKind::Duplicate);
        assert_eq!(e.line(), Some(3));
        assert!(e.message().contains("first on line 2"), "{e}");
    }

    #[test]
    fn schema_errors() {
        let e = err("[traversal]\nstun = []\n", Role::Gateway);
        assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
        assert!(e.fix().contains("stun_servers"), "{e}");

        let e = err("[traversal]\nupnp = \"yes\"\n", Role::Gateway);
        assert_eq!(e.kind(), ConfigErrorKind::WrongType);
        assert!(e.fix().contains("upnp = true"), "{e}");

        let e = err(
            "[traversal]\nstun_servers = \"198.51.100.10\"\n",
            Role::Gateway,
        );
        assert_eq!(e.kind(), ConfigErrorKind::WrongType);
    }

    #[test]
    fn client_offers_no_rendezvous() {
        let e = err("[traversal]\n\nrendezvous = true\n", Role::Client);
        assert_eq!(e.line(), Some(3));
        assert!(e.fix().contains("gateway"), "{e}");
        let c = parse("[traversal]\nrendezvous = false\n", Role::Client).expect("false is fine");
        assert!(!c.rendezvous);
    }
}

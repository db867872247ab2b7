//! The `[nat]` table: the gateway's NAT rules (netmaps, masquerading, port forwards).
//!
//! The schema is [`crate::nat::NatConfig`]'s (serde, unknown keys refused); this module reports
//! its validation errors at the line of the rule at fault, with a fix.
//!
//! ```toml
//! [[nat.netmap]]
//! real = "192.168.1.0/24"
//! mapped = "10.10.1.0/24"
//! ```

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::source::{SectionDoc, Source};
use super::{ConfigError, ConfigErrorKind};
use crate::nat::{NatConfig, NatConfigError};

/// How the top-level keys of `[nat]` are written; used in error messages.
pub(super) const DOC: SectionDoc = SectionDoc {
    table: "nat",
    array: false,
    examples: &[
        (
            "netmap",
            "[[nat.netmap]] with real = \"192.168.1.0/24\" and mapped = \"10.10.1.0/24\"",
        ),
        (
            "masquerade",
            "[[nat.masquerade]] with source = [\"10.77.100.0/24\"] and pool = [\"192.168.10.1\"]",
        ),
        (
            "forward",
            "[[nat.forward]] with proto = \"tcp\", external_port = 8080, to = \"10.77.100.50:80\"",
        ),
        ("timeouts", "[nat.timeouts] with udp = 300"),
        ("session_limit", "session_limit = 65536"),
        ("host_port_quota", "host_port_quota = 4096"),
        ("port_reuse_delay", "port_reuse_delay = 120"),
        ("reply_source", "reply_source = \"192.168.10.1\""),
        ("icmp_reply_rate", "icmp_reply_rate = 100"),
        ("port_range", "port_range = \"61000-65535\""),
    ],
};

/// Where each rule of `[nat]` was written, read in a second, lenient pass.
#[derive(Debug, Default, Deserialize)]
struct Locate {
    #[serde(default)]
    nat: Option<LocateNat>,
}

#[derive(Debug, Default, Deserialize)]
struct LocateNat {
    #[serde(default)]
    netmap: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    masquerade: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    forward: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    timeouts: Option<Spanned<toml::Table>>,
    #[serde(default)]
    session_limit: Option<Spanned<toml::Value>>,
    #[serde(default)]
    port_range: Option<Spanned<toml::Value>>,
}

/// Validates `[nat]`; absent means no NAT.
pub(super) fn validate(
    raw: Option<Spanned<NatConfig>>,
    src: &Source<'_>,
) -> Result<Option<NatConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let span = raw.span();
    let config = raw.into_inner();
    match config.validate() {
        Ok(()) => Ok(Some(config)),
        Err(e) => {
            let locate: Locate = src.deserialize().unwrap_or_default();
            let at = locate_error(&e, &config, locate.nat.unwrap_or_default()).unwrap_or(span);
            Err(src.error(
                &at,
                ConfigErrorKind::InvalidValue,
                format!("nat: {e}"),
                fix(&e),
            ))
        }
    }
}

/// The span of the rule an error is about, when it can be found.
fn locate_error(e: &NatConfigError, c: &NatConfig, at: LocateNat) -> Option<Range<usize>> {
    let netmap = |p: ipnet::Ipv4Net| {
        c.netmap
            .iter()
            .position(|n| n.real == p || n.mapped == p)
            .and_then(|i| at.netmap.get(i))
            .map(Spanned::span)
    };
    match e {
        NatConfigError::NetmapLength { real, .. } => netmap(*real),
        NatConfigError::NetmapHostBits(p) => netmap(*p),
        NatConfigError::NetmapOverlap(_, later) => {
            // The later rule of the two is the one to look at.
            let i = c
                .netmap
                .iter()
                .rposition(|n| n.real == *later || n.mapped == *later)?;
            at.netmap.get(i).map(Spanned::span)
        }
        NatConfigError::EmptyPool { rule }
        | NatConfigError::PresetAndBehaviour { rule }
        | NatConfigError::HalfBehaviour { rule } => at.masquerade.get(*rule).map(Spanned::span),
        NatConfigError::ForwardPortZero { rule } | NatConfigError::ForwardNeedsAddress { rule } => {
            at.forward.get(*rule).map(Spanned::span)
        }
        NatConfigError::ForwardConflict(_, later) => at.forward.get(*later).map(Spanned::span),
        NatConfigError::TimeoutTooShort { .. } => at.timeouts.map(|t| t.span()),
        NatConfigError::SessionLimit { .. } => at.session_limit.map(|t| t.span()),
        NatConfigError::PortRange(_) => at.port_range.map(|t| t.span()),
    }
}

fn fix(e: &NatConfigError) -> String {
    match e {
        NatConfigError::NetmapLength { .. } => {
            "give `real` and `mapped` the same prefix length: a netmap maps each host 1:1".into()
        }
        NatConfigError::NetmapHostBits(p) => format!("write the network address, {}", p.trunc()),
        NatConfigError::NetmapOverlap(..) => {
            "each LAN prefix and each mapped prefix may appear in one netmap only".into()
        }
        NatConfigError::EmptyPool { .. } => {
            "give `pool` at least one address, e.g. pool = [\"198.51.100.1\"]".into()
        }
        NatConfigError::PresetAndBehaviour { .. } => {
            "remove `preset`, or remove `mapping` and `filtering`".into()
        }
        NatConfigError::HalfBehaviour { .. } => {
            "set both `mapping` and `filtering`, or use a `preset`".into()
        }
        NatConfigError::ForwardPortZero { .. } => "use a port between 1 and 65535".into(),
        NatConfigError::ForwardNeedsAddress { .. } => {
            "add external_addr = \"<an address of this gateway>\" to the forward".into()
        }
        NatConfigError::ForwardConflict(..) => {
            "give one of the forwards another external_port or external_addr".into()
        }
        NatConfigError::TimeoutTooShort { min, .. } => format!("use at least {min} seconds"),
        NatConfigError::SessionLimit { max } => format!("use a limit between 1 and {max}"),
        NatConfigError::PortRange(_) => "write it like port_range = \"61000-65535\"".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn check(text: &str) -> Result<Option<NatConfig>, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            nat: Option<Spanned<NatConfig>>,
        }
        let src = Source::new(text, Path::new("gw.toml"));
        let doc: Doc = src.deserialize()?;
        validate(doc.nat, &src)
    }

    #[test]
    fn absent_is_none_and_netmap_parses() {
        assert_eq!(check("").expect("valid"), None);
        let c = check("[[nat.netmap]]\nreal = \"192.168.1.0/24\"\nmapped = \"10.10.1.0/24\"\n")
            .expect("valid")
            .expect("some");
        assert_eq!(c.netmap.len(), 1);
    }

    #[test]
    fn errors_name_the_rule_line() {
        let text = "[nat]\nsession_limit = 10\n\n[[nat.netmap]]\nreal = \"192.168.1.0/24\"\nmapped = \"10.10.1.0/24\"\n\n[[nat.netmap]]\nreal = \"192.168.2.0/24\"\nmapped = \"10.10.2.0/16\"\n";
        let e = check(text).expect_err("invalid").to_string();
        assert!(
            e.starts_with("gw.toml:9:") || e.starts_with("gw.toml:8:"),
            "{e}"
        );
        assert!(e.contains("same prefix length"), "{e}");

        let text = "[[nat.masquerade]]\npool = [\"1.2.3.4\"]\n[[nat.forward]]\nproto = \"tcp\"\nexternal_port = 0\nto = \"10.0.0.1\"\n";
        let e = check(text).expect_err("invalid").to_string();
        assert!(e.contains(":4:") || e.contains(":3:"), "{e}");

        let e = check("[nat.timeouts]\nudp = 10\n")
            .expect_err("invalid")
            .to_string();
        assert!(e.contains("at least 120"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_a_line() {
        let e = check("[[nat.netmap]]\nreal = \"192.168.1.0/24\"\nmaped = \"10.10.1.0/24\"\n")
            .expect_err("invalid")
            .to_string();
        assert!(e.starts_with("gw.toml:3:"), "{e}");
        assert!(e.contains("maped"), "{e}");
    }
}

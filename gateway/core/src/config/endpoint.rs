//! Parsing and resolving a peer's `endpoint = "host:port"`.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs as _};

use super::ConfigErrorKind;

/// Why an endpoint was refused: the kind, what is wrong, and how to fix it.
pub(super) struct EndpointProblem {
    pub(super) kind: ConfigErrorKind,
    pub(super) message: String,
    pub(super) fix: String,
}

const FORMS: &str =
    "write \"198.51.100.2:51820\", \"[2001:db8::2]:51820\" or \"gw.example.com:51820\"";

fn syntax(spec: &str, what: &str) -> EndpointProblem {
    EndpointProblem {
        kind: ConfigErrorKind::InvalidValue,
        message: format!("endpoint {spec:?} {what}"),
        fix: FORMS.to_owned(),
    }
}

/// An endpoint whose syntax is valid: an address, or a host name still to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parsed<'a> {
    /// `198.51.100.2:51820` or `[2001:db8::2]:51820`.
    Addr(SocketAddr),
    /// `gw.example.com:51820`.
    Host(&'a str, u16),
}

/// Parses `host:port` or `[v6]:port` and resolves a host name with [`lookup`].
pub(super) fn resolve(spec: &str) -> Result<SocketAddr, EndpointProblem> {
    let (host, port) = match parse(spec)? {
        Parsed::Addr(addr) => return Ok(addr),
        Parsed::Host(host, port) => (host, port),
    };
    let chosen = lookup(host, port).map_err(|e| EndpointProblem {
        kind: ConfigErrorKind::Resolve,
        message: format!("endpoint {spec:?}: host name {host:?} does not resolve ({e})"),
        fix: "check the spelling and DNS, or write the peer's IP address instead".to_owned(),
    })?;
    tracing::debug!(endpoint = spec, resolved = %chosen, "resolved peer endpoint");
    Ok(chosen)
}

/// Resolves `host` with the system resolver, preferring an IPv4 address when it has both.
pub(super) fn lookup(host: &str, port: u16) -> io::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses"))
}

/// Checks the syntax of `host:port` or `[v6]:port` without resolving anything.
pub(super) fn parse(spec: &str) -> Result<Parsed<'_>, EndpointProblem> {
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return check_port(spec, addr.port()).map(|_| Parsed::Addr(addr));
    }
    if let Some(rest) = spec.strip_prefix('[') {
        let Some((host, port)) = rest.split_once(']') else {
            return Err(syntax(spec, "has '[' without a matching ']'"));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(syntax(
                spec,
                "has something other than an IPv6 address in brackets",
            ));
        }
        let Some(port) = port.strip_prefix(':') else {
            return Err(syntax(spec, "has no port after the ']'"));
        };
        return Err(bad_port(spec, port));
    }
    let Some((host, port)) = spec.rsplit_once(':') else {
        return Err(syntax(spec, "has no port"));
    };
    if host.contains(':') {
        return Err(EndpointProblem {
            kind: ConfigErrorKind::InvalidValue,
            message: format!("endpoint {spec:?} is an IPv6 address without brackets"),
            fix: "put IPv6 addresses in brackets, e.g. \"[2001:db8::2]:51820\"".to_owned(),
        });
    }
    if host.is_empty() {
        return Err(syntax(spec, "has no host"));
    }
    let port = check_port(spec, port.parse::<u16>().map_err(|_| bad_port(spec, port))?)?;
    let valid_name = host.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    if !valid_name {
        return Err(syntax(
            spec,
            &format!("has {host:?}, which is not a host name"),
        ));
    }
    Ok(Parsed::Host(host, port))
}

fn check_port(spec: &str, port: u16) -> Result<u16, EndpointProblem> {
    if port == 0 {
        Err(bad_port(spec, "0"))
    } else {
        Ok(port)
    }
}

fn bad_port(spec: &str, port: &str) -> EndpointProblem {
    EndpointProblem {
        kind: ConfigErrorKind::InvalidValue,
        message: format!("endpoint {spec:?} has port {port:?}, which is not between 1 and 65535"),
        fix: "use the peer's listen_port, e.g. \"198.51.100.2:51820\"".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_addresses() {
        assert_eq!(
            resolve("198.51.100.2:51820").ok(),
            Some("198.51.100.2:51820".parse().expect("addr"))
        );
        assert_eq!(
            resolve("[2001:db8::2]:51820").ok(),
            Some("[2001:db8::2]:51820".parse().expect("addr"))
        );
    }

    #[test]
    fn localhost_prefers_ipv4() {
        let addr = resolve("localhost:51820").ok().expect("localhost resolves");
        assert!(addr.is_ipv4(), "{addr}");
        assert_eq!(addr.port(), 51820);
    }

    #[test]
    fn malformed() {
        for (spec, words) in [
            ("198.51.100.2", "has no port"),
            ("198.51.100.2:0", "not between 1 and 65535"),
            ("198.51.100.2:70000", "not between 1 and 65535"),
            ("gw:port", "not between 1 and 65535"),
            ("2001:db8::2:51820", "without brackets"),
            ("[2001:db8::2]", "no port"),
            ("[2001:db8::2", "without a matching"),
            ("[nope]:1", "other than an IPv6"),
            ("[::1]:0", "not between 1 and 65535"),
            (":51820", "no host"),
            ("a b:51820", "not a host name"),
        ] {
            match resolve(spec) {
                Ok(addr) => panic!("{spec} resolved to {addr}"),
                Err(p) => {
                    assert!(p.message.contains(words), "{spec}: {}", p.message);
                    assert_eq!(p.kind, ConfigErrorKind::InvalidValue, "{spec}");
                }
            }
        }
    }

    #[test]
    fn unresolvable() {
        match resolve("no-such-host.invalid:51820") {
            Ok(addr) => panic!("resolved to {addr}"),
            Err(p) => {
                assert_eq!(p.kind, ConfigErrorKind::Resolve);
                assert!(p.message.contains("does not resolve"), "{}", p.message);
            }
        }
    }
}

//! The `[interface]` table: this gateway's TUN device, key and UDP port.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::source::{SectionDoc, Source};
use super::{key_file_error, ConfigError, ConfigErrorKind};
use crate::keys::{read_private_key_file, PrivateKey};

/// The MTU used when `mtu` is absent: 1500 minus the IPv6 + UDP + WireGuard overhead (80 bytes).
pub const DEFAULT_MTU: u16 = 1420;
/// The smallest MTU accepted when every tunnel address is IPv4 (RFC 791's minimum datagram).
pub const MIN_MTU_IPV4: u16 = 576;
/// The smallest MTU accepted when a tunnel address is IPv6 (RFC 8200).
pub const MIN_MTU_IPV6: u16 = 1280;
/// The largest MTU accepted (jumbo frames).
pub const MAX_MTU: u16 = 9000;
/// The longest Linux interface name, in bytes (`IFNAMSIZ` minus the NUL).
pub const MAX_NAME_LEN: usize = 15;
/// `busy_poll_us` when it is absent, in microseconds: long enough to catch the answer to a
/// packet that a peer on a nearby network sends back at once (a ping's round trip through the
/// peer gateway measured 100–200 µs in `benches/netns-throughput.sh`).
pub const DEFAULT_BUSY_POLL_US: u32 = 200;
/// The largest `busy_poll_us` accepted, in microseconds.
pub const MAX_BUSY_POLL_US: u32 = 5_000;

/// The `[interface]` table: this gateway's own side of the tunnels.
#[derive(Debug, Clone)]
pub struct InterfaceConfig {
    /// `name`: the TUN device to create, e.g. `"sl0"`. At most 15 bytes, no `/`, `:` or
    /// whitespace (Linux's rules for interface names).
    pub name: String,
    /// The private key read from `private_key_file`.
    pub private_key: PrivateKey,
    /// `private_key_file`: the file holding the private key in `wg genkey` format, resolved against
    /// the config file's directory. It must be mode 0600 (not accessible by group or others).
    pub private_key_file: PathBuf,
    /// `listen_port`: the UDP port for WireGuard traffic; 0 lets the system pick one.
    pub listen_port: u16,
    /// `address`: the gateway's addresses on the tunnel, with the tunnel subnet's prefix length,
    /// e.g. `["10.77.0.1/24"]`. At least one; host bits are kept (this is an address, not a route).
    pub address: Vec<IpNet>,
    /// `mtu`: the TUN device's MTU, 576..=9000 (1280..=9000 when an address is IPv6). Defaults to
    /// 1420.
    pub mtu: u16,
    /// `busy_poll_us`: after a packet from the TUN device that woke the data path from a sleep
    /// of 2 ms or more, how long it keeps polling the TUN device and the socket (giving way to
    /// any other runnable thread) before it sleeps again, so that the answer from the network
    /// arriving within that time is taken without the wake-up of an idle CPU. Polling stops
    /// early once a packet goes to the TUN device. 0..=5000 µs, 0 turns it off; defaults to
    /// 200 µs.
    pub busy_poll: Duration,
}

/// `[interface]` as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    name: Spanned<String>,
    private_key_file: Spanned<String>,
    listen_port: Spanned<i64>,
    address: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    mtu: Option<Spanned<i64>>,
    #[serde(default)]
    busy_poll_us: Option<Spanned<i64>>,
}

/// How each key of `[interface]` is written; used in error messages.
pub(super) const DOC: SectionDoc = SectionDoc {
    table: "interface",
    array: false,
    examples: &[
        ("name", "name = \"sl0\""),
        ("private_key_file", "private_key_file = \"office-a.key\""),
        ("listen_port", "listen_port = 51820"),
        ("address", "address = [\"10.77.0.1/24\"]"),
        ("mtu", "mtu = 1420"),
        ("busy_poll_us", "busy_poll_us = 200"),
    ],
};

/// Validates `[interface]` and reads its private key file.
pub(super) fn validate(
    raw: Spanned<RawInterface>,
    src: &Source<'_>,
) -> Result<InterfaceConfig, ConfigError> {
    let raw = raw.into_inner();
    let invalid = |span, message: String, fix: &str| invalid_value(src, span, message, fix);

    let name = check_name(&raw.name, src, "sl0")?;
    let listen_port = check_listen_port(&raw.listen_port, src)?;

    let mut address = Vec::with_capacity(raw.address.get_ref().len());
    for entry in raw.address.get_ref() {
        let text = entry.get_ref();
        match text.parse::<IpNet>() {
            Ok(net) => address.push(net),
            Err(_) if text.parse::<std::net::IpAddr>().is_ok() => {
                return Err(invalid(
                    entry.span(),
                    format!("address {text:?} has no prefix length"),
                    &format!(
                        "add the tunnel subnet's prefix length, e.g. \"{text}/{}\"",
                        if text.contains(':') { 64 } else { 24 }
                    ),
                ));
            }
            Err(_) => {
                return Err(invalid(
                    entry.span(),
                    format!("address {text:?} is not an address with a prefix length"),
                    "write the gateway's tunnel address and subnet, e.g. \"10.77.0.1/24\" or \
                     \"fd77::1/64\"",
                ));
            }
        }
    }
    if address.is_empty() {
        return Err(invalid(
            raw.address.span(),
            "address is empty".to_owned(),
            "give the gateway at least one tunnel address, e.g. address = [\"10.77.0.1/24\"]",
        ));
    }

    let has_ipv6 = address.iter().any(|a| matches!(a, IpNet::V6(_)));
    let mtu = check_mtu(raw.mtu.as_ref(), has_ipv6, src)?;
    let busy_poll = check_busy_poll(raw.busy_poll_us.as_ref(), src)?;
    let (private_key, private_key_file) = read_private_key(
        &raw.private_key_file,
        src,
        "name the file holding this gateway's private key, e.g. \"office-a.key\"",
    )?;

    Ok(InterfaceConfig {
        name,
        private_key,
        private_key_file,
        listen_port,
        address,
        mtu,
        busy_poll,
    })
}

// The checks below are shared with the client's `[interface]` (see `client.rs`); their messages
// start with `interface: `, the table's name in both files.

/// An `interface: {message}` error for an unacceptable value.
fn invalid_value(src: &Source<'_>, span: Range<usize>, message: String, fix: &str) -> ConfigError {
    src.error(
        &span,
        ConfigErrorKind::InvalidValue,
        format!("interface: {message}"),
        fix,
    )
}

/// Checks `name`, the TUN device's name; `example` is a good one for the fix line.
pub(super) fn check_name(
    name: &Spanned<String>,
    src: &Source<'_>,
    example: &str,
) -> Result<String, ConfigError> {
    let text = name.get_ref();
    match interface_name_problem(text) {
        None => Ok(text.clone()),
        Some(problem) => Err(invalid_value(
            src,
            name.span(),
            format!("name {text:?} {problem}"),
            &format!(
                "use a short name such as {example:?}: at most 15 bytes, no '/', ':' or whitespace"
            ),
        )),
    }
}

/// Checks `listen_port`: a UDP port, or 0 for one the system picks.
pub(super) fn check_listen_port(port: &Spanned<i64>, src: &Source<'_>) -> Result<u16, ConfigError> {
    let value = *port.get_ref();
    u16::try_from(value).map_err(|_| {
        invalid_value(
            src,
            port.span(),
            format!("listen_port {value} is not a UDP port"),
            "use a port between 1 and 65535 (51820 is WireGuard's usual one), or 0 to let the \
             system pick one",
        )
    })
}

/// Checks `mtu`, or gives [`DEFAULT_MTU`] when it is absent. `has_ipv6` raises the minimum to
/// [`MIN_MTU_IPV6`].
pub(super) fn check_mtu(
    mtu: Option<&Spanned<i64>>,
    has_ipv6: bool,
    src: &Source<'_>,
) -> Result<u16, ConfigError> {
    let Some(spanned) = mtu else {
        return Ok(DEFAULT_MTU);
    };
    let min_mtu = if has_ipv6 { MIN_MTU_IPV6 } else { MIN_MTU_IPV4 };
    let value = *spanned.get_ref();
    match u16::try_from(value) {
        Ok(mtu) if (min_mtu..=MAX_MTU).contains(&mtu) => Ok(mtu),
        _ => {
            let why = if has_ipv6
                && (i64::from(MIN_MTU_IPV4)..i64::from(MIN_MTU_IPV6)).contains(&value)
            {
                " (IPv6 needs at least 1280, and an address is IPv6)"
            } else {
                ""
            };
            Err(invalid_value(
                src,
                spanned.span(),
                format!("mtu {value} is outside {min_mtu}..={MAX_MTU}{why}"),
                &format!(
                    "set mtu between {min_mtu} and {MAX_MTU}, or remove the line to use \
                     {DEFAULT_MTU}"
                ),
            ))
        }
    }
}

/// Checks `busy_poll_us`, or gives [`DEFAULT_BUSY_POLL_US`] when it is absent.
fn check_busy_poll(
    value: Option<&Spanned<i64>>,
    src: &Source<'_>,
) -> Result<Duration, ConfigError> {
    let Some(spanned) = value else {
        return Ok(Duration::from_micros(DEFAULT_BUSY_POLL_US.into()));
    };
    let micros = *spanned.get_ref();
    match u32::try_from(micros) {
        Ok(us) if us <= MAX_BUSY_POLL_US => Ok(Duration::from_micros(us.into())),
        _ => Err(invalid_value(
            src,
            spanned.span(),
            format!("busy_poll_us {micros} is outside 0..={MAX_BUSY_POLL_US}"),
            &format!(
                "set busy_poll_us between 0 (never poll, always sleep) and {MAX_BUSY_POLL_US}, \
                 or remove the line to use {DEFAULT_BUSY_POLL_US}"
            ),
        )),
    }
}

/// Reads the key named by `private_key_file`, resolved against the config file's directory.
/// `fix_if_empty` says what to write when the value is empty.
pub(super) fn read_private_key(
    file: &Spanned<String>,
    src: &Source<'_>,
    fix_if_empty: &str,
) -> Result<(PrivateKey, PathBuf), ConfigError> {
    let written = file.get_ref();
    if written.trim().is_empty() {
        return Err(invalid_value(
            src,
            file.span(),
            "private_key_file is empty".to_owned(),
            fix_if_empty,
        ));
    }
    let path = src.resolve(written);
    let key = read_private_key_file(&path).map_err(|e| {
        key_file_error(
            src,
            &file.span(),
            "interface: ",
            "private_key_file",
            written,
            &e,
        )
    })?;
    Ok((key, path))
}

/// Why `name` cannot be a Linux interface name, if it cannot.
fn interface_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is not allowed")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains(':') {
        Some("contains ':'")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace")
    } else {
        None
    }
}

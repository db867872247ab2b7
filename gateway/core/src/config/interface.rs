//! The `[interface]` table: this gateway's TUN device, key and UDP port.

use std::path::PathBuf;

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
    ],
};

/// Validates `[interface]` and reads its private key file.
pub(super) fn validate(
    raw: Spanned<RawInterface>,
    src: &Source<'_>,
) -> Result<InterfaceConfig, ConfigError> {
    let raw = raw.into_inner();
    let invalid = |span, message: String, fix: &str| {
        src.error(
            &span,
            ConfigErrorKind::InvalidValue,
            format!("interface: {message}"),
            fix,
        )
    };

    let name = raw.name.get_ref();
    if let Some(problem) = interface_name_problem(name) {
        return Err(invalid(
            raw.name.span(),
            format!("name {name:?} {problem}"),
            "use a short name such as \"sl0\": at most 15 bytes, no '/', ':' or whitespace",
        ));
    }

    let port = *raw.listen_port.get_ref();
    let listen_port = u16::try_from(port).map_err(|_| {
        invalid(
            raw.listen_port.span(),
            format!("listen_port {port} is not a UDP port"),
            "use a port between 1 and 65535 (51820 is WireGuard's usual one), or 0 to let the \
             system pick one",
        )
    })?;

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
    let min_mtu = if has_ipv6 { MIN_MTU_IPV6 } else { MIN_MTU_IPV4 };
    let mtu = match &raw.mtu {
        None => DEFAULT_MTU,
        Some(spanned) => {
            let value = *spanned.get_ref();
            match u16::try_from(value) {
                Ok(mtu) if (min_mtu..=MAX_MTU).contains(&mtu) => mtu,
                _ => {
                    let why = if has_ipv6
                        && (i64::from(MIN_MTU_IPV4)..i64::from(MIN_MTU_IPV6)).contains(&value)
                    {
                        " (IPv6 needs at least 1280, and an address is IPv6)"
                    } else {
                        ""
                    };
                    return Err(invalid(
                        spanned.span(),
                        format!("mtu {value} is outside {min_mtu}..={MAX_MTU}{why}"),
                        &format!(
                            "set mtu between {min_mtu} and {MAX_MTU}, or remove the line to use \
                             {DEFAULT_MTU}"
                        ),
                    ));
                }
            }
        }
    };

    let written = raw.private_key_file.get_ref();
    if written.trim().is_empty() {
        return Err(invalid(
            raw.private_key_file.span(),
            "private_key_file is empty".to_owned(),
            "name the file holding this gateway's private key, e.g. \"office-a.key\"",
        ));
    }
    let private_key_file = src.resolve(written);
    let private_key = read_private_key_file(&private_key_file).map_err(|e| {
        key_file_error(
            src,
            &raw.private_key_file.span(),
            "interface: ",
            "private_key_file",
            written,
            &e,
        )
    })?;

    Ok(InterfaceConfig {
        name: name.clone(),
        private_key,
        private_key_file,
        listen_port,
        address,
        mtu,
    })
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

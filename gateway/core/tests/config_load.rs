//! `GatewayConfig::load`: one test per kind of mistake, each checking the line and the words of
//! the message, plus the configs that must load.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
mod support;

use rand_core::OsRng;
use sitelink_core::config::{
    ConfigError, ConfigErrorKind, GatewayConfig, DEFAULT_BUSY_POLL_US, DEFAULT_MTU,
};
use sitelink_core::keys::{write_secret_file, PresharedKey, PrivateKey, PublicKey};

/// A temp directory with this gateway's key (`a.key`), a pre-shared key (`ab.psk`) and two
/// remote public keys; removed when dropped.
struct Site {
    dir: PathBuf,
    own: PrivateKey,
    b: PublicKey,
    c: PublicKey,
}

impl Site {
    fn new() -> Self {
        let dir = support::fresh_dir("sitelink-config-test");
        let own = PrivateKey::generate(&mut OsRng);
        write_secret_file(&dir.join("a.key"), &format!("{}\n", own.to_base64())).expect("a.key");
        let psk = PresharedKey::generate(&mut OsRng);
        write_secret_file(&dir.join("ab.psk"), &format!("{}\n", psk.to_base64())).expect("ab.psk");
        Self {
            dir,
            own,
            b: PrivateKey::generate(&mut OsRng).public_key(),
            c: PrivateKey::generate(&mut OsRng).public_key(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("office-a.toml")
    }

    /// Writes `lines` (with `@B@`, `@C@`, `@OWN@` replaced by public keys) as the config file and
    /// loads it. Line `n` of the file is `lines[n - 1]`.
    fn load(&self, lines: &[&str]) -> Result<GatewayConfig, ConfigError> {
        let text = lines
            .join("\n")
            .replace("@B@", &self.b.to_base64())
            .replace("@C@", &self.c.to_base64())
            .replace("@OWN@", &self.own.public_key().to_base64());
        std::fs::write(self.config_path(), text).expect("write config");
        GatewayConfig::load(&self.config_path())
    }

    fn ok(&self, lines: &[&str]) -> GatewayConfig {
        self.load(lines)
            .unwrap_or_else(|e| panic!("config should load, got:\n{e}"))
    }

    /// Loads a config that must fail, and checks the error's line, kind and words.
    fn err(
        &self,
        lines: &[&str],
        line: usize,
        kind: ConfigErrorKind,
        words: &[&str],
    ) -> ConfigError {
        support::expect_config_error(self.load(lines), &self.config_path(), line, kind, words)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lines 1–5: a valid `[interface]`.
const IFACE: [&str; 5] = [
    "[interface]",
    "name = \"sl0\"",
    "private_key_file = \"a.key\"",
    "listen_port = 51820",
    "address = [\"10.77.0.1/24\"]",
];

/// `IFACE` followed by `rest`, whose first line is line 6.
fn with_iface<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    IFACE.iter().copied().chain(rest.iter().copied()).collect()
}

/// `IFACE` and a valid peer "office-b" (lines 6–10), then `rest` from line 11.
fn with_peer_b<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    with_iface(&[
        "",
        "[[peer]]",
        "name = \"office-b\"",
        "public_key = \"@B@\"",
        "allowed_ips = [\"10.77.0.2/32\", \"192.168.20.0/24\"]",
    ])
    .into_iter()
    .chain(rest.iter().copied())
    .collect()
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

// ---- configs that load ----

#[test]
fn full_config_loads() {
    let site = Site::new();
    let config = site.ok(&[
        "# office A",
        "[interface]",
        "name = \"sl0\"",
        "private_key_file = \"a.key\"",
        "listen_port = 51820",
        "address = [\"10.77.0.1/24\", \"fd77::1/64\"]",
        "mtu = 1380",
        "",
        "[[peer]]",
        "name = \"office-b\"",
        "public_key = \"@B@\"",
        "preshared_key_file = \"ab.psk\"",
        "endpoint = \"198.51.100.2:51820\"",
        "allowed_ips = [\"10.77.0.2/32\", \"192.168.20.0/24\"]",
        "persistent_keepalive = 25",
        "",
        "[[peer]]",
        "name = \"office-c\"",
        "public_key = \"@C@\"",
        "endpoint = \"[2001:db8::3]:51821\"",
        "allowed_ips = [\"10.77.0.3/32\", \"192.168.30.0/24\", \"192.168.20.128/25\"]",
        "persistent_keepalive = 0",
    ]);
    assert_eq!(config.path, site.config_path());
    let iface = &config.interface;
    assert_eq!(iface.name, "sl0");
    assert_eq!(iface.private_key_file, site.dir.join("a.key"));
    assert_eq!(iface.private_key.public_key(), site.own.public_key());
    assert_eq!(iface.listen_port, 51820);
    assert_eq!(iface.address, vec![net("10.77.0.1/24"), net("fd77::1/64")]);
    assert_eq!(iface.mtu, 1380);

    assert_eq!(config.peers.len(), 2);
    let b = &config.peers[0];
    assert_eq!(b.name, "office-b");
    assert_eq!(b.public_key, site.b);
    let psk = std::fs::read_to_string(site.dir.join("ab.psk")).expect("psk");
    assert_eq!(
        b.preshared_key.as_ref().map(PresharedKey::to_base64),
        Some(psk.trim().to_owned())
    );
    assert_eq!(
        b.endpoint,
        Some("198.51.100.2:51820".parse().expect("addr"))
    );
    assert_eq!(b.endpoint_spec.as_deref(), Some("198.51.100.2:51820"));
    assert_eq!(
        b.allowed_ips,
        vec![net("10.77.0.2/32"), net("192.168.20.0/24")]
    );
    assert_eq!(b.persistent_keepalive, Some(25));

    let c = &config.peers[1];
    assert!(c.preshared_key.is_none());
    assert_eq!(
        c.endpoint,
        Some("[2001:db8::3]:51821".parse().expect("addr"))
    );
    assert_eq!(c.persistent_keepalive, None, "0 means off");
    // A more specific prefix inside another peer's is normal longest-prefix routing.
    assert!(c.allowed_ips.contains(&net("192.168.20.128/25")));
}

#[test]
fn defaults_and_zero_peers() {
    let site = Site::new();
    let config = site.ok(&IFACE);
    assert!(config.peers.is_empty());
    assert_eq!(config.interface.mtu, DEFAULT_MTU);
    assert_eq!(DEFAULT_MTU, 1420);
    assert_eq!(
        config.interface.busy_poll,
        Duration::from_micros(DEFAULT_BUSY_POLL_US.into())
    );
}

#[test]
fn listen_port_zero_means_any() {
    let site = Site::new();
    let mut lines = IFACE.to_vec();
    lines[3] = "listen_port = 0";
    assert_eq!(site.ok(&lines).interface.listen_port, 0);
}

#[test]
fn absolute_key_path() {
    let site = Site::new();
    let line = format!("private_key_file = {:?}", site.dir.join("a.key"));
    let mut lines = IFACE.to_vec();
    lines[2] = &line;
    assert_eq!(
        site.ok(&lines).interface.private_key_file,
        site.dir.join("a.key")
    );
}

#[test]
fn host_name_endpoint_resolves_preferring_ipv4() {
    let site = Site::new();
    let config = site.ok(&with_peer_b(&["endpoint = \"localhost:51820\""]));
    let endpoint = config.peers[0].endpoint.expect("resolved");
    assert!(endpoint.is_ipv4(), "{endpoint}");
    assert!(endpoint.ip().is_loopback());
    assert_eq!(
        config.peers[0].endpoint_spec.as_deref(),
        Some("localhost:51820")
    );
}

#[test]
fn allowed_ips_host_bits_are_cleared() {
    let site = Site::new();
    let config = site.ok(&with_iface(&[
        "[[peer]]",
        "name = \"office-b\"",
        "public_key = \"@B@\"",
        "allowed_ips = [\"192.168.20.77/24\", \"10.77.0.2/32\"]",
    ]));
    assert_eq!(
        config.peers[0].allowed_ips,
        vec![net("192.168.20.0/24"), net("10.77.0.2/32")]
    );
}

#[test]
fn parse_reads_key_files_next_to_the_given_path() {
    let site = Site::new();
    let text = IFACE.join("\n");
    let config = GatewayConfig::parse(&text, &site.config_path()).expect("parse");
    assert_eq!(config.interface.private_key_file, site.dir.join("a.key"));
}

// ---- reading and TOML syntax ----

#[test]
fn missing_config_file_has_no_line() {
    let site = Site::new();
    let path = site.dir.join("nope.toml");
    let err = GatewayConfig::load(&path).expect_err("missing file");
    assert_eq!(err.kind(), ConfigErrorKind::Read);
    assert_eq!(err.line(), None);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: cannot read", path.display())),
        "{text}"
    );
    assert!(text.contains("\n  fix: "), "{text}");
}

#[test]
fn syntax_error() {
    let site = Site::new();
    site.err(
        &with_iface(&["", "[[peer]]", "name = \"office-b"]),
        8,
        ConfigErrorKind::Syntax,
        &["invalid TOML", "double quotes"],
    );
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let site = Site::new();
    site.err(
        &with_iface(&["listen_port = 51821"]),
        6,
        ConfigErrorKind::Syntax,
        &["duplicate key", "only once"],
    );
}

// ---- schema: unknown keys, missing keys, wrong types ----

#[test]
fn unknown_top_level_table() {
    let site = Site::new();
    site.err(
        &with_iface(&["", "[pools]", "range = \"10.77.0.0/24\""]),
        7,
        ConfigErrorKind::UnknownKey,
        &[
            "unknown table `pools`",
            "the valid tables are [interface], [[peer]]",
        ],
    );
}

#[test]
fn unknown_top_level_key() {
    let site = Site::new();
    let mut lines = vec!["verbose = true"];
    lines.extend(IFACE);
    site.err(
        &lines,
        1,
        ConfigErrorKind::UnknownKey,
        &["unknown top-level key `verbose`", "[interface]"],
    );
}

#[test]
fn unknown_interface_key() {
    let site = Site::new();
    site.err(
        &with_iface(&["listenport = 51820"]),
        6,
        ConfigErrorKind::UnknownKey,
        &[
            "interface: unknown key `listenport`",
            "valid keys in [interface] are",
            "`listen_port`",
            "`private_key_file`",
            "`mtu`",
        ],
    );
}

#[test]
fn unknown_peer_key() {
    let site = Site::new();
    site.err(
        &with_peer_b(&["endpont = \"198.51.100.2:51820\""]),
        11,
        ConfigErrorKind::UnknownKey,
        &[
            "peer \"office-b\": unknown key `endpont`",
            "valid keys in [[peer]] are",
            "`endpoint`",
            "`allowed_ips`",
            "`persistent_keepalive`",
        ],
    );
}

#[test]
fn missing_interface_table() {
    let site = Site::new();
    site.err(
        &["# nothing here"],
        1,
        ConfigErrorKind::MissingKey,
        &[
            "missing required table `interface`",
            "add an [interface] table with the keys name, private_key_file",
        ],
    );
}

#[test]
fn missing_interface_key() {
    let site = Site::new();
    let mut lines = IFACE.to_vec();
    lines.remove(3); // listen_port
    site.err(
        &lines,
        1,
        ConfigErrorKind::MissingKey,
        &[
            "interface: missing required key `listen_port`",
            "listen_port = 51820",
            "[interface]",
        ],
    );
}

#[test]
fn missing_peer_key() {
    let site = Site::new();
    site.err(
        &with_iface(&[
            "",
            "[[peer]]",
            "name = \"office-b\"",
            "allowed_ips = [\"10.77.0.2/32\"]",
        ]),
        7,
        ConfigErrorKind::MissingKey,
        &[
            "peer \"office-b\": missing required key `public_key`",
            "public_key = ",
            "sitelink-keys pubkey",
        ],
    );
}

#[test]
fn wrong_type_listen_port() {
    let site = Site::new();
    let mut lines = IFACE.to_vec();
    lines[3] = "listen_port = \"51820\"";
    site.err(
        &lines,
        4,
        ConfigErrorKind::WrongType,
        &[
            "interface: `listen_port` has the wrong type",
            "expected an integer",
            "listen_port = 51820",
        ],
    );
}

#[test]
fn wrong_type_address_not_array() {
    let site = Site::new();
    let mut lines = IFACE.to_vec();
    lines[4] = "address = \"10.77.0.1/24\"";
    site.err(
        &lines,
        5,
        ConfigErrorKind::WrongType,
        &[
            "`address` has the wrong type",
            "expected an array",
            "address = [\"10.77.0.1/24\"]",
        ],
    );
}

#[test]
fn wrong_type_inside_multiline_array() {
    let site = Site::new();
    site.err(
        &with_iface(&[
            "[[peer]]",
            "name = \"office-b\"",
            "public_key = \"@B@\"",
            "allowed_ips = [",
            "  \"10.77.0.2/32\",",
            "  42,",
            "]",
        ]),
        11,
        ConfigErrorKind::WrongType,
        &[
            "peer \"office-b\": `allowed_ips` has the wrong type",
            "expected a string",
        ],
    );
}

#[test]
fn single_bracket_peer_table() {
    let site = Site::new();
    site.err(
        &with_iface(&["[peer]", "name = \"office-b\""]),
        6,
        ConfigErrorKind::WrongType,
        &["`peer` has the wrong type", "[[peer]] (double brackets)"],
    );
}

// ---- [interface] values ----

#[test]
fn interface_name_problems() {
    let site = Site::new();
    for (line, words) in [
        ("name = \"\"", "is empty"),
        ("name = \"sitelink-office0\"", "longer than 15 bytes"),
        ("name = \"sl/0\"", "contains '/'"),
        ("name = \"sl 0\"", "contains whitespace"),
    ] {
        let mut lines = IFACE.to_vec();
        lines[1] = line;
        site.err(
            &lines,
            2,
            ConfigErrorKind::InvalidValue,
            &["interface: name", words, "at most 15 bytes"],
        );
    }
    // Exactly 15 bytes is fine.
    let mut lines = IFACE.to_vec();
    lines[1] = "name = \"sitelink-office\"";
    assert_eq!(site.ok(&lines).interface.name, "sitelink-office");
}

#[test]
fn listen_port_out_of_range() {
    let site = Site::new();
    for value in ["listen_port = 65536", "listen_port = -1"] {
        let mut lines = IFACE.to_vec();
        lines[3] = value;
        site.err(
            &lines,
            4,
            ConfigErrorKind::InvalidValue,
            &[
                "interface: listen_port",
                "is not a UDP port",
                "between 1 and 65535",
            ],
        );
    }
}

#[test]
fn address_not_a_prefix() {
    let site = Site::new();
    let mut lines = IFACE.to_vec();
    lines[4] = "address = [\"10.77.0.1/24\", \"10.77.0.300/24\"]";
    site.err(
        &lines,
        5,
        ConfigErrorKind::InvalidValue,
        &["interface: address \"10.77.0.300/24\" is not an address with a prefix length"],
    );
}

#[test]
fn address_without_prefix_length() {
    let site = Site::new();
    let mut lines = IFACE.to_vec();
    lines[4] = "address = [\"10.77.0.1\"]";
    site.err(
        &lines,
        5,
        ConfigErrorKind::InvalidValue,
        &["has no prefix length", "\"10.77.0.1/24\""],
    );
}

#[test]
fn address_empty() {
    let site = Site::new();
    let mut lines = IFACE.to_vec();
    lines[4] = "address = []";
    site.err(
        &lines,
        5,
        ConfigErrorKind::InvalidValue,
        &["address is empty"],
    );
}

#[test]
fn mtu_out_of_range() {
    let site = Site::new();
    for value in ["mtu = 575", "mtu = 9001", "mtu = -5"] {
        site.err(
            &with_iface(&[value]),
            6,
            ConfigErrorKind::InvalidValue,
            &["interface: mtu", "outside 576..=9000", "or remove the line"],
        );
    }
    assert_eq!(site.ok(&with_iface(&["mtu = 576"])).interface.mtu, 576);
    assert_eq!(site.ok(&with_iface(&["mtu = 9000"])).interface.mtu, 9000);
}

#[test]
fn busy_poll_us_range() {
    let site = Site::new();
    for value in ["busy_poll_us = 5001", "busy_poll_us = -1"] {
        site.err(
            &with_iface(&[value]),
            6,
            ConfigErrorKind::InvalidValue,
            &[
                "interface: busy_poll_us",
                "outside 0..=5000",
                "0 (never poll",
            ],
        );
    }
    let busy_poll = |line| site.ok(&with_iface(&[line])).interface.busy_poll;
    assert_eq!(busy_poll("busy_poll_us = 0"), Duration::ZERO);
    assert_eq!(busy_poll("busy_poll_us = 5000"), Duration::from_millis(5));
}

#[test]
fn mtu_too_small_for_ipv6() {
    let site = Site::new();
    let mut lines = IFACE.to_vec();
    lines[4] = "address = [\"10.77.0.1/24\", \"fd77::1/64\"]";
    lines.push("mtu = 1279");
    site.err(
        &lines,
        6,
        ConfigErrorKind::InvalidValue,
        &["mtu 1279 is outside 1280..=9000", "IPv6"],
    );
    *lines.last_mut().expect("mtu line") = "mtu = 1280";
    assert_eq!(site.ok(&lines).interface.mtu, 1280);
}

// ---- key files ----

#[test]
fn private_key_file_missing() {
    let site = Site::new();
    let mut lines = IFACE.to_vec();
    lines[2] = "private_key_file = \"nope.key\"";
    let missing = site.dir.join("nope.key").display().to_string();
    site.err(
        &lines,
        3,
        ConfigErrorKind::KeyFile,
        &[
            "interface: private_key_file \"nope.key\"",
            &missing,
            "does not exist",
            "sitelink-keys genkey --out",
            "relative to the config file",
        ],
    );
}

#[cfg(unix)]
#[test]
fn private_key_file_loose_permissions() {
    use std::os::unix::fs::PermissionsExt as _;

    let site = Site::new();
    let key = site.dir.join("a.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let chmod = format!("chmod 600 {}", key.display());
    site.err(
        &IFACE,
        3,
        ConfigErrorKind::KeyFile,
        &[
            "private_key_file \"a.key\"",
            "group or others",
            "mode 644",
            &chmod,
        ],
    );
}

#[test]
fn private_key_file_unreadable() {
    let site = Site::new();
    std::fs::create_dir(site.dir.join("dir.key")).expect("mkdir");
    let mut lines = IFACE.to_vec();
    lines[2] = "private_key_file = \"dir.key\"";
    site.err(
        &lines,
        3,
        ConfigErrorKind::KeyFile,
        &["private_key_file \"dir.key\"", "is not a regular file"],
    );
}

#[test]
fn private_key_file_bad_content() {
    let site = Site::new();
    write_secret_file(&site.dir.join("bad.key"), "this is not a key\n").expect("write");
    let mut lines = IFACE.to_vec();
    lines[2] = "private_key_file = \"bad.key\"";
    site.err(
        &lines,
        3,
        ConfigErrorKind::KeyFile,
        &[
            "not a base64-encoded 32-byte key (generate one with `sitelink-keys genkey`)",
            "bad.key",
        ],
    );
}

#[test]
fn preshared_key_file_problems() {
    let site = Site::new();
    site.err(
        &with_peer_b(&["preshared_key_file = \"nope.psk\""]),
        11,
        ConfigErrorKind::KeyFile,
        &[
            "peer \"office-b\": preshared_key_file \"nope.psk\"",
            "does not exist",
            "genpsk",
        ],
    );
    write_secret_file(&site.dir.join("bad.psk"), "short\n").expect("write");
    site.err(
        &with_peer_b(&["preshared_key_file = \"bad.psk\""]),
        11,
        ConfigErrorKind::KeyFile,
        &["not a base64-encoded 32-byte key", "sitelink-keys genpsk"],
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let psk = site.dir.join("ab.psk");
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o604)).expect("chmod");
        let chmod = format!("chmod 600 {}", psk.display());
        site.err(
            &with_peer_b(&["preshared_key_file = \"ab.psk\""]),
            11,
            ConfigErrorKind::KeyFile,
            &["group or others", &chmod],
        );
    }
}

// ---- [[peer]] values ----

#[test]
fn peer_public_key_invalid() {
    let site = Site::new();
    for key in [
        "public_key = \"not base64!\"",
        "public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\"", // 31 bytes
    ] {
        site.err(
            &with_iface(&["[[peer]]", "name = \"office-b\"", key, "allowed_ips = []"]),
            8,
            ConfigErrorKind::InvalidValue,
            &[
                "peer \"office-b\": public_key",
                "not a base64-encoded 32-byte key",
                "sitelink-keys pubkey",
            ],
        );
    }
}

#[test]
fn peer_public_key_is_our_own() {
    let site = Site::new();
    site.err(
        &with_iface(&[
            "[[peer]]",
            "name = \"office-b\"",
            "public_key = \"@OWN@\"",
            "allowed_ips = []",
        ]),
        8,
        ConfigErrorKind::InvalidValue,
        &[
            "public_key is this gateway's own public key",
            "remote gateway",
        ],
    );
}

#[test]
fn duplicate_peer_name() {
    let site = Site::new();
    site.err(
        &with_peer_b(&[
            "",
            "[[peer]]",
            "name = \"office-b\"",
            "public_key = \"@C@\"",
            "allowed_ips = [\"10.77.0.3/32\"]",
        ]),
        13,
        ConfigErrorKind::Duplicate,
        &[
            "peer \"office-b\": name is already used by the peer on line 8",
            "different name",
        ],
    );
}

#[test]
fn duplicate_peer_public_key() {
    let site = Site::new();
    site.err(
        &with_peer_b(&[
            "",
            "[[peer]]",
            "name = \"office-c\"",
            "public_key = \"@B@\"",
            "allowed_ips = [\"10.77.0.3/32\"]",
        ]),
        14,
        ConfigErrorKind::Duplicate,
        &["peer \"office-c\": public_key is already used by peer \"office-b\" on line 9"],
    );
}

#[test]
fn endpoint_malformed() {
    let site = Site::new();
    for (endpoint, words) in [
        ("endpoint = \"198.51.100.2\"", "has no port"),
        ("endpoint = \"198.51.100.2:0\"", "not between 1 and 65535"),
        ("endpoint = \"2001:db8::2:51820\"", "without brackets"),
        ("endpoint = \"[2001:db8::2]\"", "no port"),
    ] {
        site.err(
            &with_peer_b(&[endpoint]),
            11,
            ConfigErrorKind::InvalidValue,
            &["peer \"office-b\": endpoint", words],
        );
    }
}

#[test]
fn endpoint_does_not_resolve() {
    let site = Site::new();
    site.err(
        &with_peer_b(&["endpoint = \"no-such-gateway.invalid:51820\""]),
        11,
        ConfigErrorKind::Resolve,
        &[
            "peer \"office-b\": endpoint",
            "does not resolve",
            "IP address instead",
        ],
    );
}

#[test]
fn allowed_ips_invalid() {
    let site = Site::new();
    let err = site.err(
        &with_iface(&[
            "[[peer]]",
            "name = \"office-b\"",
            "public_key = \"@B@\"",
            "allowed_ips = [\"10.77.0.2/32\", \"192.168.20.0/33\"]",
        ]),
        9,
        ConfigErrorKind::InvalidValue,
        &[],
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}:9: peer \"office-b\": allowed_ips \"192.168.20.0/33\" is not a valid prefix\n  \
             fix: write an address with a prefix length, e.g. \"192.168.20.0/24\"",
            site.config_path().display()
        )
    );
}

#[test]
fn allowed_ips_bare_address() {
    let site = Site::new();
    site.err(
        &with_iface(&[
            "[[peer]]",
            "name = \"office-b\"",
            "public_key = \"@B@\"",
            "allowed_ips = [\"10.77.0.2\"]",
        ]),
        9,
        ConfigErrorKind::InvalidValue,
        &["is not a valid prefix", "\"10.77.0.2/32\""],
    );
}

#[test]
fn allowed_ips_same_prefix_on_two_peers() {
    let site = Site::new();
    site.err(
        &with_peer_b(&[
            "",
            "[[peer]]",
            "name = \"office-c\"",
            "public_key = \"@C@\"",
            // Same network as office-b's 192.168.20.0/24 once host bits are cleared.
            "allowed_ips = [\"10.77.0.3/32\", \"192.168.20.1/24\"]",
        ]),
        15,
        ConfigErrorKind::Duplicate,
        &[
            "peer \"office-c\": allowed_ips \"192.168.20.1/24\" is already routed to peer \
             \"office-b\" (line 10)",
            "more specific",
        ],
    );
}

#[test]
fn persistent_keepalive_out_of_range() {
    let site = Site::new();
    for value in ["persistent_keepalive = 65536", "persistent_keepalive = -1"] {
        site.err(
            &with_peer_b(&[value]),
            11,
            ConfigErrorKind::InvalidValue,
            &[
                "peer \"office-b\": persistent_keepalive",
                "not between 0 and 65535",
                "e.g. 25",
            ],
        );
    }
}

#[test]
fn rendezvous_names_another_peer_with_an_endpoint() {
    let site = Site::new();
    let hub = [
        "",
        "[[peer]]",
        "name = \"hub\"",
        "public_key = \"@C@\"",
        "endpoint = \"203.0.113.1:51820\"",
        "allowed_ips = [\"10.77.0.3/32\"]",
    ];
    let config = site.ok(&with_peer_b(
        &[&["rendezvous = \"hub\""][..], &hub[..]].concat(),
    ));
    assert_eq!(config.peers[0].rendezvous.as_deref(), Some("hub"));
    assert_eq!(config.peers[0].endpoint, None);
    assert_eq!(config.peers[1].rendezvous, None);
    site.err(
        &with_peer_b(&["rendezvous = \"nobody\""]),
        11,
        ConfigErrorKind::InvalidValue,
        &[
            "peer \"office-b\": rendezvous \"nobody\" is not the name of a [[peer]]",
            "rendezvous = \"hub\"",
        ],
    );
    site.err(
        &with_peer_b(&["rendezvous = \"office-b\""]),
        11,
        ConfigErrorKind::InvalidValue,
        &["rendezvous names the peer itself"],
    );
    let hub_without_endpoint: Vec<&str> = hub
        .iter()
        .copied()
        .filter(|l| !l.starts_with("endpoint"))
        .collect();
    site.err(
        &with_peer_b(&[&["rendezvous = \"hub\""][..], &hub_without_endpoint[..]].concat()),
        11,
        ConfigErrorKind::InvalidValue,
        &["rendezvous \"hub\" has no endpoint"],
    );
}

#[test]
fn resolve_relative_paths() {
    use sitelink_core::config::resolve_relative;
    let config = Path::new("/etc/sitelink/office-a.toml");
    assert_eq!(
        resolve_relative(config, Path::new("a.key")),
        Path::new("/etc/sitelink/a.key")
    );
    assert_eq!(
        resolve_relative(config, Path::new("/srv/a.key")),
        Path::new("/srv/a.key")
    );
    assert_eq!(
        resolve_relative(Path::new("office-a.toml"), Path::new("a.key")),
        Path::new("a.key")
    );
}

mod robustness {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Damaged configs never panic, and every error points at a line of the file.
        #[test]
        fn edited_config_never_panics(
            cut in 0usize..400,
            len in 0usize..20,
            insert in "[\\[\\]=\"#a-z0-9_ .,/:\n-]{0,12}",
        ) {
            let site = Site::new();
            let valid = with_peer_b(&["persistent_keepalive = 25"])
                .join("\n")
                .replace("@B@", &site.b.to_base64());
            let mut cut = cut.min(valid.len());
            while !valid.is_char_boundary(cut) {
                cut -= 1;
            }
            let mut end = (cut + len).min(valid.len());
            while !valid.is_char_boundary(end) {
                end -= 1;
            }
            let text = format!("{}{insert}{}", &valid[..cut], &valid[end..]);
            if let Err(e) = GatewayConfig::parse(&text, &site.config_path()) {
                let lines = text.split('\n').count();
                let line = e.line().expect("parse errors have a line");
                prop_assert!((1..=lines).contains(&line), "line {line} of {lines}:\n{e}\n{text}");
                prop_assert!(!e.fix().is_empty());
            }
        }
    }
}

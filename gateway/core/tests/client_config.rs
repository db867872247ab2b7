//! `ClientConfig::load`: one test per kind of mistake, each checking the line, the kind and the
//! words of the message, plus the configs that must load.

use std::path::{Path, PathBuf};

mod support;

use rand_core::OsRng;
use sitelink_core::config::{
    ClientConfig, ConfigError, ConfigErrorKind, GatewayEndpoint, DEFAULT_CLIENT_KEEPALIVE,
    DEFAULT_MTU, DEFAULT_STATE_DIR,
};
use sitelink_core::keys::{write_secret_file, PrivateKey, PublicKey};

/// A temp directory with the client's key (`alice.key`) and two gateways' public keys; removed
/// when dropped.
struct Laptop {
    dir: PathBuf,
    own: PrivateKey,
    a: PublicKey,
    b: PublicKey,
}

impl Laptop {
    fn new() -> Self {
        let dir = support::fresh_dir("sitelink-client-config-test");
        let own = PrivateKey::generate(&mut OsRng);
        write_secret_file(&dir.join("alice.key"), &format!("{}\n", own.to_base64()))
            .expect("alice.key");
        Self {
            dir,
            own,
            a: PrivateKey::generate(&mut OsRng).public_key(),
            b: PrivateKey::generate(&mut OsRng).public_key(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("client.toml")
    }

    /// Writes `lines` (with `@A@`, `@B@`, `@OWN@` replaced by public keys) as the config file and
    /// loads it. Line `n` of the file is `lines[n - 1]`.
    fn load(&self, lines: &[&str]) -> Result<ClientConfig, ConfigError> {
        let text = lines
            .join("\n")
            .replace("@A@", &self.a.to_base64())
            .replace("@B@", &self.b.to_base64())
            .replace("@OWN@", &self.own.public_key().to_base64());
        std::fs::write(self.config_path(), text).expect("write config");
        ClientConfig::load(&self.config_path())
    }

    fn ok(&self, lines: &[&str]) -> ClientConfig {
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

impl Drop for Laptop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lines 1–3: a valid `[interface]` with only the required keys.
const IFACE: [&str; 3] = [
    "[interface]",
    "name = \"slc0\"",
    "private_key_file = \"alice.key\"",
];

/// Lines 4–8: a valid `[[gateway]]` "office-a".
const GATEWAY_A: [&str; 5] = [
    "",
    "[[gateway]]",
    "name = \"office-a\"",
    "public_key = \"@A@\"",
    "endpoint = \"198.51.100.1:51820\"",
];

/// `IFACE`, then `rest` from line 4.
fn with_iface<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    IFACE.iter().copied().chain(rest.iter().copied()).collect()
}

/// `IFACE`, gateway "office-a" (lines 4–8), then `rest` from line 9.
fn with_gateway_a<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    IFACE
        .iter()
        .chain(GATEWAY_A.iter())
        .copied()
        .chain(rest.iter().copied())
        .collect()
}

/// `IFACE`, then a gateway "office-a" whose lines after the header and name are `keys` (the
/// header is line 5, the name line 6, `keys` start at line 7).
fn gateway_with<'a>(keys: &[&'a str]) -> Vec<&'a str> {
    with_iface(&["", "[[gateway]]", "name = \"office-a\""])
        .into_iter()
        .chain(keys.iter().copied())
        .collect()
}

// ---- configs that load ----

#[test]
fn full_config_loads() {
    let laptop = Laptop::new();
    let config = laptop.ok(&[
        "# a remote worker's laptop",
        "[interface]",
        "name = \"slc0\"",
        "private_key_file = \"alice.key\"",
        "listen_port = 51900",
        "mtu = 1380",
        "dns = true",
        "state_dir = \"state\"",
        "",
        "[[gateway]]",
        "name = \"office-a\"",
        "public_key = \"@A@\"",
        "endpoint = \"198.51.100.1:51820\"",
        "persistent_keepalive = 15",
        "",
        "[[gateway]]",
        "name = \"office-b\"",
        "public_key = \"@B@\"",
        "endpoint = \"[2001:db8::2]:51820\"",
        "persistent_keepalive = 0",
    ]);
    assert_eq!(config.path, laptop.config_path());
    let iface = &config.interface;
    assert_eq!(iface.name, "slc0");
    assert_eq!(iface.private_key.to_base64(), laptop.own.to_base64());
    assert_eq!(iface.private_key_file, laptop.dir.join("alice.key"));
    assert_eq!(iface.listen_port, 51900);
    assert_eq!(iface.mtu, 1380);
    assert!(iface.dns);
    assert_eq!(iface.state_dir, laptop.dir.join("state"));

    assert_eq!(config.gateways.len(), 2);
    let a = &config.gateways[0];
    assert_eq!(a.name, "office-a");
    assert_eq!(a.public_key, laptop.a);
    assert_eq!(
        a.endpoint,
        GatewayEndpoint::Addr("198.51.100.1:51820".parse().expect("addr"))
    );
    assert_eq!(a.persistent_keepalive, Some(15));
    let b = &config.gateways[1];
    assert_eq!(b.name, "office-b");
    assert_eq!(b.public_key, laptop.b);
    assert_eq!(b.endpoint.to_string(), "[2001:db8::2]:51820");
    assert_eq!(b.persistent_keepalive, None);
}

#[test]
fn defaults() {
    let laptop = Laptop::new();
    let config = laptop.ok(&with_gateway_a(&[]));
    let iface = &config.interface;
    assert_eq!(iface.listen_port, 0);
    assert_eq!(iface.mtu, DEFAULT_MTU);
    assert!(!iface.dns);
    assert_eq!(iface.state_dir, Path::new(DEFAULT_STATE_DIR));
    assert_eq!(
        config.gateways[0].persistent_keepalive,
        Some(DEFAULT_CLIENT_KEEPALIVE)
    );
}

#[test]
fn host_name_endpoint_is_not_resolved_at_load() {
    let laptop = Laptop::new();
    // `.invalid` never resolves (RFC 6761): loading must not need the network.
    let config = laptop.ok(&gateway_with(&[
        "public_key = \"@A@\"",
        "endpoint = \"vpn.example.invalid:51820\"",
    ]));
    let endpoint = &config.gateways[0].endpoint;
    assert_eq!(
        *endpoint,
        GatewayEndpoint::Host {
            host: "vpn.example.invalid".to_owned(),
            port: 51820
        }
    );
    assert_eq!(endpoint.to_string(), "vpn.example.invalid:51820");
    assert!(endpoint.resolve().is_err());
}

#[test]
fn host_name_endpoint_resolves_on_demand_preferring_ipv4() {
    let endpoint: GatewayEndpoint = "localhost:51820".parse().expect("endpoint");
    let addr = endpoint.resolve().expect("localhost resolves");
    assert!(addr.is_ipv4(), "{addr}");
    assert_eq!(addr.port(), 51820);
}

#[test]
fn absolute_paths() {
    let laptop = Laptop::new();
    let key = laptop.dir.join("alice.key").display().to_string();
    let state = laptop.dir.join("var").display().to_string();
    let key_line = format!("private_key_file = {key:?}");
    let state_line = format!("state_dir = {state:?}");
    let config = laptop.ok(&[
        "[interface]",
        "name = \"slc0\"",
        &key_line,
        &state_line,
        "[[gateway]]",
        "name = \"office-a\"",
        "public_key = \"@A@\"",
        "endpoint = \"198.51.100.1:51820\"",
    ]);
    assert_eq!(config.interface.private_key_file, Path::new(&key));
    assert_eq!(config.interface.state_dir, Path::new(&state));
}

#[test]
fn parse_reads_the_key_next_to_the_given_path() {
    let laptop = Laptop::new();
    let text = with_gateway_a(&[])
        .join("\n")
        .replace("@A@", &laptop.a.to_base64());
    let config = ClientConfig::parse(&text, &laptop.dir.join("elsewhere.toml")).expect("parses");
    assert_eq!(
        config.interface.private_key_file,
        laptop.dir.join("alice.key")
    );
    assert_eq!(config.path, laptop.dir.join("elsewhere.toml"));
}

// ---- the file and its syntax ----

#[test]
fn missing_config_file_has_no_line() {
    let laptop = Laptop::new();
    let path = laptop.dir.join("nope.toml");
    let err = ClientConfig::load(&path).expect_err("no file");
    assert_eq!(err.kind(), ConfigErrorKind::Read);
    assert_eq!(err.line(), None);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: cannot read", path.display())),
        "{text}"
    );
}

#[test]
fn syntax_error() {
    let laptop = Laptop::new();
    laptop.err(
        &with_gateway_a(&["persistent_keepalive = \"25"]),
        9,
        ConfigErrorKind::Syntax,
        &["invalid TOML", "strings need double quotes"],
    );
}

// ---- schema: unknown, missing, wrong type ----

#[test]
fn unknown_top_level_table() {
    let laptop = Laptop::new();
    laptop.err(
        &with_gateway_a(&["", "[[peer]]", "name = \"office-b\""]),
        10,
        ConfigErrorKind::UnknownKey,
        &["unknown table `peer`", "[interface], [[gateway]]"],
    );
}

#[test]
fn unknown_interface_key() {
    let laptop = Laptop::new();
    laptop.err(
        &with_iface(&["mtuu = 1400"]),
        4,
        ConfigErrorKind::UnknownKey,
        &[
            "interface: unknown key `mtuu`",
            "in [interface]",
            "`listen_port`",
            "`state_dir`",
        ],
    );
}

#[test]
fn address_is_leased_not_configured() {
    let laptop = Laptop::new();
    laptop.err(
        &with_iface(&["address = [\"10.77.100.50/32\"]"]),
        4,
        ConfigErrorKind::UnknownKey,
        &[
            "interface: unknown key `address`",
            "leased from the gateway",
            "fixed_address",
        ],
    );
}

#[test]
fn unknown_gateway_key() {
    let laptop = Laptop::new();
    laptop.err(
        &with_gateway_a(&["endpiont = \"198.51.100.1:51820\""]),
        9,
        ConfigErrorKind::UnknownKey,
        &[
            "gateway \"office-a\": unknown key `endpiont`",
            "in [[gateway]]",
            "`persistent_keepalive`",
        ],
    );
}

#[test]
fn routes_are_pushed_not_configured() {
    let laptop = Laptop::new();
    laptop.err(
        &with_gateway_a(&["allowed_ips = [\"192.168.10.0/24\"]"]),
        9,
        ConfigErrorKind::UnknownKey,
        &[
            "gateway \"office-a\": unknown key `allowed_ips`",
            "pushes the routes",
        ],
    );
}

#[test]
fn missing_interface_table() {
    let laptop = Laptop::new();
    laptop.err(
        &GATEWAY_A,
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
    let laptop = Laptop::new();
    laptop.err(
        &IFACE[..2]
            .iter()
            .chain(GATEWAY_A.iter())
            .copied()
            .collect::<Vec<_>>(),
        1,
        ConfigErrorKind::MissingKey,
        &[
            "interface: missing required key `private_key_file`",
            "private_key_file = \"alice.key\"",
        ],
    );
}

#[test]
fn missing_gateway_key() {
    let laptop = Laptop::new();
    laptop.err(
        &gateway_with(&["public_key = \"@A@\""]),
        5,
        ConfigErrorKind::MissingKey,
        &[
            "gateway \"office-a\": missing required key `endpoint`",
            "endpoint = \"198.51.100.1:51820\"",
            "in [[gateway]]",
        ],
    );
}

#[test]
fn no_gateway() {
    let laptop = Laptop::new();
    laptop.err(
        &with_iface(&["dns = true", ""]),
        5,
        ConfigErrorKind::MissingKey,
        &[
            "no [[gateway]] table",
            "add a [[gateway]] table",
            "public_key",
            "endpoint",
        ],
    );
}

#[test]
fn single_bracket_gateway_table() {
    let laptop = Laptop::new();
    laptop.err(
        &with_iface(&["[gateway]", "name = \"office-a\""]),
        4,
        ConfigErrorKind::WrongType,
        &[
            "`gateway` has the wrong type",
            "write [[gateway]] (double brackets)",
        ],
    );
}

#[test]
fn wrong_types() {
    let laptop = Laptop::new();
    for (line, words) in [
        (
            "listen_port = \"51820\"",
            &[
                "interface: `listen_port` has the wrong type",
                "listen_port = 0",
            ][..],
        ),
        (
            "mtu = 1420.5",
            &["interface: `mtu` has the wrong type", "mtu = 1420"][..],
        ),
        (
            "dns = [\"192.168.10.53\"]",
            &[
                "interface: `dns` has the wrong type",
                "expected a boolean",
                "dns = true",
                "the gateway's [pool]",
            ][..],
        ),
        (
            "state_dir = 1",
            &["interface: `state_dir` has the wrong type"][..],
        ),
    ] {
        laptop.err(&with_iface(&[line]), 4, ConfigErrorKind::WrongType, words);
    }
    laptop.err(
        &with_gateway_a(&["persistent_keepalive = \"25\""]),
        9,
        ConfigErrorKind::WrongType,
        &[
            "gateway \"office-a\": `persistent_keepalive` has the wrong type",
            "expected an integer",
        ],
    );
    laptop.err(
        &gateway_with(&["public_key = \"@A@\"", "endpoint = 51820"]),
        8,
        ConfigErrorKind::WrongType,
        &[
            "`endpoint` has the wrong type",
            "endpoint = \"198.51.100.1:51820\"",
        ],
    );
}

// ---- values ----

#[test]
fn interface_name_problems() {
    let laptop = Laptop::new();
    for (name, words) in [
        ("", "is empty"),
        ("a-very-long-interface", "is longer than 15 bytes"),
        ("sl/0", "contains '/'"),
        ("sl:0", "contains ':'"),
        ("sl 0", "contains whitespace"),
    ] {
        let line = format!("name = {name:?}");
        let mut lines = with_gateway_a(&[]);
        lines[1] = &line;
        laptop.err(
            &lines,
            2,
            ConfigErrorKind::InvalidValue,
            &[&format!("interface: name {name:?} {words}"), "\"slc0\""],
        );
    }
}

#[test]
fn listen_port_out_of_range() {
    let laptop = Laptop::new();
    for port in ["65536", "-1"] {
        let line = format!("listen_port = {port}");
        laptop.err(
            &with_iface(&[&line]),
            4,
            ConfigErrorKind::InvalidValue,
            &[
                &format!("listen_port {port} is not a UDP port"),
                "0 to let the system pick",
            ],
        );
    }
}

#[test]
fn mtu_out_of_range() {
    let laptop = Laptop::new();
    for mtu in ["100", "9001", "-1"] {
        let line = format!("mtu = {mtu}");
        laptop.err(
            &with_iface(&[&line]),
            4,
            ConfigErrorKind::InvalidValue,
            &[&format!("mtu {mtu} is outside 576..=9000"), "1420"],
        );
    }
}

#[test]
fn state_dir_empty() {
    let laptop = Laptop::new();
    laptop.err(
        &with_iface(&["state_dir = \"  \""]),
        4,
        ConfigErrorKind::InvalidValue,
        &["interface: state_dir is empty", DEFAULT_STATE_DIR],
    );
}

// ---- the private key file ----

#[test]
fn private_key_file_missing() {
    let laptop = Laptop::new();
    let mut lines = with_gateway_a(&[]);
    lines[2] = "private_key_file = \"nope.key\"";
    let missing = laptop.dir.join("nope.key").display().to_string();
    laptop.err(
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

#[test]
fn private_key_file_empty_name() {
    let laptop = Laptop::new();
    let mut lines = with_gateway_a(&[]);
    lines[2] = "private_key_file = \"\"";
    laptop.err(
        &lines,
        3,
        ConfigErrorKind::InvalidValue,
        &["private_key_file is empty", "the client's private key"],
    );
}

#[cfg(unix)]
#[test]
fn private_key_file_loose_permissions() {
    use std::os::unix::fs::PermissionsExt as _;

    let laptop = Laptop::new();
    let key = laptop.dir.join("alice.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let chmod = format!("chmod 600 {}", key.display());
    let err = laptop.err(
        &with_gateway_a(&[]),
        3,
        ConfigErrorKind::KeyFile,
        &[
            "private_key_file \"alice.key\"",
            "group or others",
            "mode 644",
            &chmod,
        ],
    );
    assert!(err.fix().contains(&chmod), "{err}");
}

#[test]
fn private_key_file_is_a_directory() {
    let laptop = Laptop::new();
    std::fs::create_dir(laptop.dir.join("dir.key")).expect("mkdir");
    let mut lines = with_gateway_a(&[]);
    lines[2] = "private_key_file = \"dir.key\"";
    laptop.err(
        &lines,
        3,
        ConfigErrorKind::KeyFile,
        &["private_key_file \"dir.key\"", "is not a regular file"],
    );
}

#[test]
fn private_key_file_bad_content() {
    let laptop = Laptop::new();
    write_secret_file(&laptop.dir.join("bad.key"), "this is not a key\n").expect("write");
    let mut lines = with_gateway_a(&[]);
    lines[2] = "private_key_file = \"bad.key\"";
    laptop.err(
        &lines,
        3,
        ConfigErrorKind::KeyFile,
        &[
            "not a base64-encoded 32-byte key (generate one with `sitelink-keys genkey`)",
            "bad.key",
        ],
    );
}

// ---- gateways ----

#[test]
fn gateway_name_empty() {
    let laptop = Laptop::new();
    laptop.err(
        &with_iface(&[
            "[[gateway]]",
            "name = \" \"",
            "public_key = \"@A@\"",
            "endpoint = \"198.51.100.1:51820\"",
        ]),
        5,
        ConfigErrorKind::InvalidValue,
        &["name is empty", "name = \"office-a\""],
    );
}

#[test]
fn gateway_public_key_invalid() {
    let laptop = Laptop::new();
    laptop.err(
        &gateway_with(&[
            "public_key = \"not a key\"",
            "endpoint = \"198.51.100.1:51820\"",
        ]),
        7,
        ConfigErrorKind::InvalidValue,
        &[
            "gateway \"office-a\": public_key \"not a key\" is not a base64-encoded 32-byte key",
            "sitelink-keys pubkey",
        ],
    );
}

#[test]
fn gateway_public_key_is_our_own() {
    let laptop = Laptop::new();
    laptop.err(
        &gateway_with(&[
            "public_key = \"@OWN@\"",
            "endpoint = \"198.51.100.1:51820\"",
        ]),
        7,
        ConfigErrorKind::InvalidValue,
        &["the client's own public key", "the gateway's public key"],
    );
}

#[test]
fn duplicate_gateway_name() {
    let laptop = Laptop::new();
    laptop.err(
        &with_gateway_a(&[
            "[[gateway]]",
            "name = \"office-a\"",
            "public_key = \"@B@\"",
            "endpoint = \"198.51.100.2:51820\"",
        ]),
        10,
        ConfigErrorKind::Duplicate,
        &[
            "gateway \"office-a\": name is already used by the gateway on line 6",
            "different name",
        ],
    );
}

#[test]
fn duplicate_gateway_public_key() {
    let laptop = Laptop::new();
    laptop.err(
        &with_gateway_a(&[
            "[[gateway]]",
            "name = \"office-b\"",
            "public_key = \"@A@\"",
            "endpoint = \"198.51.100.2:51820\"",
        ]),
        11,
        ConfigErrorKind::Duplicate,
        &[
            "gateway \"office-b\": public_key is already used by gateway \"office-a\" on line 7",
            "own key pair",
        ],
    );
}

#[test]
fn endpoint_malformed() {
    let laptop = Laptop::new();
    for (spec, words) in [
        ("198.51.100.1", "has no port"),
        ("198.51.100.1:0", "not between 1 and 65535"),
        ("198.51.100.1:70000", "not between 1 and 65535"),
        ("2001:db8::1:51820", "without brackets"),
        ("[2001:db8::1]", "no port"),
        ("vpn example com:51820", "not a host name"),
        ("", "has no port"),
    ] {
        let line = format!("endpoint = {spec:?}");
        laptop.err(
            &gateway_with(&["public_key = \"@A@\"", &line]),
            8,
            ConfigErrorKind::InvalidValue,
            &[&format!("gateway \"office-a\": endpoint {spec:?}"), words],
        );
    }
}

#[test]
fn persistent_keepalive_out_of_range() {
    let laptop = Laptop::new();
    for value in ["-1", "65536"] {
        let line = format!("persistent_keepalive = {value}");
        laptop.err(
            &with_gateway_a(&[&line]),
            9,
            ConfigErrorKind::InvalidValue,
            &[
                &format!("persistent_keepalive {value} is not between 0 and 65535"),
                "0 to turn keepalives off",
            ],
        );
    }
}

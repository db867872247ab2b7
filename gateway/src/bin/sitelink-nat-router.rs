//! `sitelink-nat-router`: the sitelink NAT engine as a standalone NAT router between two
//! interfaces of a network namespace, for experiments and tests (see
//! `sitelink_io::nat_router`).
//!
//! ```sh
//! sitelink-nat-router --inside lan --outside wan --address 203.0.113.1 --behavior full-cone
//! ```

use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use sitelink_core::nat::{MasqueradeRule, NatConfig, Prefix, Preset, Timeouts};
use sitelink_io::cli::{runtime, shutdown_signal};
use sitelink_io::nat_router::{self, RouterOptions};

/// Run the sitelink NAT engine between two interfaces (foreground, until SIGINT or SIGTERM).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The inside (LAN) interface: its packets are masqueraded.
    #[arg(long)]
    inside: String,
    /// The outside (WAN) interface.
    #[arg(long)]
    outside: String,
    /// The external address(es) to masquerade onto; each must be an address of this namespace
    /// (normally on the outside interface). Repeat for a pool.
    #[arg(long = "address", required = true)]
    addresses: Vec<Ipv4Addr>,
    /// The NAT type (RFC 4787 mapping and filtering behaviour).
    #[arg(long, value_enum, default_value = "port-restricted-cone")]
    behavior: Behavior,
    /// External port range, e.g. `20000-29999` (default: 1-1023 for well-known inside ports,
    /// 1024-65535 for the others).
    #[arg(long)]
    port_range: Option<String>,
    /// Idle timeout of answered UDP flows, in seconds (at least 120).
    #[arg(long, default_value_t = 300)]
    udp_timeout: u32,
    /// Prefix of the TUN device names (`<name>-in`, `<name>-out`); at most 11 bytes.
    #[arg(long, default_value = "natr")]
    name: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Behavior {
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestrictedCone,
    /// Address-and-port-dependent mapping and filtering.
    Symmetric,
}

impl Behavior {
    fn preset(self) -> Preset {
        match self {
            Behavior::FullCone => Preset::FullCone,
            Behavior::RestrictedCone => Preset::RestrictedCone,
            Behavior::PortRestrictedCone => Preset::PortRestrictedCone,
            Behavior::Symmetric => Preset::Symmetric,
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    sitelink_io::cli::main(|| run(cli))
}

fn run(cli: Cli) -> Result<()> {
    anyhow::ensure!(
        !cli.name.is_empty() && cli.name.len() <= 11,
        "--name must be 1 to 11 bytes (TUN names are at most 15)"
    );
    let port_range = cli
        .port_range
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| anyhow::anyhow!("--port-range: {e}"))?;
    let nat = NatConfig {
        masquerade: vec![MasqueradeRule {
            source: Vec::new(),
            destination: Vec::new(),
            pool: cli.addresses.iter().map(|a| Prefix((*a).into())).collect(),
            preset: Some(cli.behavior.preset()),
            mapping: None,
            filtering: None,
        }],
        timeouts: Timeouts {
            udp: cli.udp_timeout,
            ..Timeouts::default()
        },
        port_range,
        ..NatConfig::default()
    };
    nat.validate().context("invalid options")?;
    let opts = RouterOptions {
        inside: cli.inside,
        outside: cli.outside,
        name: cli.name,
        nat,
        externals: cli.addresses,
    };
    // A random seed for the engine's hashing and port choice (std's per-process random keys).
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    runtime()?.block_on(nat_router::run(opts, seed, shutdown_signal()))
}

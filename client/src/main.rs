//! `sitelink-client`: the remote worker's end of the tunnel. Leases a virtual address from the
//! office gateway and routes the office's networks (or everything) through it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sitelink_core::config::ClientConfig;
use sitelink_io::cli::{runtime, shutdown_signal};
use sitelink_io::control;

mod netcheck;
mod status;

/// sitelink client: reach the office from anywhere with a leased address.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lease an address and run the tunnel in the foreground until SIGINT or SIGTERM.
    Up {
        /// The client's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Control socket path (default: under /run/sitelink/, derived from the config path).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Validate a config file and exit: 0 when valid, else `file:line: what is wrong`.
    Check {
        /// The client's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the running client's lease, gateway, handshake and traffic.
    Status {
        /// The client's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Control socket path, if `up` was given one.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Find this host's public endpoint and NAT type (STUN servers from `[traversal]`) and
    /// whether a UPnP router answers. Runs from its own ephemeral port.
    Netcheck {
        /// The client's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    sitelink_io::cli::main(|| run(cli))
}

fn load(path: &Path) -> Result<ClientConfig> {
    // The config error already names the file and line, and says how to fix it.
    ClientConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn socket_path(config: &ClientConfig, socket: Option<PathBuf>) -> PathBuf {
    socket.unwrap_or_else(|| control::default_socket_path(&config.path, &config.interface.name))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up { config, socket } => {
            let config = load(&config)?;
            let socket = socket_path(&config, socket);
            runtime()?.block_on(sitelink_io::client::driver::run(
                config,
                socket,
                shutdown_signal(),
            ))
        }
        Command::Check { config } => {
            let config = load(&config)?;
            let names: Vec<&str> = config.gateways.iter().map(|g| g.name.as_str()).collect();
            eprintln!(
                "{}: ok (interface {}, gateway {})",
                config.path.display(),
                config.interface.name,
                names.join(", ")
            );
            Ok(())
        }
        Command::Status {
            config,
            socket,
            json,
        } => {
            let config = load(&config)?;
            let socket = socket_path(&config, socket);
            if !socket.exists() {
                anyhow::bail!(
                    "no client is running with this config (no control socket {})\n  fix: start it with `sitelink-client up --config {}`, or pass the --socket that `up` was given",
                    socket.display(),
                    config.path.display()
                );
            }
            let body = runtime()?
                .block_on(control::request(&socket, "status"))
                .context("cannot ask the running client")?;
            status::print(&body, json)
        }
        Command::Netcheck { config, json } => netcheck::run(&load(&config)?, json),
    }
}

//! `sitelink-gateway`: the gateway daemon and its admin commands.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};
use sitelink_core::config::GatewayConfig;
use sitelink_io::cli::{runtime, shutdown_signal};
use sitelink_io::control;

mod export;
mod leases;
mod nat;
mod netcheck;
mod status;

/// sitelink gateway: site-to-site WireGuard-protocol tunnels.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway in the foreground until SIGINT or SIGTERM.
    Up {
        /// The gateway's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Control socket path (default: under /run/sitelink/, derived from the config path).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Validate a config file and exit: 0 when valid, else `file:line: what is wrong`.
    Check {
        /// The gateway's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the running gateway's peers, endpoints, handshakes, traffic and counters.
    Status {
        /// The gateway's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Control socket path, if `up` was given one.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List the running gateway's NAT sessions and counters (`[nat]`).
    Nat {
        /// The gateway's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Control socket path, if `up` was given one.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List the leases of remote-worker clients: name, key, address, expiry, endpoint.
    ///
    /// Asks the running gateway; when none answers, reads the lease store instead.
    Leases {
        /// The gateway's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Control socket path, if `up` was given one.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Print a wg-quick config for a `[[client]]` with a `fixed_address`, for a stock WireGuard
    /// app (phone, laptop); `--qr` adds a QR code the mobile apps scan.
    ExportClient {
        /// The `[[client]]` name.
        name: String,
        /// The gateway's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Where clients reach this gateway, HOST:PORT (its public address or DNS name). Default:
        /// this host's address towards its default route, and the listen port.
        #[arg(long)]
        endpoint: Option<String>,
        /// The client's private key file, to fill in `PrivateKey =` (else a placeholder the user
        /// replaces in the app).
        #[arg(long)]
        private_key_file: Option<PathBuf>,
        /// Also print the config as a QR code for the terminal.
        #[arg(long)]
        qr: bool,
    },
    /// Check NAT traversal: public endpoint, NAT type, hairpinning, UPnP (uses `[traversal]`).
    Netcheck {
        /// The gateway's TOML config file.
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

fn load(path: &Path) -> Result<GatewayConfig> {
    // The config error already names the file and line, and says how to fix it.
    GatewayConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn socket_path(config: &GatewayConfig, socket: Option<PathBuf>) -> PathBuf {
    socket.unwrap_or_else(|| control::default_socket_path(&config.path, &config.interface.name))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up { config, socket } => {
            sitelink_io::cli::share_malloc_arena();
            let config = load(&config)?;
            let socket = socket_path(&config, socket);
            // UPnP needs a fixed port to forward; with listen_port = 0 there is none yet.
            let upnp = (config.traversal.upnp && config.interface.listen_port != 0)
                .then_some(config.interface.listen_port);
            runtime()?.block_on(async move {
                let upnp = upnp.map(|port| {
                    sitelink_io::upnp::spawn(port, sitelink_io::upnp::DEFAULT_LEASE_SECS)
                });
                let mapped = upnp.as_ref().map(sitelink_io::upnp::UpnpTask::mapped);
                let result = sitelink_io::driver::run_with_mapping(
                    config,
                    socket,
                    shutdown_signal(),
                    mapped,
                )
                .await;
                if let Some(upnp) = upnp {
                    upnp.stop().await;
                }
                result
            })
        }
        Command::Check { config } => {
            let config = load(&config)?;
            eprintln!(
                "{}: ok ({} peer{})",
                config.path.display(),
                config.peers.len(),
                if config.peers.len() == 1 { "" } else { "s" }
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
            let body = runtime()?.block_on(control::request(&socket, "status"))?;
            status::print(&body, json)
        }
        Command::Nat {
            config,
            socket,
            json,
        } => {
            let config = load(&config)?;
            let socket = socket_path(&config, socket);
            let body = runtime()?.block_on(control::request(&socket, "nat"))?;
            nat::print(&body, json)
        }
        Command::Leases {
            config,
            socket,
            json,
        } => {
            let config = load(&config)?;
            let socket = socket_path(&config, socket);
            // A gateway killed with -9 leaves its socket behind: refused means not running too.
            let body = match runtime()?.block_on(control::request(&socket, "leases")) {
                Ok(body) => body,
                Err(e) if gateway_not_running(&e) => leases::from_store(&config)?,
                Err(e) => return Err(e),
            };
            leases::print(&body, json)
        }
        Command::ExportClient {
            name,
            config,
            endpoint,
            private_key_file,
            qr,
        } => {
            let config = load(&config)?;
            export::run(&config, &name, endpoint.as_deref(), private_key_file, qr)
        }
        Command::Netcheck { config, json } => netcheck::run(&load(&config)?, json),
    }
}

/// Whether `e` says that no gateway listens on the control socket (missing or stale).
fn gateway_not_running(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            )
        })
    })
}

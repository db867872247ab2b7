//! `sitelink-keys`: makes WireGuard-compatible keys, like `wg genkey`, `wg pubkey` and `wg genpsk`.
//!
//! ```text
//! sitelink-keys genkey > office-a.key          # or: sitelink-keys genkey --out office-a.key
//! sitelink-keys pubkey < office-a.key > office-a.pub
//! sitelink-keys genpsk --out ab.psk
//! ```

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use rand_core::OsRng;
use sitelink_core::keys::{write_secret_file, PresharedKey, PrivateKey};

/// Makes keys for sitelink gateways and clients (compatible with `wg genkey|pubkey|genpsk`).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new private key (base64).
    Genkey {
        /// Write the key to FILE (mode 0600) instead, and print its public key.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Read a private key on stdin and print its public key.
    Pubkey,
    /// Print a new pre-shared key (base64).
    Genpsk {
        /// Write the key to FILE (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sitelink-keys: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut stdout = io::stdout().lock();
    match cli.command {
        Command::Genkey { out } => {
            let key = PrivateKey::generate(&mut OsRng);
            match out {
                Some(path) => {
                    write_new_secret(&path, &key.to_base64())?;
                    writeln!(stdout, "{}", key.public_key())
                }
                None => {
                    warn_if_stdout_is_shared_file();
                    writeln!(stdout, "{}", key.to_base64())
                }
            }
        }
        Command::Pubkey => {
            let mut input = String::new();
            io::stdin()
                .take(4096)
                .read_to_string(&mut input)
                .context("cannot read a private key from stdin")?;
            let key = PrivateKey::from_base64(&input).context("bad input on stdin")?;
            writeln!(stdout, "{}", key.public_key())
        }
        Command::Genpsk { out } => {
            let key = PresharedKey::generate(&mut OsRng);
            match out {
                Some(path) => return write_new_secret(&path, &key.to_base64()),
                None => {
                    warn_if_stdout_is_shared_file();
                    writeln!(stdout, "{}", key.to_base64())
                }
            }
        }
    }
    .and_then(|()| stdout.flush())
    .context("cannot write to stdout")
}

/// Writes a key file with mode 0600, refusing to replace an existing key.
fn write_new_secret(path: &Path, key: &str) -> Result<()> {
    if path.exists() {
        bail!(
            "{} already exists; remove it first if you really mean to replace that key",
            path.display()
        );
    }
    write_secret_file(path, &format!("{key}\n"))?;
    Ok(())
}

/// Warns, as `wg genkey` does, when a secret is about to land in a file others may read.
#[cfg(unix)]
fn warn_if_stdout_is_shared_file() {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::PermissionsExt as _;

    let Ok(fd) = io::stdout().as_fd().try_clone_to_owned() else {
        return;
    };
    let Ok(metadata) = std::fs::File::from(fd).metadata() else {
        return;
    };
    if metadata.is_file() && metadata.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "warning: writing a secret key to a file that group or others can access; run \
             `umask 077` first, or use --out FILE (which creates the file with mode 0600)"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_stdout_is_shared_file() {}

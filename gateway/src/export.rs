//! `export-client`: a wg-quick config (and QR code) for a stock WireGuard app.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;

use anyhow::{Context, Result};
use sitelink_core::config::{GatewayConfig, GatewayEndpoint};
use sitelink_core::export::{qr_terminal, wg_quick_config, ExportParams};
use sitelink_core::keys::read_private_key_file;

/// Prints the config for client `name` of `config`.
pub(crate) fn run(
    config: &GatewayConfig,
    name: &str,
    endpoint: Option<&str>,
    private_key_file: Option<PathBuf>,
    qr: bool,
) -> Result<()> {
    // Check the client first, so that a wrong name is the only thing said.
    let placeholder = GatewayEndpoint::Addr(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let mut params = ExportParams::from_gateway(config, name, placeholder)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?;
    params.endpoint = match endpoint {
        Some(text) => text
            .parse()
            .map_err(|e| anyhow::anyhow!("--endpoint {text:?}: {e}"))?,
        None => {
            let guessed = guess_endpoint(config.interface.listen_port).context(
                "cannot tell this host's address; pass --endpoint HOST:PORT with the address \
                 clients reach the gateway at",
            )?;
            tracing::warn!(
                endpoint = %guessed,
                "no --endpoint given: using this host's default-route address; behind NAT, pass \
                 --endpoint with the public address or name"
            );
            GatewayEndpoint::Addr(guessed)
        }
    };
    params.mtu = Some(config.interface.mtu);
    if let Some(path) = private_key_file {
        params.private_key =
            Some(read_private_key_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let text = wg_quick_config(&params);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if qr {
        let code = qr_terminal(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
        writeln!(out)?;
        out.write_all(code.as_bytes())?;
    }
    Ok(())
}

/// This host's source address towards the default route, with `port`. `connect` on a UDP socket
/// only looks the route up; nothing is sent.
fn guess_endpoint(port: u16) -> Result<SocketAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("binding a UDP socket")?;
    // A documentation address (RFC 5737): the lookup follows the default route.
    socket
        .connect((Ipv4Addr::new(192, 0, 2, 1), 9))
        .context("this host has no IPv4 default route")?;
    let local = socket.local_addr().context("reading the local address")?;
    Ok(SocketAddr::new(local.ip(), port))
}

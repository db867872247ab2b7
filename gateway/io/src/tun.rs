//! The TUN device.

use anyhow::{Context, Result};
use tokio_tun::Tun;

/// Creates (or attaches to) the TUN device `name` with `mtu`, and brings it up.
///
/// The device is not persistent: it disappears, with its addresses and routes, when the process
/// exits, even after `kill -9`.
pub fn create(name: &str, mtu: u16) -> Result<Tun> {
    let mut tuns = Tun::builder()
        .name(name)
        .mtu(i32::from(mtu))
        .up()
        .close_on_exec()
        .build()
        .with_context(|| {
            format!(
                "cannot create TUN device {name:?} (needs root or CAP_NET_ADMIN and /dev/net/tun; \
                 is another process using a device of that name?)"
            )
        })?;
    tuns.pop()
        .with_context(|| format!("TUN device {name:?}: the kernel returned no queue"))
}

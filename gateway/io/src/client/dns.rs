//! DNS servers pushed with the lease.
//!
//! Applied only when the config says `dns = true` (the default is `false`: the host's resolver
//! is left alone). Then they go to `resolvconf`, the interface other VPN clients use too:
//! `resolvconf -a <iface>.sitelink` with the `nameserver` lines on stdin, and
//! `resolvconf -d <iface>.sitelink` when the lease ends. Without `resolvconf`, nothing is
//! written: `/etc/resolv.conf` is shared by everything on the host (every network namespace
//! too), so the client never edits it by hand; the servers show in the log and in `status`.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;
use tracing::{info, warn};

/// What was done with the pushed DNS servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsOutcome {
    /// The gateway pushed none.
    NonePushed,
    /// `dns = false` in the config.
    Disabled,
    /// Handed to `resolvconf` under this record name.
    Resolvconf(String),
    /// Wanted, but could not be applied (why).
    NotApplied(String),
}

impl DnsOutcome {
    /// A short description for `status`.
    pub fn describe(&self) -> String {
        match self {
            DnsOutcome::NonePushed => "none pushed".to_owned(),
            DnsOutcome::Disabled => "not applied (dns = false in the config)".to_owned(),
            DnsOutcome::Resolvconf(record) => format!("applied with resolvconf ({record})"),
            DnsOutcome::NotApplied(why) => format!("not applied: {why}"),
        }
    }
}

/// The `resolvconf` record name for interface `ifname`.
pub fn record_name(ifname: &str) -> String {
    format!("{ifname}.sitelink")
}

/// The `resolv.conf` lines for `servers`.
pub fn resolv_conf_lines(servers: &[IpAddr]) -> String {
    servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect()
}

/// Applies `servers` for interface `ifname` if `enabled`, with the `resolvconf` on `PATH`.
pub fn apply(ifname: &str, servers: &[IpAddr], enabled: bool) -> DnsOutcome {
    apply_with(
        find_in_path("resolvconf").as_deref(),
        ifname,
        servers,
        enabled,
    )
}

/// [`apply`] with the `resolvconf` program given (`None`: there is none).
fn apply_with(
    resolvconf: Option<&Path>,
    ifname: &str,
    servers: &[IpAddr],
    enabled: bool,
) -> DnsOutcome {
    if servers.is_empty() {
        return DnsOutcome::NonePushed;
    }
    if !enabled {
        info!(servers = ?servers, "the gateway pushed DNS servers; not applying them (set dns = true in [interface] to use them)");
        return DnsOutcome::Disabled;
    }
    let Some(resolvconf) = resolvconf else {
        let why = "no resolvconf on this host; configure these servers by hand".to_owned();
        warn!(servers = ?servers, "DNS servers not applied: {why}");
        return DnsOutcome::NotApplied(why);
    };
    let record = record_name(ifname);
    match run_resolvconf(resolvconf, &["-a", &record], &resolv_conf_lines(servers)) {
        Ok(()) => {
            info!(servers = ?servers, record, "DNS servers applied with resolvconf");
            DnsOutcome::Resolvconf(record)
        }
        Err(why) => {
            warn!(servers = ?servers, %why, "DNS servers not applied");
            DnsOutcome::NotApplied(why)
        }
    }
}

/// Undoes [`apply`].
pub fn revert(outcome: &DnsOutcome) {
    revert_with(find_in_path("resolvconf").as_deref(), outcome);
}

fn revert_with(resolvconf: Option<&Path>, outcome: &DnsOutcome) {
    let DnsOutcome::Resolvconf(record) = outcome else {
        return;
    };
    let Some(resolvconf) = resolvconf else {
        warn!(record, "resolvconf is gone; cannot remove the DNS servers");
        return;
    };
    match run_resolvconf(resolvconf, &["-d", record], "") {
        Ok(()) => info!(record, "DNS servers removed"),
        Err(why) => warn!(record, %why, "cannot remove the DNS servers"),
    }
}

fn run_resolvconf(program: &Path, args: &[&str], stdin: &str) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    // A resolvconf that fails early may not read its input: its exit status and stderr say
    // more than the broken pipe.
    let written = match child.stdin.take() {
        Some(mut input) => input.write_all(stdin.as_bytes()),
        None => Ok(()),
    };
    let out = child
        .wait_with_output()
        .map_err(|e| format!("resolvconf failed: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "resolvconf {} exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    written.map_err(|e| format!("cannot write to resolvconf: {e}"))
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_happens_unless_asked() {
        let servers: Vec<IpAddr> = vec!["192.168.10.53".parse().expect("ip")];
        assert_eq!(apply("slc0", &[], true), DnsOutcome::NonePushed);
        assert_eq!(apply("slc0", &servers, false), DnsOutcome::Disabled);
        // Reverting something not applied touches nothing.
        revert(&DnsOutcome::Disabled);
        revert(&DnsOutcome::NotApplied("x".into()));
    }

    #[test]
    fn resolvconf_gets_the_servers_and_the_record_is_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "sitelink-dns-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("calls");
        // A stand-in resolvconf that records its arguments and stdin.
        let fake = dir.join("resolvconf");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"args: $*\" >> '{0}'\ncat >> '{0}'\n",
                log.display()
            ),
        )
        .expect("write fake");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let servers: Vec<IpAddr> = vec!["192.168.10.53".parse().expect("ip")];

        let outcome = apply_with(Some(&fake), "slc0", &servers, true);
        assert_eq!(outcome, DnsOutcome::Resolvconf("slc0.sitelink".into()));
        revert_with(Some(&fake), &outcome);
        let calls = std::fs::read_to_string(&log).expect("calls");
        assert_eq!(
            calls,
            "args: -a slc0.sitelink\nnameserver 192.168.10.53\nargs: -d slc0.sitelink\n"
        );

        // No resolvconf, or one that fails: not applied, and said why.
        assert!(matches!(
            apply_with(None, "slc0", &servers, true),
            DnsOutcome::NotApplied(_)
        ));
        std::fs::write(&fake, "#!/bin/sh\necho broken >&2\nexit 3\n").expect("write fake");
        match apply_with(Some(&fake), "slc0", &servers, true) {
            DnsOutcome::NotApplied(why) => assert!(why.contains("broken"), "{why}"),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn resolv_conf_lines_name_every_server() {
        let servers: Vec<IpAddr> = vec![
            "192.168.10.53".parse().expect("ip"),
            "2001:db8::53".parse().expect("ip"),
        ];
        assert_eq!(
            resolv_conf_lines(&servers),
            "nameserver 192.168.10.53\nnameserver 2001:db8::53\n"
        );
        assert_eq!(record_name("slc0"), "slc0.sitelink");
    }
}

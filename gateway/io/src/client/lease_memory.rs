//! The client's memory of its last lease, so that after a restart it asks for the same address.
//!
//! One small JSON file per interface, gateway and client key in the config's `state_dir`
//! (`slc0-office-a-1a2b3c4d.lease`), written atomically (temporary file, then rename) whenever
//! a lease is bound or renewed. It is only a hint: the address goes out as the Discover's
//! REQUESTED_ADDRESS and the gateway decides. So every problem with the file (missing,
//! unreadable, corrupt, written for another key) is logged and the client asks for any address;
//! failing to write it is logged and the client carries on.
//!
//! The file is kept after a release: a returning client still asks for its old address.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sitelink_core::keys::PublicKey;
use tracing::{debug, warn};

/// The format written; a file with another version is ignored.
const VERSION: u32 = 1;
/// Larger files are not ours.
const MAX_LEN: u64 = 4096;

/// Where one client keeps its last lease from one gateway.
#[derive(Debug, Clone)]
pub struct LeaseMemory {
    path: PathBuf,
    client_key: PublicKey,
    gateway_key: PublicKey,
}

/// What is remembered about a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberedLease {
    /// The leased address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// When the lease ended or ends, unless it was renewed since.
    pub expires_at: SystemTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    version: u32,
    client_public_key: PublicKey,
    gateway_public_key: PublicKey,
    address: Ipv4Addr,
    prefix_len: u8,
    /// Seconds since the Unix epoch.
    expires_at: u64,
}

impl LeaseMemory {
    /// The memory of client `client_key` with interface `ifname` for gateway `gateway_name`
    /// (`gateway_key`), in `state_dir`.
    pub fn new(
        state_dir: &Path,
        ifname: &str,
        gateway_name: &str,
        client_key: PublicKey,
        gateway_key: PublicKey,
    ) -> Self {
        let fingerprint: String = client_key.as_bytes()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let file = format!(
            "{}-{}-{fingerprint}.lease",
            file_safe(ifname),
            file_safe(gateway_name)
        );
        Self {
            path: state_dir.join(file),
            client_key,
            gateway_key,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The remembered lease, or `None` (with a log line saying why) if there is none to use.
    pub fn load(&self) -> Option<RememberedLease> {
        match self.try_load() {
            Ok(lease) => lease,
            Err(why) => {
                warn!(file = %self.path.display(), %why, "ignoring the remembered lease");
                None
            }
        }
    }

    fn try_load(&self) -> Result<Option<RememberedLease>, String> {
        let text = match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                debug!(file = %self.path.display(), "no remembered lease");
                return Ok(None);
            }
            Err(e) => return Err(e.to_string()),
            Ok(m) if m.len() > MAX_LEN => return Err(format!("{} bytes is too long", m.len())),
            Ok(_) => std::fs::read_to_string(&self.path).map_err(|e| e.to_string())?,
        };
        let record: Record =
            serde_json::from_str(&text).map_err(|e| format!("not a lease record: {e}"))?;
        if record.version != VERSION {
            return Err(format!("unknown version {}", record.version));
        }
        if record.client_public_key != self.client_key {
            return Err("it was written for another client key".to_owned());
        }
        if record.gateway_public_key != self.gateway_key {
            return Err("it was written for another gateway key".to_owned());
        }
        if record.prefix_len > 32 {
            return Err(format!(
                "prefix length {} is out of range",
                record.prefix_len
            ));
        }
        Ok(Some(RememberedLease {
            address: record.address,
            prefix_len: record.prefix_len,
            expires_at: UNIX_EPOCH + Duration::from_secs(record.expires_at),
        }))
    }

    /// Remembers `lease`, creating `state_dir` if needed.
    pub fn save(&self, lease: &RememberedLease) -> io::Result<()> {
        let record = Record {
            version: VERSION,
            client_public_key: self.client_key,
            gateway_public_key: self.gateway_key,
            address: lease.address,
            prefix_len: lease.prefix_len,
            expires_at: lease
                .expires_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let text = serde_json::to_string(&record).map_err(io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("lease.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }
}

/// `name` with everything but ASCII letters, digits, `-`, `_` and `.` replaced by `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitelink_core::keys::PrivateKey;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "sitelink-lease-memory-{tag}-{}-{:?}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn key(byte: u8) -> PublicKey {
        PrivateKey::from_bytes([byte; 32]).public_key()
    }

    fn lease() -> RememberedLease {
        RememberedLease {
            address: Ipv4Addr::new(10, 77, 100, 50),
            prefix_len: 24,
            expires_at: UNIX_EPOCH + Duration::from_secs(1_900_000_000),
        }
    }

    #[test]
    fn round_trips_and_creates_the_state_dir() {
        let tmp = TempDir::new("roundtrip");
        let dir = tmp.0.join("nested/state");
        let memory = LeaseMemory::new(&dir, "slc0", "office-a", key(1), key(2));
        assert_eq!(memory.load(), None, "nothing remembered yet");
        memory.save(&lease()).expect("save");
        assert_eq!(memory.load(), Some(lease()));
        // Saving again replaces the record.
        let mut next = lease();
        next.address = Ipv4Addr::new(10, 77, 100, 51);
        memory.save(&next).expect("save again");
        assert_eq!(memory.load(), Some(next));
        assert!(!memory.path().with_extension("lease.tmp").exists());
    }

    #[test]
    fn corrupt_or_foreign_files_are_ignored() {
        let tmp = TempDir::new("corrupt");
        let memory = LeaseMemory::new(&tmp.0, "slc0", "office-a", key(1), key(2));
        for junk in [
            "".as_bytes(),
            b"not json",
            b"{\"version\":1}",
            b"\xff\xfe\x00garbage",
            b"{\"version\":9,\"client_public_key\":\"x\"}",
        ] {
            std::fs::write(memory.path(), junk).expect("write junk");
            assert_eq!(memory.load(), None, "{junk:?}");
        }
        // A record for another gateway key, or written by another client key, is not used.
        LeaseMemory::new(&tmp.0, "slc0", "office-a", key(1), key(3))
            .save(&lease())
            .expect("save");
        assert_eq!(memory.load(), None);
        // An oversized file is not read.
        std::fs::write(memory.path(), vec![b' '; 10_000]).expect("write big");
        assert_eq!(memory.load(), None);
        // And a good save afterwards works.
        memory.save(&lease()).expect("save");
        assert_eq!(memory.load(), Some(lease()));
    }

    #[test]
    fn files_differ_per_interface_gateway_and_key() {
        let dir = Path::new("/var/lib/sitelink");
        let a = LeaseMemory::new(dir, "slc0", "office-a", key(1), key(2));
        let b = LeaseMemory::new(dir, "slc0", "office-a", key(4), key(2));
        let c = LeaseMemory::new(dir, "slc1", "office-a", key(1), key(2));
        let d = LeaseMemory::new(dir, "slc0", "office/b", key(1), key(2));
        let paths = [a.path(), b.path(), c.path(), d.path()];
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(p.parent(), Some(dir));
            for q in &paths[i + 1..] {
                assert_ne!(p, q);
            }
        }
        assert!(d
            .path()
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("slc0-office_b-")));
    }
}

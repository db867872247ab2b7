//! [`RedbStore`]: the lease pool's durable store, one redb file.
//!
//! One table maps an address (`u32`) to its [`LeaseRecord`] in the record's fixed 53-byte
//! encoding. Every `put` and `remove` is its own ACID transaction with immediate durability, so
//! a lease the pool acknowledged survives `kill -9` and power loss.
//!
//! The file is created with mode 0600 and locked for the life of the store: a second gateway
//! started on the same file gets [`OpenError::Locked`] instead of handing out addresses twice.

use std::fs::OpenOptions;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, ReadableDatabase as _, ReadableTable as _, StorageError,
    TableDefinition,
};
use sitelink_core::lease::{LeaseRecord, LeaseStore, StoreError};

/// address (as `u32`) → [`LeaseRecord::to_bytes`].
const LEASES: TableDefinition<'static, u32, &[u8]> = TableDefinition::new("leases");

/// Why the lease database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process has the file open, most likely another gateway with the same config.
    #[error(
        "lease store {} is in use by another process; is another gateway running with this \
         config? Stop it, or give this one its own `store` file",
        .path.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The file is not a redb database, or it is damaged.
    #[error(
        "lease store {} is corrupt or not a lease database ({reason}); restore it from a backup, \
         or move it aside to start with no leases (then, until the old leases would have ended, \
         an address may be handed out while its previous holder still uses it)",
        .path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What redb or the record decoder found.
        reason: String,
    },
    /// The file could not be created or opened.
    #[error("cannot open lease store {}: {source}", .path.display())]
    Io {
        /// The database file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// Any other database failure while opening.
    #[error("cannot open lease store {}: {source}", .path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// redb's error.
        source: redb::Error,
    },
}

/// The lease pool's [`LeaseStore`] in a redb file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the database at `path`, creating it (mode 0600) if it does not exist. Checks the
    /// whole file, so a damaged one is refused here rather than trusted.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let io_error = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        // Create the file ourselves so that it is 0600 from the start; redb opens it as is.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_error)?;
        let mode = file.metadata().map_err(io_error)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:03o}"),
                "lease store is accessible by group or others; run `chmod 600` on it"
            );
        }
        drop(file);

        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|e| open_error(path, e))?;
        let store = Self {
            db,
            path: path.to_owned(),
        };
        // Make sure the table exists, so that `load` on a new file finds it.
        store.write(|_| Ok(())).map_err(|e| OpenError::Database {
            path: path.to_owned(),
            source: e,
        })?;
        tracing::debug!(path = %path.display(), "lease store opened");
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `change` on the leases table in one write transaction and commits it durably.
    fn write(
        &self,
        change: impl FnOnce(&mut redb::Table<'_, u32, &[u8]>) -> Result<(), redb::Error>,
    ) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(LEASES)?;
            change(&mut table)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// A [`StoreError`] naming this store's file.
    fn backend_error(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Backend {
            store: format!("lease store {}", self.path.display()),
            source: Box::new(e.into()),
        }
    }
}

/// Sorts redb's open errors into the ones a user can act on.
fn open_error(path: &Path, e: DatabaseError) -> OpenError {
    let path = path.to_owned();
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            OpenError::Locked { path }
        }
        DatabaseError::UpgradeRequired(version) => OpenError::Corrupt {
            path,
            reason: format!("written in redb file format {version}, which this build cannot read"),
        },
        DatabaseError::Storage(StorageError::Corrupted(reason)) => {
            OpenError::Corrupt { path, reason }
        }
        // redb reports "not a redb file" as an I/O error of kind InvalidData.
        DatabaseError::Storage(StorageError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
            OpenError::Corrupt {
                path,
                reason: e.to_string(),
            }
        }
        DatabaseError::Storage(StorageError::Io(source)) => OpenError::Io { path, source },
        other => OpenError::Database {
            path,
            source: other.into(),
        },
    }
}

impl LeaseStore for RedbStore {
    fn load(&mut self) -> Result<Vec<LeaseRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.backend_error(e))?;
        let table = txn.open_table(LEASES).map_err(|e| self.backend_error(e))?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(|e| self.backend_error(e))? {
            let (key, value) = entry.map_err(|e| self.backend_error(e))?;
            let address = Ipv4Addr::from(key.value());
            let record =
                LeaseRecord::from_bytes(value.value()).map_err(|e| StoreError::CorruptRecord {
                    reason: format!("lease store {}, {address}: {e}", self.path.display()),
                })?;
            if record.address != address {
                return Err(StoreError::CorruptRecord {
                    reason: format!(
                        "lease store {}: record for {} is stored under {address}",
                        self.path.display(),
                        record.address
                    ),
                });
            }
            records.push(record);
        }
        Ok(records)
    }

    fn put(&mut self, rec: &LeaseRecord) -> Result<(), StoreError> {
        let bytes = rec.to_bytes();
        self.write(|table| {
            table.insert(u32::from(rec.address), &bytes[..])?;
            Ok(())
        })
        .map_err(|e| self.backend_error(e))
    }

    fn remove(&mut self, addr: Ipv4Addr) -> Result<(), StoreError> {
        self.write(|table| {
            table.remove(u32::from(addr))?;
            Ok(())
        })
        .map_err(|e| self.backend_error(e))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::process::{Command, Stdio};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use sitelink_core::keys::PublicKey;
    use sitelink_core::lease::{
        AddressAuthority as _, ClientEntry, LeasePool, LeaseState, PoolSettings,
    };

    use super::*;

    /// Set in the child process of the crash test: where its database goes.
    const CHILD_ENV: &str = "SITELINK_LEASE_STORE_CRASH_CHILD";

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn record(n: u8) -> LeaseRecord {
        LeaseRecord {
            client: key(n),
            address: Ipv4Addr::new(10, 77, 100, n),
            expires_at: 1_800_003_600,
            last_seen: 1_800_000_000,
        }
    }

    fn settings() -> PoolSettings {
        PoolSettings::new(
            vec!["10.77.100.0/28".parse().expect("prefix")],
            Duration::from_secs(3600),
            PathBuf::from("leases.db"),
        )
    }

    fn clients() -> Vec<ClientEntry> {
        vec![ClientEntry {
            name: "alice".to_owned(),
            public_key: key(1),
            fixed_address: Some(Ipv4Addr::new(10, 77, 100, 9)),
        }]
    }

    /// A fresh directory for one test's files.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sitelink-lease-store-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn records_survive_reopening() {
        let dir = scratch("reopen");
        let path = dir.join("leases.db");
        {
            let mut store = RedbStore::open(&path).expect("create");
            assert!(store.load().expect("load").is_empty());
            for n in 1..=3 {
                store.put(&record(n)).expect("put");
            }
            let mut changed = record(2);
            changed.expires_at += 60;
            store.put(&changed).expect("replace");
            store.remove(record(3).address).expect("remove");
            store.remove(record(3).address).expect("remove missing");
        }
        let mut store = RedbStore::open(&path).expect("reopen");
        let mut expected = vec![record(1), record(2)];
        expected[1].expires_at += 60;
        assert_eq!(store.load().expect("load"), expected);
        assert_eq!(store.path(), path);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn new_file_is_private() {
        let dir = scratch("mode");
        let path = dir.join("leases.db");
        drop(RedbStore::open(&path).expect("create"));
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_file_is_a_clear_error_naming_it() {
        let dir = scratch("garbage");
        let path = dir.join("leases.db");
        std::fs::write(&path, vec![0xab; 8192]).expect("write garbage");
        let err = RedbStore::open(&path).expect_err("garbage must not open");
        assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("corrupt"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_database_is_a_clear_error_naming_it() {
        let dir = scratch("damaged");
        let path = dir.join("leases.db");
        {
            let mut store = RedbStore::open(&path).expect("create");
            for n in 1..=10 {
                store.put(&record(n)).expect("put");
            }
        }
        // Flip bytes in every page after the header; the integrity check on open must notice.
        let mut bytes = std::fs::read(&path).expect("read");
        for page in (4096..bytes.len()).step_by(4096) {
            for b in &mut bytes[page + 64..page + 128] {
                *b ^= 0x5a;
            }
        }
        std::fs::write(&path, &bytes).expect("damage");
        let err = RedbStore::open(&path).expect_err("damage must be noticed");
        assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn undecodable_record_is_an_error_naming_the_file() {
        let dir = scratch("record");
        let path = dir.join("leases.db");
        let store = RedbStore::open(&path).expect("create");
        store
            .write(|table| {
                table.insert(u32::from(Ipv4Addr::new(10, 0, 0, 1)), &b"junk"[..])?;
                Ok(())
            })
            .expect("write junk");
        let mut store = store;
        let err = store.load().expect_err("junk must not load");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lease_listing_serializes_for_status() {
        let dir = scratch("json");
        let store = RedbStore::open(&dir.join("leases.db")).expect("create");
        let mut pool = LeasePool::new(settings(), clients(), store).expect("pool");
        let offer = pool.offer(&key(1), None, t(0)).expect("offer");
        pool.request(&key(1), offer.address, t(0)).expect("lease");
        let json = serde_json::to_value(pool.leases(t(1))).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!([{
                "name": "alice",
                "client": key(1).to_base64(),
                "address": "10.77.100.9",
                "expires_at": 1_800_003_600u64,
                "last_seen": 1_800_000_000u64,
                "state": "active",
                "fixed": true,
            }])
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Not a test by itself: the child process of `kill_9_loses_no_lease`. Leases addresses to
    /// three clients, says which, then waits to be killed.
    #[test]
    #[ignore = "run by kill_9_loses_no_lease as a child process"]
    fn crash_child() {
        let Some(path) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let store = RedbStore::open(Path::new(&path)).expect("child opens the store");
        let mut pool = LeasePool::new(settings(), clients(), store).expect("pool");
        let mut line = String::from("leased");
        for n in 1..=3 {
            let offer = pool.offer(&key(n), None, t(0)).expect("offer");
            let lease = pool.request(&key(n), offer.address, t(0)).expect("lease");
            line.push_str(&format!(" {}", lease.address));
        }
        // An offer in flight when the process dies is forgotten; that is allowed.
        pool.offer(&key(4), None, t(1)).expect("offer");
        let mut out = io::stdout();
        writeln!(out, "\n{line}").expect("stdout");
        out.flush().expect("stdout");
        // Hold the database open until the parent kills us.
        std::thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn kill_9_loses_no_lease() {
        let dir = scratch("kill9");
        let path = dir.join("leases.db");
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "lease_store::tests::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut leased = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read child");
            // The harness prints its "test ... " prefix on the same line.
            if let Some((_, rest)) = line.split_once("leased ") {
                leased = Some(
                    rest.split(' ')
                        .map(|a| a.parse::<Ipv4Addr>().expect("address"))
                        .collect::<Vec<_>>(),
                );
                break;
            }
        }
        let leased = leased.expect("child leased addresses");
        assert_eq!(leased.len(), 3);

        // While the child holds it, the file is refused with a clear error.
        let err = RedbStore::open(&path).expect_err("locked");
        assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
        assert!(err.to_string().contains("in use by another process"));

        // kill -9: no destructor, no clean shutdown.
        child.kill().expect("kill child");
        let _ = child.wait();

        let store = RedbStore::open(&path).expect("reopen after the crash");
        let mut pool = LeasePool::new(settings(), clients(), store).expect("pool");
        let active: BTreeSet<_> = pool
            .leases(t(10))
            .into_iter()
            .filter(|e| e.state == LeaseState::Active)
            .map(|e| (e.client, e.address))
            .collect();
        let expected: BTreeSet<_> = (1..=3).map(key).zip(leased.iter().copied()).collect();
        assert_eq!(active, expected);
        // Nobody else gets those addresses; their owners renew them.
        let mut fresh = BTreeSet::new();
        for n in 10..40 {
            if let Ok(offer) = pool.offer(&key(n), None, t(10)) {
                if let Ok(lease) = pool.request(&key(n), offer.address, t(10)) {
                    assert!(fresh.insert(lease.address));
                }
            }
        }
        for a in &leased {
            assert!(!fresh.contains(a), "{a} handed out twice");
        }
        assert_eq!(fresh.len(), 14 - 3);
        for (n, a) in (1..=3).zip(&leased) {
            assert_eq!(pool.renew(&key(n), *a, t(20)).map(|l| l.address), Ok(*a));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Key material: X25519 private and public keys, pre-shared keys, and the secret key files that hold
//! them.
//!
//! Keys are byte-compatible with WireGuard's `wg genkey`, `wg pubkey` and `wg genpsk`: 32 bytes written
//! as standard base64 with padding (44 characters). A private key made by [`PrivateKey::generate`] is
//! clamped exactly like `wg genkey` does it.
//!
//! Randomness comes in as an argument, so the core stays free of OS randomness; binaries pass
//! `rand_core::OsRng`.
//!
//! Secret key files must be private to their owner: [`read_private_key_file`] and
//! [`read_preshared_key_file`] refuse a file that group or others may read or write, and
//! [`write_secret_file`] creates files with mode 0600.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Length of every key in bytes.
pub const KEY_LEN: usize = 32;

/// Largest key file we read; a key is 44 characters, so anything bigger is not a key file.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// Which kind of key a [`KeyError`] is about; it picks the advice in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An X25519 private (static) key.
    Private,
    /// An X25519 public key.
    Public,
    /// A 32-byte symmetric pre-shared key.
    Preshared,
}

impl KeyKind {
    /// How to get a valid key of this kind.
    fn how_to_get(self) -> &'static str {
        match self {
            KeyKind::Private => "generate one with `sitelink-keys genkey`",
            KeyKind::Public => "derive one with `sitelink-keys pubkey < private.key`",
            KeyKind::Preshared => "generate one with `sitelink-keys genpsk`",
        }
    }

    /// The `sitelink-keys` subcommand that makes a key file of this kind.
    fn generate_command(self) -> &'static str {
        match self {
            KeyKind::Private | KeyKind::Public => "genkey",
            KeyKind::Preshared => "genpsk",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Private => "private key",
            KeyKind::Public => "public key",
            KeyKind::Preshared => "pre-shared key",
        })
    }
}

/// Why a key could not be decoded, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not 32 bytes in standard base64 with padding.
    #[error("{kind} is not a base64-encoded 32-byte key ({how})", how = .kind.how_to_get())]
    Malformed {
        /// What the text was supposed to be.
        kind: KeyKind,
    },
    /// A key file's content is not 32 bytes in standard base64 with padding.
    #[error(
        "{path}: not a base64-encoded 32-byte key ({how})",
        path = .path.display(),
        how = .kind.how_to_get()
    )]
    MalformedFile {
        /// The file that was read.
        path: PathBuf,
        /// What the file was supposed to hold.
        kind: KeyKind,
    },
    /// The key file does not exist.
    #[error("{kind} file {path} does not exist", path = .path.display())]
    NotFound {
        /// The file that was looked for.
        path: PathBuf,
        /// What the file was supposed to hold.
        kind: KeyKind,
    },
    /// The secret key file may be read or written by group or others.
    #[error(
        "{path} is accessible by group or others (mode {mode:03o}); a secret key file must be \
         private: run `chmod 600 {quoted}`",
        path = .path.display(),
        quoted = shell_quote(.path)
    )]
    LoosePermissions {
        /// The file that was refused.
        path: PathBuf,
        /// Its permission bits (`mode & 0o777`).
        mode: u32,
    },
    /// The path exists but is not a regular file (a directory, a device, ...).
    #[error("{path} is not a regular file", path = .path.display())]
    NotAFile {
        /// The path that was read.
        path: PathBuf,
    },
    /// The key file exists but could not be opened or read.
    #[error("cannot read {path}: {source}", path = .path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A secret file could not be created or written.
    #[error("cannot write {path}: {source}", path = .path.display())]
    Write {
        /// The file that could not be written.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
}

impl KeyError {
    /// One line telling the user how to fix this error, suitable after `fix:` in a config error.
    pub fn fix(&self) -> String {
        match self {
            KeyError::Malformed { kind } | KeyError::MalformedFile { kind, .. } => {
                kind.how_to_get().to_owned()
            }
            KeyError::NotFound { path, kind } => format!(
                "check the path, or create the file with `sitelink-keys {} --out {}`",
                kind.generate_command(),
                shell_quote(path)
            ),
            KeyError::LoosePermissions { path, .. } => {
                format!("run `chmod 600 {}`", shell_quote(path))
            }
            KeyError::NotAFile { .. } => {
                "point the setting at the key file itself (the key is one line of base64)"
                    .to_owned()
            }
            KeyError::Read { .. } => {
                "check the file's owner and permissions: the gateway's user must be able to read it"
                    .to_owned()
            }
            KeyError::Write { .. } => {
                "check that the directory exists and that you may write to it".to_owned()
            }
        }
    }
}

/// Decodes a 44-character standard base64 key, ignoring surrounding whitespace.
fn decode_key(s: &str, kind: KeyKind) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = STANDARD
        .decode(s.trim())
        .map_err(|_| KeyError::Malformed { kind })?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Malformed { kind })
}

fn encode_key(bytes: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(bytes)
}

/// Clamps a Curve25519 scalar as `wg genkey` does.
fn clamp(bytes: &mut [u8; KEY_LEN]) {
    bytes[0] &= 248;
    bytes[31] &= 127;
    bytes[31] |= 64;
}

/// An X25519 private key. Zeroed when dropped; `Debug` does not show it.
#[derive(Clone)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// Generates a new key from `rng`, clamped like `wg genkey`.
    pub fn generate<R: rand_core::CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        clamp(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Wraps raw key bytes as they are (no clamping; X25519 clamps when the key is used).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(x25519_dalek::StaticSecret::from(bytes))
    }

    /// Decodes a key in `wg genkey` format; surrounding whitespace and a trailing newline are ignored.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode_key(s, KeyKind::Private).map(Self::from_bytes)
    }

    /// Encodes the key in `wg genkey` format (44 characters, no newline).
    pub fn to_base64(&self) -> String {
        encode_key(self.0.as_bytes())
    }

    /// The matching public key, as `wg pubkey` computes it.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// A copy of the key in the form `boringtun` takes.
    pub fn to_static_secret(&self) -> x25519_dalek::StaticSecret {
        self.0.clone()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

/// An X25519 public key: what identifies a gateway or client to its peers.
///
/// `Display` and serde use the 44-character base64 form; `Debug` shows the first 8 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Decodes a key in `wg pubkey` format; surrounding whitespace is ignored.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode_key(s, KeyKind::Public).map(Self)
    }

    /// Encodes the key in `wg pubkey` format (44 characters).
    pub fn to_base64(&self) -> String {
        encode_key(&self.0)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The key in the form `boringtun` takes.
    pub fn to_dalek(&self) -> x25519_dalek::PublicKey {
        x25519_dalek::PublicKey::from(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = self.to_base64();
        write!(f, "PublicKey({}…)", full.get(..8).unwrap_or(&full))
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

impl From<x25519_dalek::PublicKey> for PublicKey {
    fn from(key: x25519_dalek::PublicKey) -> Self {
        Self(key.to_bytes())
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Base64Visitor;

        impl serde::de::Visitor<'_> for Base64Visitor {
            type Value = PublicKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64-encoded 32-byte public key")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PublicKey, E> {
                PublicKey::from_base64(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Base64Visitor)
    }
}

/// A 32-byte symmetric pre-shared key (WireGuard's optional post-quantum hedge). `Debug` does not
/// show it.
#[derive(Clone)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// Generates a new key from `rng`, like `wg genpsk`.
    pub fn generate<R: rand_core::CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Decodes a key in `wg genpsk` format; surrounding whitespace and a trailing newline are ignored.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode_key(s, KeyKind::Preshared).map(Self)
    }

    /// Encodes the key in `wg genpsk` format (44 characters, no newline).
    pub fn to_base64(&self) -> String {
        encode_key(&self.0)
    }

    /// The raw key bytes, as `boringtun::noise::Tunn::new` takes them.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

/// Reads a private key file (`wg genkey` format, trailing newline allowed).
///
/// Refuses a file that group or others may access; see the [module docs](self).
pub fn read_private_key_file(path: &Path) -> Result<PrivateKey, KeyError> {
    let text = read_secret_file(path, KeyKind::Private)?;
    PrivateKey::from_base64(&text).map_err(|_| KeyError::MalformedFile {
        path: path.to_owned(),
        kind: KeyKind::Private,
    })
}

/// Reads a pre-shared key file (`wg genpsk` format, trailing newline allowed).
///
/// Refuses a file that group or others may access; see the [module docs](self).
pub fn read_preshared_key_file(path: &Path) -> Result<PresharedKey, KeyError> {
    let text = read_secret_file(path, KeyKind::Preshared)?;
    PresharedKey::from_base64(&text).map_err(|_| KeyError::MalformedFile {
        path: path.to_owned(),
        kind: KeyKind::Preshared,
    })
}

/// Opens a secret file, checks its permissions on the open handle, and reads at most
/// [`MAX_KEY_FILE_LEN`] bytes of it as text.
fn read_secret_file(path: &Path, kind: KeyKind) -> Result<String, KeyError> {
    let read_err = |source: io::Error| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => KeyError::NotFound {
            path: path.to_owned(),
            kind,
        },
        _ => read_err(source),
    })?;
    let metadata = file.metadata().map_err(read_err)?;
    if !metadata.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_owned(),
        });
    }
    check_private(path, &metadata)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_LEN)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    String::from_utf8(bytes).map_err(|_| KeyError::MalformedFile {
        path: path.to_owned(),
        kind,
    })
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &std::fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt as _;

    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::LoosePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &std::fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

/// Creates or truncates `path`, restricts it to mode 0600, and only then writes `contents`.
///
/// An existing file's looser permissions are tightened before any secret reaches it.
pub fn write_secret_file(path: &Path, contents: &str) -> Result<(), KeyError> {
    let write_err = |source: io::Error| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(write_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(write_err)?;
    }
    file.write_all(contents.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

/// Quotes a path for a shell command in a message, only when it needs it.
fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@=%".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 7748 section 6.1, Alice's key pair.
    const RFC7748_PRIVATE: &str =
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const RFC7748_PUBLIC: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("test vector is hex");
        }
        out
    }

    /// A deterministic "random" source for tests.
    struct CountingRng(u8);

    impl rand_core::RngCore for CountingRng {
        fn next_u32(&mut self) -> u32 {
            rand_core::impls::next_u32_via_fill(self)
        }
        fn next_u64(&mut self) -> u64 {
            rand_core::impls::next_u64_via_fill(self)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                *b = self.0;
                self.0 = self.0.wrapping_add(1);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl rand_core::CryptoRng for CountingRng {}

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "sitelink-keys-unit-{}-{}-{name}",
            std::process::id(),
            std::thread::current()
                .name()
                .unwrap_or("t")
                .replace("::", "-")
        ))
    }

    #[test]
    fn rfc7748_vector() {
        let private = PrivateKey::from_bytes(hex32(RFC7748_PRIVATE));
        assert_eq!(private.public_key().as_bytes(), &hex32(RFC7748_PUBLIC));
        let reparsed = PrivateKey::from_base64(&private.to_base64()).expect("round trip");
        assert_eq!(reparsed.public_key(), private.public_key());
    }

    #[test]
    fn generate_clamps_like_wg() {
        let key = PrivateKey::generate(&mut CountingRng(0xff));
        let bytes = STANDARD.decode(key.to_base64()).expect("valid base64");
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0x80, 0);
        assert_eq!(bytes[31] & 0x40, 0x40);
    }

    #[test]
    fn generate_accepts_unsized_rng() {
        let rng: &mut dyn rand_core::CryptoRngCore = &mut CountingRng(1);
        let psk = PresharedKey::generate(rng);
        assert_eq!(psk.as_bytes()[0], 1);
        let _ = PrivateKey::generate(rng);
    }

    #[test]
    fn base64_is_44_chars_with_padding() {
        let key = PrivateKey::generate(&mut CountingRng(7));
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        assert!(text.ends_with('='));
        assert_eq!(key.public_key().to_base64().len(), 44);
    }

    #[test]
    fn trailing_newline_accepted() {
        let key = PrivateKey::generate(&mut CountingRng(3));
        let with_newline = format!("{}\n", key.to_base64());
        let parsed = PrivateKey::from_base64(&with_newline).expect("newline is trimmed");
        assert_eq!(parsed.public_key(), key.public_key());
    }

    #[test]
    fn malformed_keys_rejected() {
        let good = PrivateKey::generate(&mut CountingRng(9)).to_base64();
        for bad in [
            "",
            "not base64!",
            &good[..43],                 // missing padding
            &STANDARD.encode([0u8; 31]), // wrong length
            &STANDARD.encode([0u8; 33]),
        ] {
            let err = PublicKey::from_base64(bad).expect_err(bad);
            assert!(matches!(
                err,
                KeyError::Malformed {
                    kind: KeyKind::Public
                }
            ));
            assert!(err.to_string().contains("not a base64-encoded 32-byte key"));
        }
        let err = PrivateKey::from_base64("xyz").expect_err("bad");
        assert!(err.to_string().contains(
            "not a base64-encoded 32-byte key (generate one with `sitelink-keys genkey`)"
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let key = PrivateKey::generate(&mut CountingRng(5));
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
        let psk = PresharedKey::generate(&mut CountingRng(5));
        assert_eq!(format!("{psk:?}"), "PresharedKey(<redacted>)");
        let public = key.public_key();
        let debug = format!("{public:?}");
        assert!(debug.starts_with(&format!("PublicKey({}", &public.to_base64()[..8])));
        assert!(!debug.contains(&public.to_base64()));
        assert_eq!(public.to_string(), public.to_base64());
    }

    #[test]
    fn public_key_serde_is_base64_string() {
        let public = PrivateKey::generate(&mut CountingRng(11)).public_key();
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Wrapper {
            key: PublicKey,
        }
        let text = toml::to_string(&Wrapper { key: public }).expect("serialize");
        assert_eq!(text.trim(), format!("key = \"{public}\""));
        let back: Wrapper = toml::from_str(&text).expect("deserialize");
        assert_eq!(back.key, public);
        let err = toml::from_str::<Wrapper>("key = \"short\"")
            .err()
            .expect("invalid key must fail");
        assert!(err.to_string().contains("not a base64-encoded 32-byte key"));
    }

    #[test]
    fn dalek_conversions_agree() {
        let private = PrivateKey::generate(&mut CountingRng(13));
        let dalek_public = x25519_dalek::PublicKey::from(&private.to_static_secret());
        assert_eq!(PublicKey::from(dalek_public), private.public_key());
        assert_eq!(private.public_key().to_dalek(), dalek_public);
        let public = private.public_key();
        assert_eq!(PublicKey::from_bytes(*public.as_bytes()), public);
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_round_trip_and_permissions() {
        use std::os::unix::fs::PermissionsExt as _;

        let path = temp_path("private.key");
        let key = PrivateKey::generate(&mut CountingRng(17));
        // A pre-existing world-readable file is tightened before the secret is written.
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_secret_file(&path, &format!("{}\n", key.to_base64())).expect("write secret");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let read = read_private_key_file(&path).expect("read back");
        assert_eq!(read.public_key(), key.public_key());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_private_key_file(&path).expect_err("group-readable must be refused");
        let text = err.to_string();
        assert!(matches!(
            err,
            KeyError::LoosePermissions { mode: 0o640, .. }
        ));
        assert!(
            text.contains(&format!("chmod 600 {}", path.display())),
            "{text}"
        );
        assert!(err.fix().contains("chmod 600"));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        write_secret_file(&path, "garbage\n").expect("write");
        let err = read_preshared_key_file(&path).expect_err("garbage must be refused");
        assert!(matches!(
            err,
            KeyError::MalformedFile {
                kind: KeyKind::Preshared,
                ..
            }
        ));
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(err.to_string().contains("sitelink-keys genpsk"));

        std::fs::remove_file(&path).expect("cleanup");
        let err = read_private_key_file(&path).expect_err("missing");
        assert!(matches!(err, KeyError::NotFound { .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn shell_quote_only_when_needed() {
        assert_eq!(
            shell_quote(Path::new("/etc/sitelink/a.key")),
            "/etc/sitelink/a.key"
        );
        assert_eq!(shell_quote(Path::new("my keys/a.key")), "'my keys/a.key'");
        assert_eq!(shell_quote(Path::new("it's")), r"'it'\''s'");
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let public = PublicKey::from_bytes(bytes);
            prop_assert_eq!(PublicKey::from_base64(&public.to_base64()).ok(), Some(public));
            let psk = PresharedKey::from_bytes(bytes);
            let back = PresharedKey::from_base64(&psk.to_base64()).ok().map(|k| *k.as_bytes());
            prop_assert_eq!(back, Some(bytes));
            let private = PrivateKey::from_bytes(bytes);
            let back = PrivateKey::from_base64(&private.to_base64()).ok().map(|k| k.public_key());
            prop_assert_eq!(back, Some(private.public_key()));
        }
    }
}

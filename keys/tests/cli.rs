//! `sitelink-keys` against the real `wg` tool: keys must be interchangeable both ways.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const KEYS: &str = env!("CARGO_BIN_EXE_sitelink-keys");
const WG: &str = "/usr/bin/wg";

/// Runs `program args…` with `stdin`, returning its output.
fn run(program: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// Runs a command that must succeed and returns its stdout.
fn ok(program: &str, args: &[&str], stdin: &str) -> String {
    let out = run(program, args, stdin);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

fn wg_available() -> bool {
    let found = Path::new(WG).exists();
    if !found {
        eprintln!("skipping: {WG} is not installed (apt-get install wireguard-tools)");
    }
    found
}

fn assert_key_line(text: &str) {
    let line = text.strip_suffix('\n').expect("output ends in a newline");
    assert_eq!(line.len(), 44, "{line:?}");
    assert!(line.ends_with('='), "{line:?}");
    assert!(!line.contains('\n'), "{line:?}");
}

/// A fresh path in the temp dir, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("sitelink-keys-cli-{}-{name}", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn our_genkey_matches_wg_pubkey() {
    if !wg_available() {
        return;
    }
    for _ in 0..5 {
        let private = ok(KEYS, &["genkey"], "");
        assert_key_line(&private);
        let ours = ok(KEYS, &["pubkey"], &private);
        let theirs = ok(WG, &["pubkey"], &private);
        assert_key_line(&ours);
        assert_eq!(ours, theirs, "public keys differ for {private:?}");
    }
}

#[test]
fn wg_genkey_matches_our_pubkey() {
    if !wg_available() {
        return;
    }
    for _ in 0..5 {
        let private = ok(WG, &["genkey"], "");
        let ours = ok(KEYS, &["pubkey"], &private);
        let theirs = ok(WG, &["pubkey"], &private);
        assert_eq!(ours, theirs, "public keys differ for {private:?}");
    }
}

#[test]
fn genkey_is_clamped_like_wg() {
    let private = ok(KEYS, &["genkey"], "");
    let bytes = decode(private.trim());
    assert_eq!(bytes[0] & 7, 0);
    assert_eq!(bytes[31] & 0xc0, 0x40);
}

#[test]
fn genpsk_is_32_random_bytes() {
    let a = ok(KEYS, &["genpsk"], "");
    let b = ok(KEYS, &["genpsk"], "");
    assert_key_line(&a);
    assert_eq!(decode(a.trim()).len(), 32);
    assert_ne!(a, b);
    if wg_available() {
        // wg accepts our pre-shared key as one: `wg pubkey` takes any 32-byte key.
        ok(WG, &["pubkey"], &a);
    }
}

#[test]
fn pubkey_accepts_missing_newline() {
    let private = ok(KEYS, &["genkey"], "");
    let with = ok(KEYS, &["pubkey"], &private);
    let without = ok(KEYS, &["pubkey"], private.trim_end());
    assert_eq!(with, without);
}

#[test]
fn pubkey_rejects_bad_input() {
    // Non-zero trailing bits: decodes to 32 bytes only if the decoder is lax.
    let noncanonical = "SPc83Tkzxl166EJtvS/6SyxDfy18iHaTJ7mC5sb7+n=\n";
    for input in [
        "",
        "hello\n",
        noncanonical,
        "SPc83Tkzxl166EJtvS/6SyxDfy18iHaTJ7mC5sb7+ns",
    ] {
        let out = run(KEYS, &["pubkey"], input);
        assert!(!out.status.success(), "accepted {input:?}");
        assert!(out.stdout.is_empty(), "printed something for {input:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("stdin"), "{err}");
        assert!(err.contains("not a base64-encoded 32-byte key"), "{err}");
        assert!(err.contains("sitelink-keys genkey"), "{err}");
    }
}

#[cfg(unix)]
#[test]
fn genkey_out_writes_private_file() {
    use std::os::unix::fs::PermissionsExt as _;

    let file = TempPath::new("genkey-out.key");
    let path = file.0.to_str().expect("temp path is UTF-8");
    let public = ok(KEYS, &["genkey", "--out", path], "");
    assert_key_line(&public);
    let mode = std::fs::metadata(&file.0)
        .expect("key file exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let private = std::fs::read_to_string(&file.0).expect("read key file");
    assert_key_line(&private);
    assert_eq!(ok(KEYS, &["pubkey"], &private), public);

    // An existing key is never overwritten.
    let again = run(KEYS, &["genkey", "--out", path], "");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read_to_string(&file.0).expect("read key file"),
        private
    );
}

#[cfg(unix)]
#[test]
fn genpsk_out_writes_private_file() {
    use std::os::unix::fs::PermissionsExt as _;

    let file = TempPath::new("genpsk-out.psk");
    let path = file.0.to_str().expect("temp path is UTF-8");
    let printed = ok(KEYS, &["genpsk", "--out", path], "");
    assert!(printed.is_empty(), "{printed:?}");
    let mode = std::fs::metadata(&file.0)
        .expect("psk file exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_key_line(&std::fs::read_to_string(&file.0).expect("read psk file"));
}

/// Standard base64 decoding, kept here so the test does not share code with what it tests.
fn decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base64: {text:?}"));
        bits = (bits << 6) | u32::try_from(v).expect("small");
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push(u8::try_from((bits >> n) & 0xff).expect("masked"));
        }
    }
    out
}

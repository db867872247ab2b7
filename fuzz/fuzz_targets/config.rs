//! Arbitrary UTF-8 into `GatewayConfig::parse`, with a valid key file next to the config path
//! so validation gets past `[interface]`. Must not panic, also when rendering the error.
#![no_main]

#[path = "../src/bodies.rs"]
mod bodies;

use std::path::PathBuf;
use std::sync::OnceLock;

/// A directory with the key files the seed configs name. One fixed path, rewritten by every
/// run (the contents never change), so runs leave one directory behind rather than one each.
fn key_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("sitelink-fuzz-config");
        std::fs::create_dir_all(&dir).expect("creating the fuzz key dir");
        bodies::write_key_files(&dir).expect("writing the fuzz key files");
        dir
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::config(data, key_dir()));

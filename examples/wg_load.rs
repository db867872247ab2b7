//! `wg_load`: a userspace WireGuard-protocol load and abuse generator for sitelink's tests.
//!
//! It speaks the protocol with boringtun's `Tunn` over plain std UDP sockets (no TUN device, no
//! root needed beyond whatever the bind addresses need), and drives one of these modes against a
//! gateway's listen port:
//!
//! - `flood-init`: handshake initiations at a fixed rate, each from a fresh random static key
//!   (the gateway does not know them) or all from one known key, counting handshake responses
//!   and cookie replies. With `--answer-cookies` a cookie reply is decrypted by the `Tunn` that
//!   sent the initiation, which then re-sends it with a valid mac2 from the same source address:
//!   responses to those retries show that the cookie path works end to end.
//! - `garbage`: random datagrams, or datagrams shaped like WireGuard messages (right type and
//!   length, random contents), or valid initiations with one byte flipped, or handshake
//!   responses with random contents but a valid mac1 (which anyone can compute from the
//!   gateway's public key).
//! - `replay`: sends one valid initiation from a known key, waits for its response, then sends
//!   the very same bytes again (optionally from another source address).
//! - `peers`: acts as K userspace peers (keys derived from a seed, or read from a file), each
//!   completing a handshake (answering cookie replies, retrying on timeout) and optionally
//!   pinging an address behind the gateway through its tunnel. `derive-keys` prints the keys and
//!   inner addresses a seed gives, so a test can write the gateway's config first.
//!
//! Every mode is bounded: by `--count` / `--peers` and by `--duration` (at most 600 s), after
//! which it waits `--linger-ms` for late replies and stops by itself. At the end it prints one
//! line of JSON on stdout (the summary) and exits 0; bad arguments or setup errors exit 2 with a
//! message on stderr.
//!
//! ```text
//! wg_load flood-init --target 198.51.100.1:51820 --server-public-key-file gw.pub \
//!     --bind 203.0.113.10 --bind 203.0.113.11 --rate 400 --count 2000
//! wg_load garbage --target 198.51.100.1:51820 --kind mixed --rate 2000 --count 10000
//! wg_load replay --target ... --server-public-key ... --private-key-file peer.key
//! wg_load derive-keys --seed 7 --peers 3 --inner-base 10.200.0.1
//! wg_load peers --target ... --server-public-key ... --seed 7 --peers 3 \
//!     --inner-base 10.200.0.1 --ping-dst 192.168.10.10 --pings 2
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput as _, KeyInit as _, Update as _};
use blake2::{Blake2s256, Blake2sMac, Digest as _};
use boringtun::noise::{Tunn, TunnResult};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rand_core::{OsRng, RngCore as _};
use serde_json::{json, Value};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

/// Hard cap on any mode's sending phase.
const MAX_DURATION_SECS: u64 = 600;
/// Hard cap on `--count`.
const MAX_COUNT: u64 = 10_000_000;
/// Hard cap on `--peers`.
const MAX_PEERS: usize = 100_000;
/// Hard cap on `--rate`.
const MAX_RATE: f64 = 1_000_000.0;
/// Initiations whose `Tunn` is kept for matching replies (oldest forgotten first).
const MAX_TRACKED: usize = 65_536;
/// Session indices are 24 bits in boringtun (the low 8 bits count handshakes).
const INDEX_SPACE: u64 = 1 << 24;
/// Most datagrams sent in one pass of a loop before receiving again.
const SEND_BURST: usize = 64;
/// Sleep when a loop pass had nothing to do.
const IDLE_SLEEP: Duration = Duration::from_micros(200);
/// Longest wait in poll(2) when a loop pass had nothing to do (`peers` mode).
const POLL_WAIT: Duration = Duration::from_millis(1);
/// Scratch buffer size: the largest UDP payload.
const BUF_LEN: usize = 65_536;

const MSG_INIT: u8 = 1;
const MSG_RESPONSE: u8 = 2;
const MSG_COOKIE: u8 = 3;
const MSG_DATA: u8 = 4;
const INIT_LEN: usize = 148;
const RESPONSE_LEN: usize = 92;
const COOKIE_LEN: usize = 64;
const DATA_MIN_LEN: usize = 32;

/// Userspace WireGuard-protocol load generator (bounded; prints a one-line JSON summary).
#[derive(Debug, Parser)]
#[command(about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Handshake initiations at a rate, from fresh keys or one known key.
    FloodInit(FloodArgs),
    /// Random or corrupt WireGuard-shaped datagrams at a rate.
    Garbage(GarbageArgs),
    /// One valid initiation, then the same bytes again.
    Replay(ReplayArgs),
    /// K userspace peers, each doing a handshake and optional pings through its tunnel.
    Peers(PeersArgs),
    /// Print the keys (and inner addresses) that `peers --seed` uses, one JSON object a line.
    DeriveKeys(DeriveArgs),
}

/// Where to send, from where, and for how long.
#[derive(Debug, Args)]
struct Common {
    /// The gateway's listen address, `IP:PORT`.
    #[arg(long)]
    target: SocketAddr,
    /// Local addresses to send from (`IP` or `IP:PORT`); repeat for several sources, used in
    /// turn. Default: one socket on 0.0.0.0, any port.
    #[arg(long = "bind", value_parser = parse_bind)]
    binds: Vec<SocketAddr>,
    /// Upper bound on the sending phase, in seconds (at most 600).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// How long to keep receiving after the last datagram was sent, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    linger_ms: u64,
}

/// The gateway's public key, inline or from a file.
#[derive(Debug, Args)]
struct ServerKey {
    /// The gateway's public key (base64).
    #[arg(long, conflicts_with = "server_public_key_file")]
    server_public_key: Option<String>,
    /// File holding the gateway's public key (base64).
    #[arg(long)]
    server_public_key_file: Option<PathBuf>,
}

/// A known static key (and pre-shared key), inline or from files.
#[derive(Debug, Args)]
struct KnownKey {
    /// A private key (base64) to use instead of fresh random keys.
    #[arg(long, conflicts_with = "private_key_file")]
    private_key: Option<String>,
    /// File holding a private key (base64).
    #[arg(long)]
    private_key_file: Option<PathBuf>,
    /// File holding a pre-shared key (base64) to mix into handshakes.
    #[arg(long)]
    psk_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct FloodArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    server: ServerKey,
    #[command(flatten)]
    key: KnownKey,
    /// Initiations per second (all sources together).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Initiations to send (retries after cookies not included).
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Decrypt cookie replies and re-send the initiation once with a valid mac2.
    #[arg(long)]
    answer_cookies: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GarbageKind {
    /// Random bytes of random length (1..=max-len).
    Random,
    /// Right message type and length, random contents (mac1 invalid).
    Typed,
    /// A valid initiation from a fresh key with one byte flipped (mac1 invalid).
    Flipped,
    /// Handshake responses with random contents but a valid mac1 for the gateway's key.
    ResponseMac1,
    /// Random, typed and flipped in turn.
    Mixed,
}

#[derive(Debug, Args)]
struct GarbageArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    server: ServerKey,
    /// What to send.
    #[arg(long, value_enum, default_value_t = GarbageKind::Random)]
    kind: GarbageKind,
    /// Datagrams per second (all sources together).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Datagrams to send.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Largest random datagram.
    #[arg(long, default_value_t = 200)]
    max_len: usize,
    /// For typed messages and forged responses: put this gateway peer index (the upper 24 bits
    /// of the session index) into the receiver index instead of a random one.
    #[arg(long)]
    peer_index: Option<u32>,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    server: ServerKey,
    #[command(flatten)]
    key: KnownKey,
    /// How many times to send the captured initiation again.
    #[arg(long, default_value_t = 3)]
    replays: u64,
    /// Replays per second (keep it under the gateway's per-source limit to reach the replay
    /// check rather than the rate limiter).
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
    /// Send the replays from this address instead of the first `--bind`.
    #[arg(long, value_parser = parse_bind)]
    replay_bind: Option<SocketAddr>,
}

/// Where the peers' keys come from.
#[derive(Debug, Args)]
struct PeerKeys {
    /// Derive peer i's private key as SHA-256("sitelink-wg-load" || seed || i).
    #[arg(long, conflicts_with = "keys_file")]
    seed: Option<u64>,
    /// File with one peer a line: `PRIVATE_KEY [PRESHARED_KEY]` (base64).
    #[arg(long)]
    keys_file: Option<PathBuf>,
    /// Number of peers (with `--seed`; with `--keys-file`, at most this many lines are used).
    #[arg(long, default_value_t = 1)]
    peers: usize,
    /// Index of the first peer (with `--seed`), so several generators can split a range.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Peer i's inner address is this plus `first + i` (IPv4).
    #[arg(long)]
    inner_base: Option<Ipv4Addr>,
}

#[derive(Debug, Args)]
struct PeersArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    server: ServerKey,
    #[command(flatten)]
    keys: PeerKeys,
    /// File holding a pre-shared key (base64) for every peer without its own.
    #[arg(long)]
    psk_file: Option<PathBuf>,
    /// New handshakes started per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Handshakes in progress at once, at most.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Retry a handshake (or a ping) after this long without an answer.
    #[arg(long, default_value_t = 2000)]
    retry_ms: u64,
    /// Handshake initiations per peer before giving up (cookie re-sends not included).
    #[arg(long, default_value_t = 5)]
    attempts: u32,
    /// Ping this address through each peer's tunnel once it is up (needs `--inner-base`).
    #[arg(long)]
    ping_dst: Option<Ipv4Addr>,
    /// Echo replies each peer must get.
    #[arg(long, default_value_t = 1)]
    pings: u32,
}

#[derive(Debug, Args)]
struct DeriveArgs {
    #[command(flatten)]
    keys: PeerKeys,
}

fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|e| format!("{s:?} is neither IP nor IP:PORT: {e}"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::FloodInit(a) => flood_init(&a),
        Mode::Garbage(a) => garbage(&a),
        Mode::Replay(a) => replay(&a),
        Mode::Peers(a) => peers(&a),
        Mode::DeriveKeys(a) => derive_keys(&a),
    };
    match result.and_then(|summary| print_line(&summary)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wg_load: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn print_line(v: &Value) -> Result<()> {
    if v.is_null() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Keys

fn decode_key(text: &str, what: &str) -> Result<[u8; 32]> {
    let bytes = BASE64
        .decode(text.trim())
        .with_context(|| format!("{what} is not base64"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("{what} is {} bytes, not 32", bytes.len()))
}

fn read_key_file(path: &PathBuf, what: &str) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} from {}", path.display()))?;
    decode_key(&text, &format!("{what} in {}", path.display()))
}

impl ServerKey {
    fn load(&self) -> Result<PublicKey> {
        let bytes = match (&self.server_public_key, &self.server_public_key_file) {
            (Some(k), _) => decode_key(k, "--server-public-key")?,
            (None, Some(p)) => read_key_file(p, "server public key")?,
            (None, None) => bail!("--server-public-key or --server-public-key-file is required"),
        };
        Ok(PublicKey::from(bytes))
    }
}

impl KnownKey {
    fn private(&self) -> Result<Option<StaticSecret>> {
        let bytes = match (&self.private_key, &self.private_key_file) {
            (Some(k), _) => decode_key(k, "--private-key")?,
            (None, Some(p)) => read_key_file(p, "private key")?,
            (None, None) => return Ok(None),
        };
        Ok(Some(StaticSecret::from(bytes)))
    }

    fn psk(&self) -> Result<Option<[u8; 32]>> {
        self.psk_file
            .as_ref()
            .map(|p| read_key_file(p, "pre-shared key"))
            .transpose()
    }
}

/// One peer's keys and inner address.
struct PeerKey {
    index: u64,
    secret: StaticSecret,
    psk: Option<[u8; 32]>,
    address: Option<Ipv4Addr>,
}

fn seeded_secret(seed: u64, index: u64) -> StaticSecret {
    let mut h = Sha256::new();
    sha2::Digest::update(&mut h, b"sitelink-wg-load");
    sha2::Digest::update(&mut h, seed.to_le_bytes());
    sha2::Digest::update(&mut h, index.to_le_bytes());
    let bytes: [u8; 32] = sha2::Digest::finalize(h).into();
    StaticSecret::from(bytes)
}

fn inner_address(base: Option<Ipv4Addr>, index: u64) -> Result<Option<Ipv4Addr>> {
    let Some(base) = base else { return Ok(None) };
    let v = u64::from(u32::from(base)) + index;
    let v = u32::try_from(v).context("--inner-base + index overflows IPv4")?;
    Ok(Some(Ipv4Addr::from(v)))
}

impl PeerKeys {
    fn load(&self, default_psk: Option<[u8; 32]>) -> Result<Vec<PeerKey>> {
        ensure!(
            (1..=MAX_PEERS).contains(&self.peers),
            "--peers must be 1..={MAX_PEERS}"
        );
        let mut keys = Vec::with_capacity(self.peers);
        match (self.seed, &self.keys_file) {
            (Some(seed), _) => {
                for i in 0..self.peers as u64 {
                    let index = self.first + i;
                    keys.push(PeerKey {
                        index,
                        secret: seeded_secret(seed, index),
                        psk: default_psk,
                        address: inner_address(self.inner_base, index)?,
                    });
                }
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let lines = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'));
                for (i, line) in lines.take(self.peers).enumerate() {
                    let what = format!("{} line {}", path.display(), i + 1);
                    let mut words = line.split_whitespace();
                    let private = words.next().context("empty line")?;
                    let secret = StaticSecret::from(decode_key(private, &what)?);
                    let psk = match words.next() {
                        Some(p) => Some(decode_key(p, &what)?),
                        None => default_psk,
                    };
                    let index = self.first + i as u64;
                    keys.push(PeerKey {
                        index,
                        secret,
                        psk,
                        address: inner_address(self.inner_base, index)?,
                    });
                }
                ensure!(!keys.is_empty(), "{} holds no keys", path.display());
            }
            (None, None) => bail!("--seed or --keys-file is required"),
        }
        Ok(keys)
    }
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// mac1 of a handshake message: keyed BLAKE2s-128 with HASH("mac1----" || responder's key).
/// Anyone who knows the responder's public key can compute it.
fn mac1(server: &PublicKey, msg: &[u8]) -> [u8; 16] {
    let mut h = Blake2s256::new();
    blake2::Digest::update(&mut h, b"mac1----");
    blake2::Digest::update(&mut h, server.as_bytes());
    let key: [u8; 32] = blake2::Digest::finalize(h).into();
    let mut mac = <Blake2sMac<U16>>::new_from_slice(&key).expect("a 32-byte key is valid");
    mac.update(msg);
    mac.finalize_fixed().into()
}

// ---------------------------------------------------------------------------------------------
// Sockets, pacing, reply accounting

/// Replies from the target, by message type.
#[derive(Debug, Default, Clone, Copy)]
struct Replies {
    handshake_responses: u64,
    cookie_replies: u64,
    data: u64,
    other: u64,
    bytes: u64,
}

impl Replies {
    fn count(&mut self, datagram: &[u8]) {
        self.bytes += datagram.len() as u64;
        match message_type(datagram) {
            Some(MSG_RESPONSE) => self.handshake_responses += 1,
            Some(MSG_COOKIE) => self.cookie_replies += 1,
            Some(MSG_DATA) => self.data += 1,
            _ => self.other += 1,
        }
    }

    fn total(&self) -> u64 {
        self.handshake_responses + self.cookie_replies + self.data + self.other
    }

    fn json(&self) -> Value {
        json!({
            "total": self.total(),
            "bytes": self.bytes,
            "handshake_responses": self.handshake_responses,
            "cookie_replies": self.cookie_replies,
            "data": self.data,
            "other": self.other,
        })
    }
}

/// The WireGuard message type of a datagram whose length fits it, if any.
fn message_type(d: &[u8]) -> Option<u8> {
    if d.len() < 4 || d[1..4] != [0, 0, 0] {
        return None;
    }
    match (d[0], d.len()) {
        (MSG_INIT, INIT_LEN) | (MSG_RESPONSE, RESPONSE_LEN) | (MSG_COOKIE, COOKIE_LEN) => {
            Some(d[0])
        }
        (MSG_DATA, n) if n >= DATA_MIN_LEN => Some(MSG_DATA),
        _ => None,
    }
}

fn le32(d: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&d[at..at + 4]);
    u32::from_le_bytes(b)
}

/// The receiver index of a response, cookie reply or data message.
fn receiver_index(d: &[u8]) -> Option<u32> {
    match message_type(d)? {
        MSG_RESPONSE => Some(le32(d, 8)),
        MSG_COOKIE | MSG_DATA => Some(le32(d, 4)),
        _ => None,
    }
}

/// Non-blocking UDP sockets, one per source address, all talking to one target.
struct Net {
    socks: Vec<UdpSocket>,
    locals: Vec<SocketAddr>,
    target: SocketAddr,
    next_rx: usize,
    sent: u64,
    sent_bytes: u64,
    send_errors: u64,
    last_send_error: Option<String>,
    /// Replies from the target, per socket.
    replies: Vec<Replies>,
    /// Datagrams from anyone but the target (ignored).
    rx_foreign: u64,
    /// After [`Net::wait`]: the sockets poll(2) found readable, not yet drained. `recv` then
    /// reads only these instead of trying every socket (hundreds of sources would otherwise
    /// cost hundreds of failing system calls per pass).
    ready: Vec<usize>,
    /// Whether [`Net::wait`] is in use (else `recv` tries every socket in turn).
    polled: bool,
}

impl Net {
    fn bind(binds: &[SocketAddr], target: SocketAddr) -> Result<Self> {
        let default = [SocketAddr::new(
            if target.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            },
            0,
        )];
        let binds = if binds.is_empty() {
            &default[..]
        } else {
            binds
        };
        let mut socks = Vec::with_capacity(binds.len());
        let mut locals = Vec::with_capacity(binds.len());
        for addr in binds {
            let s = UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
            s.set_nonblocking(true)?;
            locals.push(s.local_addr()?);
            socks.push(s);
        }
        Ok(Self {
            replies: vec![Replies::default(); socks.len()],
            socks,
            locals,
            target,
            next_rx: 0,
            sent: 0,
            sent_bytes: 0,
            send_errors: 0,
            last_send_error: None,
            rx_foreign: 0,
            ready: Vec::new(),
            polled: false,
        })
    }

    fn add(&mut self, bind: SocketAddr) -> Result<usize> {
        let s = UdpSocket::bind(bind).with_context(|| format!("binding UDP {bind}"))?;
        s.set_nonblocking(true)?;
        self.locals.push(s.local_addr()?);
        self.socks.push(s);
        self.replies.push(Replies::default());
        Ok(self.socks.len() - 1)
    }

    fn len(&self) -> usize {
        self.socks.len()
    }

    /// Sends `data` to the target from socket `sock`; a full send buffer is waited out briefly,
    /// any other error is counted and the datagram dropped.
    fn send(&mut self, sock: usize, data: &[u8]) {
        for _ in 0..1000 {
            match self.socks[sock].send_to(data, self.target) {
                Ok(_) => {
                    self.sent += 1;
                    self.sent_bytes += data.len() as u64;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => {
                    self.send_errors += 1;
                    self.last_send_error = Some(e.to_string());
                    return;
                }
            }
        }
        self.send_errors += 1;
        self.last_send_error = Some("send buffer full for 50 ms".to_owned());
    }

    /// Waits up to `timeout` for a datagram on any socket (poll(2)) and remembers which sockets
    /// have one for [`Net::recv`]. From the first call on, `recv` reads only those.
    fn wait(&mut self, timeout: Duration) {
        self.polled = true;
        let mut fds: Vec<libc::pollfd> = self
            .socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs
        // for the duration of the call; the descriptors are open sockets owned by `self`.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        self.ready.clear();
        if n > 0 {
            self.ready.extend(
                fds.iter()
                    .enumerate()
                    .filter(|(_, f)| f.revents != 0)
                    .map(|(i, _)| i),
            );
        }
    }

    /// The next datagram from the target on any socket: `(socket, length)`.
    fn recv(&mut self, buf: &mut [u8]) -> Option<(usize, usize)> {
        if self.polled {
            while let Some(&i) = self.ready.last() {
                match self.socks[i].recv_from(buf) {
                    Ok((n, from)) if from == self.target => {
                        self.replies[i].count(&buf[..n]);
                        return Some((i, n));
                    }
                    Ok(_) => self.rx_foreign += 1,
                    Err(_) => {
                        self.ready.pop();
                    }
                }
            }
            return None;
        }
        let mut idle = 0;
        while idle < self.socks.len() {
            let i = self.next_rx;
            match self.socks[i].recv_from(buf) {
                Ok((n, from)) if from == self.target => {
                    self.replies[i].count(&buf[..n]);
                    return Some((i, n));
                }
                Ok(_) => self.rx_foreign += 1,
                Err(_) => {
                    idle += 1;
                    self.next_rx = (self.next_rx + 1) % self.socks.len();
                }
            }
        }
        None
    }

    fn total_replies(&self) -> Replies {
        let mut t = Replies::default();
        for r in &self.replies {
            t.handshake_responses += r.handshake_responses;
            t.cookie_replies += r.cookie_replies;
            t.data += r.data;
            t.other += r.other;
            t.bytes += r.bytes;
        }
        t
    }

    fn json(&self) -> Value {
        json!({
            "target": self.target.to_string(),
            "sources": self.locals.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "sent": self.sent,
            "sent_bytes": self.sent_bytes,
            "send_errors": self.send_errors,
            "last_send_error": self.last_send_error,
            "replies": self.total_replies().json(),
            "rx_foreign": self.rx_foreign,
        })
    }
}

/// Sends at `rate` per second: `due(sent)` says whether one more may go now.
struct Pacer {
    start: Instant,
    rate: f64,
}

impl Pacer {
    fn new(rate: f64) -> Result<Self> {
        ensure!(
            rate > 0.0 && rate <= MAX_RATE,
            "--rate must be in (0, {MAX_RATE}]"
        );
        Ok(Self {
            start: Instant::now(),
            rate,
        })
    }

    fn due(&self, sent: u64) -> bool {
        (sent as f64) < self.start.elapsed().as_secs_f64() * self.rate + 1.0
    }
}

/// The time limits of a run: a deadline for sending, then a linger for replies.
struct Clock {
    start: Instant,
    send_deadline: Instant,
    linger: Duration,
}

impl Clock {
    fn new(c: &Common) -> Result<Self> {
        ensure!(
            (1..=MAX_DURATION_SECS).contains(&c.duration),
            "--duration must be 1..={MAX_DURATION_SECS} seconds"
        );
        ensure!(c.linger_ms <= 60_000, "--linger-ms must be at most 60000");
        let start = Instant::now();
        Ok(Self {
            start,
            send_deadline: start + Duration::from_secs(c.duration),
            linger: Duration::from_millis(c.linger_ms),
        })
    }

    fn sending_over(&self) -> bool {
        Instant::now() >= self.send_deadline
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn check_count(count: u64) -> Result<()> {
    ensure!(
        (1..=MAX_COUNT).contains(&count),
        "--count must be 1..={MAX_COUNT}"
    );
    Ok(())
}

/// Small fast PRNG (xorshift64*) for garbage, seeded from the OS.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Self(OsRng.next_u64() | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// flood-init

struct Initiation {
    tunn: Tunn,
    sock: usize,
    cookie_retried: bool,
}

#[derive(Debug, Default)]
struct FloodStats {
    initiations: u64,
    responses_valid: u64,
    responses_invalid: u64,
    responses_untracked: u64,
    responses_after_cookie: u64,
    cookies_accepted: u64,
    cookies_rejected: u64,
    cookies_untracked: u64,
    retried_with_mac2: u64,
}

fn flood_init(a: &FloodArgs) -> Result<Value> {
    check_count(a.count)?;
    let server = a.server.load()?;
    let known = a.key.private()?;
    let psk = a.key.psk()?;
    let clock = Clock::new(&a.common)?;
    let pacer = Pacer::new(a.rate)?;
    let mut net = Net::bind(&a.common.binds, a.common.target)?;
    let target_ip = a.common.target.ip();
    let mut buf = vec![0u8; BUF_LEN];
    let mut out = vec![0u8; BUF_LEN];
    let mut tracked: HashMap<u32, Initiation> = HashMap::new();
    let mut order: VecDeque<u32> = VecDeque::new();
    let mut st = FloodStats::default();
    let base = OsRng.next_u64() % INDEX_SPACE;
    let mut done_sending_at: Option<Instant> = None;

    loop {
        let mut busy = false;
        if done_sending_at.is_none() {
            if st.initiations >= a.count || clock.sending_over() {
                done_sending_at = Some(Instant::now());
            } else {
                for _ in 0..SEND_BURST {
                    if st.initiations >= a.count || !pacer.due(st.initiations) {
                        break;
                    }
                    busy = true;
                    let index = ((base + st.initiations) % INDEX_SPACE) as u32;
                    let secret = match &known {
                        Some(k) => k.clone(),
                        None => StaticSecret::random_from_rng(OsRng),
                    };
                    let mut tunn = Tunn::new(secret, server, psk, None, index, None);
                    let sock = (st.initiations % net.len() as u64) as usize;
                    if let TunnResult::WriteToNetwork(init) =
                        tunn.format_handshake_initiation(&mut out, false)
                    {
                        net.send(sock, init);
                    }
                    st.initiations += 1;
                    if order.len() >= MAX_TRACKED {
                        if let Some(old) = order.pop_front() {
                            tracked.remove(&old);
                        }
                    }
                    order.push_back(index);
                    tracked.insert(
                        index,
                        Initiation {
                            tunn,
                            sock,
                            cookie_retried: false,
                        },
                    );
                }
            }
        }
        while let Some((sock, n)) = net.recv(&mut buf) {
            busy = true;
            let d = &buf[..n];
            let Some(idx) = receiver_index(d).map(|i| i >> 8) else {
                continue;
            };
            match message_type(d) {
                Some(MSG_RESPONSE) => {
                    let Some(mut e) = tracked.remove(&idx) else {
                        st.responses_untracked += 1;
                        continue;
                    };
                    match e.tunn.decapsulate(Some(target_ip), d, &mut out) {
                        TunnResult::WriteToNetwork(_) => {
                            st.responses_valid += 1;
                            if e.cookie_retried {
                                st.responses_after_cookie += 1;
                            }
                        }
                        _ => st.responses_invalid += 1,
                    }
                }
                Some(MSG_COOKIE) => {
                    if !a.answer_cookies {
                        continue;
                    }
                    let Some(e) = tracked.get_mut(&idx) else {
                        st.cookies_untracked += 1;
                        continue;
                    };
                    if e.cookie_retried || e.sock != sock {
                        continue;
                    }
                    match e.tunn.decapsulate(Some(target_ip), d, &mut out) {
                        TunnResult::Done => st.cookies_accepted += 1,
                        _ => {
                            st.cookies_rejected += 1;
                            continue;
                        }
                    }
                    if let TunnResult::WriteToNetwork(init) =
                        e.tunn.format_handshake_initiation(&mut out, true)
                    {
                        e.cookie_retried = true;
                        st.retried_with_mac2 += 1;
                        let sock = e.sock;
                        net.send(sock, init);
                    }
                }
                _ => {}
            }
        }
        if let Some(t) = done_sending_at {
            if t.elapsed() >= clock.linger {
                break;
            }
        }
        if !busy {
            std::thread::sleep(IDLE_SLEEP);
        }
    }

    Ok(json!({
        "mode": "flood-init",
        "keys": if known.is_some() { "known" } else { "fresh" },
        "answer_cookies": a.answer_cookies,
        "elapsed_ms": clock.elapsed_ms(),
        "initiations": st.initiations,
        "responses_valid": st.responses_valid,
        "responses_invalid": st.responses_invalid,
        "responses_untracked": st.responses_untracked,
        "responses_after_cookie": st.responses_after_cookie,
        "cookies_accepted": st.cookies_accepted,
        "cookies_rejected": st.cookies_rejected,
        "cookies_untracked": st.cookies_untracked,
        "retried_with_mac2": st.retried_with_mac2,
        "net": net.json(),
    }))
}

// ---------------------------------------------------------------------------------------------
// garbage

fn garbage(a: &GarbageArgs) -> Result<Value> {
    check_count(a.count)?;
    ensure!(
        (1..=BUF_LEN - 64).contains(&a.max_len),
        "--max-len must be 1..={}",
        BUF_LEN - 64
    );
    ensure!(
        a.peer_index.is_none_or(|p| u64::from(p) < INDEX_SPACE),
        "--peer-index must be below 2^24"
    );
    let needs_server = matches!(
        a.kind,
        GarbageKind::Flipped | GarbageKind::ResponseMac1 | GarbageKind::Mixed
    );
    let server = if needs_server {
        Some(a.server.load()?)
    } else {
        None
    };
    let clock = Clock::new(&a.common)?;
    let pacer = Pacer::new(a.rate)?;
    let mut net = Net::bind(&a.common.binds, a.common.target)?;
    let mut rng = Rng::new();
    let mut buf = vec![0u8; BUF_LEN];
    let mut msg = vec![0u8; BUF_LEN];
    let mut scratch = vec![0u8; BUF_LEN];
    let mut sent_by_kind: HashMap<&'static str, u64> = HashMap::new();
    let mut n: u64 = 0;
    let mut done_sending_at: Option<Instant> = None;

    loop {
        let mut busy = false;
        if done_sending_at.is_none() {
            if n >= a.count || clock.sending_over() {
                done_sending_at = Some(Instant::now());
            } else {
                for _ in 0..SEND_BURST {
                    if n >= a.count || !pacer.due(n) {
                        break;
                    }
                    busy = true;
                    let kind = match a.kind {
                        GarbageKind::Mixed => match n % 3 {
                            0 => GarbageKind::Random,
                            1 => GarbageKind::Typed,
                            _ => GarbageKind::Flipped,
                        },
                        k => k,
                    };
                    let (name, len) = match (kind, server.as_ref()) {
                        (GarbageKind::Flipped, Some(s)) => {
                            ("flipped", flipped_init(&mut rng, s, &mut msg, &mut scratch))
                        }
                        (GarbageKind::ResponseMac1, Some(s)) => (
                            "response_mac1",
                            forged_response(&mut rng, s, a.peer_index, &mut msg),
                        ),
                        (GarbageKind::Typed, _) => (
                            "typed",
                            typed_garbage(&mut rng, a.peer_index, a.max_len, &mut msg),
                        ),
                        _ => {
                            let len = 1 + rng.below(a.max_len as u64) as usize;
                            rng.fill(&mut msg[..len]);
                            ("random", len)
                        }
                    };
                    let sock = (n % net.len() as u64) as usize;
                    net.send(sock, &msg[..len]);
                    *sent_by_kind.entry(name).or_default() += 1;
                    n += 1;
                }
            }
        }
        while net.recv(&mut buf).is_some() {
            busy = true;
        }
        if let Some(t) = done_sending_at {
            if t.elapsed() >= clock.linger {
                break;
            }
        }
        if !busy {
            std::thread::sleep(IDLE_SLEEP);
        }
    }

    Ok(json!({
        "mode": "garbage",
        "kind": format!("{:?}", a.kind),
        "elapsed_ms": clock.elapsed_ms(),
        "datagrams": n,
        "sent_by_kind": sent_by_kind,
        "net": net.json(),
    }))
}

fn random_receiver_index(rng: &mut Rng, peer_index: Option<u32>) -> u32 {
    let r = rng.next() as u32;
    match peer_index {
        Some(p) => (p << 8) | (r & 0xff),
        None => r,
    }
}

/// A datagram with a valid WireGuard type and length and random contents.
fn typed_garbage(rng: &mut Rng, peer_index: Option<u32>, max_len: usize, msg: &mut [u8]) -> usize {
    let kind = 1 + rng.below(4) as u8;
    let len = match kind {
        MSG_INIT => INIT_LEN,
        MSG_RESPONSE => RESPONSE_LEN,
        MSG_COOKIE => COOKIE_LEN,
        _ => DATA_MIN_LEN + rng.below(max_len.saturating_sub(DATA_MIN_LEN) as u64 + 1) as usize,
    };
    rng.fill(&mut msg[..len]);
    msg[..4].copy_from_slice(&[kind, 0, 0, 0]);
    let receiver = random_receiver_index(rng, peer_index).to_le_bytes();
    match kind {
        MSG_RESPONSE => msg[8..12].copy_from_slice(&receiver),
        MSG_COOKIE | MSG_DATA => msg[4..8].copy_from_slice(&receiver),
        _ => {}
    }
    len
}

/// A valid initiation from a fresh key with one byte of its body (not the MACs) flipped.
fn flipped_init(rng: &mut Rng, server: &PublicKey, msg: &mut [u8], scratch: &mut [u8]) -> usize {
    let mut tunn = Tunn::new(
        StaticSecret::random_from_rng(OsRng),
        *server,
        None,
        None,
        (rng.next() % INDEX_SPACE) as u32,
        None,
    );
    let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(scratch, false) else {
        return 0;
    };
    let len = init.len();
    msg[..len].copy_from_slice(init);
    // Bytes 4..116 are sender index, ephemeral, encrypted static and timestamp.
    let at = 4 + rng.below(112) as usize;
    msg[at] ^= 1 << rng.below(8);
    len
}

/// A handshake response with random contents but a valid mac1: the cheapest message that gets
/// past the MAC check of the gateway's `RateLimiter`.
fn forged_response(
    rng: &mut Rng,
    server: &PublicKey,
    peer_index: Option<u32>,
    msg: &mut [u8],
) -> usize {
    rng.fill(&mut msg[..RESPONSE_LEN]);
    msg[..4].copy_from_slice(&[MSG_RESPONSE, 0, 0, 0]);
    let receiver = random_receiver_index(rng, peer_index);
    msg[8..12].copy_from_slice(&receiver.to_le_bytes());
    let m = mac1(server, &msg[..RESPONSE_LEN - 32]);
    msg[RESPONSE_LEN - 32..RESPONSE_LEN - 16].copy_from_slice(&m);
    msg[RESPONSE_LEN - 16..RESPONSE_LEN].fill(0);
    RESPONSE_LEN
}

// ---------------------------------------------------------------------------------------------
// replay

fn replay(a: &ReplayArgs) -> Result<Value> {
    ensure!(
        (1..=MAX_COUNT).contains(&a.replays),
        "--replays must be 1..={MAX_COUNT}"
    );
    let server = a.server.load()?;
    let secret = a
        .key
        .private()?
        .context("replay needs --private-key or --private-key-file (a key the gateway knows)")?;
    let psk = a.key.psk()?;
    let clock = Clock::new(&a.common)?;
    let mut net = Net::bind(&a.common.binds, a.common.target)?;
    let replay_sock = match a.replay_bind {
        Some(b) => net.add(b)?,
        None => 0,
    };
    let target_ip = a.common.target.ip();
    let mut buf = vec![0u8; BUF_LEN];
    let mut out = vec![0u8; BUF_LEN];
    let index = (OsRng.next_u64() % INDEX_SPACE) as u32;
    let mut tunn = Tunn::new(secret, server, psk, None, index, None);
    let captured = match tunn.format_handshake_initiation(&mut out, false) {
        TunnResult::WriteToNetwork(init) => init.to_vec(),
        _ => bail!("boringtun did not produce an initiation"),
    };

    // The original, from the first socket; wait up to the linger time for its response.
    net.send(0, &captured);
    let mut original_response = "none";
    let wait_until = Instant::now() + clock.linger;
    while Instant::now() < wait_until && original_response == "none" {
        match net.recv(&mut buf) {
            Some((0, n)) if message_type(&buf[..n]) == Some(MSG_RESPONSE) => {
                original_response = match tunn.decapsulate(Some(target_ip), &buf[..n], &mut out) {
                    TunnResult::WriteToNetwork(_) => "valid",
                    _ => "invalid",
                };
            }
            Some((0, n)) if message_type(&buf[..n]) == Some(MSG_COOKIE) => {
                original_response = "cookie";
            }
            Some(_) => {}
            None => std::thread::sleep(IDLE_SLEEP),
        }
    }
    let before = net.replies[replay_sock];

    // The replays.
    let pacer = Pacer::new(a.rate)?;
    let mut replays_sent = 0u64;
    let mut done_sending_at: Option<Instant> = None;
    loop {
        let mut busy = false;
        if done_sending_at.is_none() {
            if replays_sent >= a.replays || clock.sending_over() {
                done_sending_at = Some(Instant::now());
            } else if pacer.due(replays_sent) {
                busy = true;
                net.send(replay_sock, &captured);
                replays_sent += 1;
            }
        }
        while net.recv(&mut buf).is_some() {
            busy = true;
        }
        if let Some(t) = done_sending_at {
            if t.elapsed() >= clock.linger {
                break;
            }
        }
        if !busy {
            std::thread::sleep(IDLE_SLEEP);
        }
    }
    let after = net.replies[replay_sock];
    let to_replays = Replies {
        handshake_responses: after.handshake_responses - before.handshake_responses,
        cookie_replies: after.cookie_replies - before.cookie_replies,
        data: after.data - before.data,
        other: after.other - before.other,
        bytes: after.bytes - before.bytes,
    };
    Ok(json!({
        "mode": "replay",
        "elapsed_ms": clock.elapsed_ms(),
        "original_response": original_response,
        "replays_sent": replays_sent,
        "replay_source": net.locals[replay_sock].to_string(),
        "replies_to_replays": to_replays.json(),
        "net": net.json(),
    }))
}

// ---------------------------------------------------------------------------------------------
// peers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Handshaking,
    Pinging,
    Done,
    Failed,
}

struct SimPeer {
    tunn: Tunn,
    sock: usize,
    address: Option<Ipv4Addr>,
    phase: Phase,
    attempts: u32,
    /// Bumped at every send that arms the retry timer; stale timer entries are ignored.
    generation: u32,
    started: Option<Instant>,
    cookie_resends: u32,
    ping_seq: u16,
    ping_attempts: u32,
    ping_replies: u32,
}

#[derive(Debug, Default)]
struct PeersStats {
    initiations: u64,
    retries: u64,
    cookies_accepted: u64,
    cookies_rejected: u64,
    retried_with_mac2: u64,
    responses_invalid: u64,
    unmatched: u64,
    handshakes: u64,
    failed: u64,
    pings_sent: u64,
    ping_replies: u64,
    data_other: u64,
    handshake_ms: Vec<u64>,
    /// When the first and the last new handshake were started, and the last one completed.
    first_initiation: Option<Instant>,
    last_new_initiation: Option<Instant>,
    last_handshake: Option<Instant>,
    /// Handshakes completed in each second since the first initiation.
    handshakes_by_second: Vec<u64>,
}

/// Wall-clock time of an `Instant`, for lining a run up with other tools' logs.
struct Epoch {
    instant: Instant,
    unix_ms: u64,
}

impl Epoch {
    fn now() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            instant: Instant::now(),
            unix_ms,
        }
    }

    fn unix_ms(&self, t: Option<Instant>) -> Value {
        t.map_or(Value::Null, |t| {
            let ms = u64::try_from(t.duration_since(self.instant).as_millis()).unwrap_or(0);
            json!(self.unix_ms + ms)
        })
    }
}

/// The rate view of a `peers` run: when it started and ended (Unix milliseconds), handshakes
/// completed per second over the whole run and in each second.
fn storm_json(st: &PeersStats, epoch: &Epoch) -> Value {
    let rate = match (st.first_initiation, st.last_handshake) {
        (Some(first), Some(last)) if last > first => {
            let per_second = st.handshakes as f64 / last.duration_since(first).as_secs_f64();
            json!((per_second * 10.0).round() / 10.0)
        }
        _ => Value::Null,
    };
    json!({
        "first_initiation_unix_ms": epoch.unix_ms(st.first_initiation),
        "last_new_initiation_unix_ms": epoch.unix_ms(st.last_new_initiation),
        "last_handshake_unix_ms": epoch.unix_ms(st.last_handshake),
        "handshakes_per_second": rate,
        "handshakes_by_second": st.handshakes_by_second,
    })
}

fn peers(a: &PeersArgs) -> Result<Value> {
    let server = a.server.load()?;
    let default_psk = a
        .psk_file
        .as_ref()
        .map(|p| read_key_file(p, "pre-shared key"))
        .transpose()?;
    let keys = a.keys.load(default_psk)?;
    ensure!(
        a.attempts >= 1 && a.attempts <= 100,
        "--attempts must be 1..=100"
    );
    ensure!(a.in_flight >= 1, "--in-flight must be at least 1");
    ensure!(a.retry_ms >= 10, "--retry-ms must be at least 10");
    ensure!(a.pings <= 1000, "--pings must be at most 1000");
    let ping_dst = match a.ping_dst {
        Some(d) if a.pings > 0 => {
            ensure!(
                a.keys.inner_base.is_some(),
                "--ping-dst needs --inner-base (the peers' source addresses)"
            );
            Some(d)
        }
        _ => None,
    };
    // Checked now; both start again once the peers' state machines are built below (10 000
    // of them take about half a second, which must not turn into a burst of due initiations).
    Clock::new(&a.common)?;
    Pacer::new(a.rate)?;
    let mut net = Net::bind(&a.common.binds, a.common.target)?;
    let target_ip = a.common.target.ip();
    let retry = Duration::from_millis(a.retry_ms);
    let mut buf = vec![0u8; BUF_LEN];
    let mut out = vec![0u8; BUF_LEN];
    let mut pkt = [0u8; 64];

    let mut sims: Vec<SimPeer> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| SimPeer {
            tunn: Tunn::new(k.secret.clone(), server, k.psk, None, i as u32, None),
            sock: i % net.len(),
            address: k.address,
            phase: Phase::Waiting,
            attempts: 0,
            generation: 0,
            started: None,
            cookie_resends: 0,
            ping_seq: 0,
            ping_attempts: 0,
            ping_replies: 0,
        })
        .collect();
    let mut st = PeersStats::default();
    // Retry timers, in deadline order (all have the same delay): (deadline, peer, generation).
    let mut timers: VecDeque<(Instant, usize, u32)> = VecDeque::new();
    let mut next_new = 0usize;
    let mut in_flight = 0usize;
    let mut finished = 0usize;
    let mut done_at: Option<Instant> = None;
    let clock = Clock::new(&a.common)?;
    let pacer = Pacer::new(a.rate)?;
    let epoch = Epoch::now();

    loop {
        let mut busy = false;
        let now = Instant::now();
        if done_at.is_none() && (finished == sims.len() || clock.sending_over()) {
            done_at = Some(now);
        }
        if done_at.is_none() {
            // New handshakes (a small burst: each costs two DH, and replies wait meanwhile).
            for _ in 0..SEND_BURST / 8 {
                if next_new >= sims.len() || in_flight >= a.in_flight || !pacer.due(next_new as u64)
                {
                    break;
                }
                busy = true;
                let i = next_new;
                next_new += 1;
                in_flight += 1;
                let p = &mut sims[i];
                p.phase = Phase::Handshaking;
                p.started = Some(now);
                p.attempts = 1;
                p.generation += 1;
                st.initiations += 1;
                st.first_initiation.get_or_insert(now);
                st.last_new_initiation = Some(now);
                if let TunnResult::WriteToNetwork(init) =
                    p.tunn.format_handshake_initiation(&mut out, false)
                {
                    net.send(p.sock, init);
                }
                timers.push_back((now + retry, i, p.generation));
            }
            // Timeouts.
            while let Some(&(deadline, i, generation)) = timers.front() {
                if deadline > now {
                    break;
                }
                timers.pop_front();
                let p = &mut sims[i];
                if p.generation != generation {
                    continue;
                }
                busy = true;
                match p.phase {
                    Phase::Handshaking if p.attempts < a.attempts => {
                        p.attempts += 1;
                        p.generation += 1;
                        st.initiations += 1;
                        st.retries += 1;
                        if let TunnResult::WriteToNetwork(init) =
                            p.tunn.format_handshake_initiation(&mut out, true)
                        {
                            net.send(p.sock, init);
                        }
                        timers.push_back((now + retry, i, p.generation));
                    }
                    Phase::Handshaking => {
                        p.phase = Phase::Failed;
                        in_flight -= 1;
                        finished += 1;
                        st.failed += 1;
                    }
                    Phase::Pinging if p.ping_attempts < a.pings + a.attempts - 1 => {
                        if let Some(dst) = ping_dst {
                            send_ping(p, dst, &mut pkt, &mut out, &mut net, &mut st);
                            p.generation += 1;
                            timers.push_back((now + retry, i, p.generation));
                        }
                    }
                    Phase::Pinging => {
                        p.phase = Phase::Done;
                        finished += 1;
                    }
                    _ => {}
                }
            }
        }
        // Replies.
        while let Some((_, n)) = net.recv(&mut buf) {
            busy = true;
            let d = &buf[..n];
            let Some(i) = receiver_index(d).map(|r| (r >> 8) as usize) else {
                st.unmatched += 1;
                continue;
            };
            let Some(p) = sims.get_mut(i) else {
                st.unmatched += 1;
                continue;
            };
            let now = Instant::now();
            match message_type(d) {
                Some(MSG_COOKIE) => {
                    // One re-send per cookie, at most `attempts` per peer: bounded even if the
                    // gateway never accepts our mac2 (e.g. a NAT changes our address).
                    if p.phase != Phase::Handshaking || p.cookie_resends >= a.attempts {
                        continue;
                    }
                    p.cookie_resends += 1;
                    if !matches!(
                        p.tunn.decapsulate(Some(target_ip), d, &mut out),
                        TunnResult::Done
                    ) {
                        st.cookies_rejected += 1;
                        continue;
                    }
                    st.cookies_accepted += 1;
                    st.retried_with_mac2 += 1;
                    p.generation += 1;
                    if let TunnResult::WriteToNetwork(init) =
                        p.tunn.format_handshake_initiation(&mut out, true)
                    {
                        net.send(p.sock, init);
                    }
                    timers.push_back((now + retry, i, p.generation));
                }
                Some(MSG_RESPONSE) => {
                    if p.phase != Phase::Handshaking {
                        continue;
                    }
                    match p.tunn.decapsulate(Some(target_ip), d, &mut out) {
                        TunnResult::WriteToNetwork(keepalive) => {
                            let sock = p.sock;
                            net.send(sock, keepalive);
                        }
                        _ => {
                            st.responses_invalid += 1;
                            continue;
                        }
                    }
                    st.handshakes += 1;
                    st.last_handshake = Some(now);
                    if let Some(first) = st.first_initiation {
                        let second = now.duration_since(first).as_secs() as usize;
                        if st.handshakes_by_second.len() <= second {
                            st.handshakes_by_second.resize(second + 1, 0);
                        }
                        st.handshakes_by_second[second] += 1;
                    }
                    in_flight -= 1;
                    if let Some(t) = p.started {
                        st.handshake_ms
                            .push(u64::try_from(now.duration_since(t).as_millis()).unwrap_or(0));
                    }
                    match ping_dst {
                        Some(dst) => {
                            p.phase = Phase::Pinging;
                            send_ping(p, dst, &mut pkt, &mut out, &mut net, &mut st);
                            p.generation += 1;
                            timers.push_back((now + retry, i, p.generation));
                        }
                        None => {
                            p.phase = Phase::Done;
                            p.generation += 1;
                            finished += 1;
                        }
                    }
                }
                Some(MSG_DATA) => {
                    let is_reply = match p.tunn.decapsulate(Some(target_ip), d, &mut out) {
                        TunnResult::WriteToTunnelV4(inner, _) => {
                            is_echo_reply(inner, p.address, ping_dst, p.ping_seq)
                        }
                        _ => false,
                    };
                    if !is_reply {
                        st.data_other += 1;
                        continue;
                    }
                    if p.phase != Phase::Pinging {
                        continue;
                    }
                    st.ping_replies += 1;
                    p.ping_replies += 1;
                    p.generation += 1;
                    if p.ping_replies >= a.pings {
                        p.phase = Phase::Done;
                        finished += 1;
                    } else if let Some(dst) = ping_dst {
                        send_ping(p, dst, &mut pkt, &mut out, &mut net, &mut st);
                        timers.push_back((now + retry, i, p.generation));
                    }
                }
                _ => st.unmatched += 1,
            }
        }
        if let Some(t) = done_at {
            if finished == sims.len() || t.elapsed() >= clock.linger {
                break;
            }
        }
        // Sleeps in poll(2) rather than a fixed sleep: replies are read as they come, and a
        // pass costs one system call for all sources instead of one per source.
        net.wait(if busy { Duration::ZERO } else { POLL_WAIT });
    }

    let count = |phase: Phase| sims.iter().filter(|p| p.phase == phase).count();
    let all_pinged = sims
        .iter()
        .filter(|p| ping_dst.is_some() && p.ping_replies >= a.pings)
        .count();
    let ms = &mut st.handshake_ms;
    ms.sort_unstable();
    let pct = |q: f64| -> Value {
        if ms.is_empty() {
            Value::Null
        } else {
            let at = ((ms.len() - 1) as f64 * q).round() as usize;
            json!(ms[at])
        }
    };
    Ok(json!({
        "mode": "peers",
        "elapsed_ms": clock.elapsed_ms(),
        "peers": sims.len(),
        "first": a.keys.first,
        "handshakes": st.handshakes,
        "failed": st.failed,
        "never_started": count(Phase::Waiting),
        "still_handshaking": count(Phase::Handshaking),
        "still_pinging": count(Phase::Pinging),
        "done": count(Phase::Done),
        "peers_all_pings_answered": all_pinged,
        "initiations": st.initiations,
        "retries": st.retries,
        "cookies_accepted": st.cookies_accepted,
        "cookies_rejected": st.cookies_rejected,
        "retried_with_mac2": st.retried_with_mac2,
        "responses_invalid": st.responses_invalid,
        "pings_sent": st.pings_sent,
        "ping_replies": st.ping_replies,
        "data_other": st.data_other,
        "unmatched": st.unmatched,
        "handshake_ms_p50": pct(0.5),
        "handshake_ms_p99": pct(0.99),
        "handshake_ms_max": ms.last().copied(),
        "storm": storm_json(&st, &epoch),
        "net": net.json(),
    }))
}

fn send_ping(
    p: &mut SimPeer,
    dst: Ipv4Addr,
    pkt: &mut [u8; 64],
    out: &mut [u8],
    net: &mut Net,
    st: &mut PeersStats,
) {
    let Some(src) = p.address else { return };
    p.ping_seq = p.ping_seq.wrapping_add(1);
    p.ping_attempts += 1;
    let len = echo_request(src, dst, echo_ident(src), p.ping_seq, pkt);
    if let TunnResult::WriteToNetwork(d) = p.tunn.encapsulate(&pkt[..len], out) {
        net.send(p.sock, d);
        st.pings_sent += 1;
    }
}

/// The ICMP identifier a peer uses: the low 16 bits of its address.
fn echo_ident(src: Ipv4Addr) -> u16 {
    (u32::from(src) & 0xffff) as u16
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP echo request with 16 bytes of payload; returns its length.
fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, seq: u16, p: &mut [u8; 64]) -> usize {
    const LEN: usize = 20 + 8 + 16;
    p.fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(LEN as u16).to_be_bytes());
    p[4..6].copy_from_slice(&seq.to_be_bytes());
    p[8] = 64;
    p[9] = 1; // ICMP
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = 8; // echo request
    p[24..26].copy_from_slice(&ident.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    p[28..44].copy_from_slice(b"sitelink-wg-load");
    let c = checksum(&p[20..LEN]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    LEN
}

/// Whether `inner` is the echo reply to our latest ping.
fn is_echo_reply(inner: &[u8], me: Option<Ipv4Addr>, from: Option<Ipv4Addr>, seq: u16) -> bool {
    let (Some(me), Some(from)) = (me, from) else {
        return false;
    };
    if inner.len() < 28 || inner[0] >> 4 != 4 || inner[9] != 1 {
        return false;
    }
    let ihl = usize::from(inner[0] & 0x0f) * 4;
    if inner.len() < ihl + 8 {
        return false;
    }
    let icmp = &inner[ihl..];
    inner[12..16] == from.octets()
        && inner[16..20] == me.octets()
        && icmp[0] == 0
        && icmp[4..6] == echo_ident(me).to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

// ---------------------------------------------------------------------------------------------
// derive-keys

fn derive_keys(a: &DeriveArgs) -> Result<Value> {
    let keys = a.keys.load(None)?;
    let mut out = std::io::stdout().lock();
    for k in &keys {
        let public = PublicKey::from(&k.secret);
        let line = json!({
            "index": k.index,
            "private_key": b64(k.secret.as_bytes()),
            "public_key": b64(public.as_bytes()),
            "address": k.address.map(|a| a.to_string()),
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_verify() {
        let mut p = [0u8; 64];
        let len = echo_request(
            Ipv4Addr::new(10, 200, 0, 1),
            Ipv4Addr::new(192, 168, 10, 10),
            7,
            3,
            &mut p,
        );
        assert_eq!(checksum(&p[..20]), 0);
        assert_eq!(checksum(&p[20..len]), 0);
    }

    #[test]
    fn seeded_keys_are_stable_and_distinct() {
        let a = seeded_secret(1, 0);
        assert_eq!(a.as_bytes(), seeded_secret(1, 0).as_bytes());
        assert_ne!(a.as_bytes(), seeded_secret(1, 1).as_bytes());
        assert_ne!(a.as_bytes(), seeded_secret(2, 0).as_bytes());
    }

    #[test]
    fn mac1_matches_boringtun() {
        // An initiation made by boringtun carries mac1 at bytes 116..132.
        let server = StaticSecret::random_from_rng(OsRng);
        let server_pub = PublicKey::from(&server);
        let mut t = Tunn::new(
            StaticSecret::random_from_rng(OsRng),
            server_pub,
            None,
            None,
            1,
            None,
        );
        let mut out = vec![0u8; 256];
        let TunnResult::WriteToNetwork(init) = t.format_handshake_initiation(&mut out, false)
        else {
            panic!("no initiation");
        };
        assert_eq!(mac1(&server_pub, &init[..116]), init[116..132]);
    }
}

//! The local control socket: how `sitelink-gateway status` asks the running daemon.
//!
//! A unix stream socket under `/run/sitelink/`, in a directory of mode 0700 and with the socket
//! itself mode 0600, so only root can talk to it. One request per connection: the client writes
//! a command word and a newline (`status`), the daemon answers with one JSON document and closes.
//!
//! The default path is derived from the interface name and the config file's canonical path, so
//! two gateways on one host (in two network namespaces, say) never share a socket.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// Where control sockets live.
pub const RUN_DIR: &str = "/run/sitelink";

/// The default control socket for the gateway whose config is `config_path`.
pub fn default_socket_path(config_path: &Path, ifname: &str) -> PathBuf {
    let canonical = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_owned());
    let hash = fnv1a(canonical.as_os_str().as_encoded_bytes());
    Path::new(RUN_DIR).join(format!("{ifname}-{:08x}.sock", hash as u32))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A request from a control client, with the channel for its answer.
#[derive(Debug)]
pub struct Request {
    /// The command word (`status`, …).
    pub command: String,
    /// Where the answer (a JSON document) goes.
    pub reply: oneshot::Sender<String>,
}

/// The listening side, owned by the daemon. Removes its socket file when dropped.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Listens on `path` and forwards every request to `requests`.
    pub fn start(path: &Path, requests: mpsc::Sender<Request>) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        if path.exists() {
            // A socket nobody answers on is left over from a crash; a live one means a second
            // instance.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another gateway is already running with control socket {}\n  fix: stop it first, or give this one another --socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot set permissions of {}", path.display()))?;
        tokio::spawn(accept_loop(listener, requests));
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, requests: mpsc::Sender<Request>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, requests).await {
                debug!(error = %e, "control connection failed");
            }
        });
    }
}

async fn serve(stream: UnixStream, requests: mpsc::Sender<Request>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(4096)).read_line(&mut line).await?;
    let (reply, answer) = oneshot::channel();
    requests
        .send(Request {
            command: line.trim().to_owned(),
            reply,
        })
        .await?;
    let body = answer.await?;
    write.write_all(body.as_bytes()).await?;
    write.shutdown().await?;
    Ok(())
}

/// Sends `command` to the daemon at `path` and returns its answer.
pub async fn request(path: &Path, command: &str) -> Result<String> {
    let mut stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "cannot reach the gateway at {} (is `sitelink-gateway up` running with this config?)",
            path.display()
        )
    })?;
    stream.write_all(format!("{command}\n").as_bytes()).await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

//! What every sitelink binary does around its command: logging to stderr, a single-threaded
//! runtime, SIGINT/SIGTERM as the shutdown signal, `error: …` with exit code 1 on failure, and
//! byte counts for status views.

use std::process::ExitCode;

use anyhow::{Context, Result};

/// Sets up logging (`RUST_LOG`, default `info`; colours only on a terminal), runs `command`, and
/// turns its error into `error: <message with causes>` on stderr and a failing exit code.
pub fn main(command: impl FnOnce() -> Result<()>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match command() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The binary's edge: the one place an error reaches a person.
            #[allow(clippy::print_stderr, reason = "the binary's error report")]
            {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Makes every thread of this process allocate from glibc's main arena (`M_ARENA_MAX` = 1).
/// Call first thing in a daemon, before it starts threads.
///
/// By default glibc gives each new thread an arena of its own, and memory freed in one arena is
/// kept for that arena. The gateway parses its config on the main thread and answers `status`
/// (a multi-megabyte JSON body with 10 000 peers) on the data path thread, so with two arenas
/// the garbage of both stayed resident: 4 511 B per idle peer in `benches/netns-scale.sh`,
/// 3 338 B with one arena (`MALLOC_ARENA_MAX=1`, same build). The data path allocates nothing
/// per packet, so the threads do not contend for the arena's lock on the hot path. Does nothing
/// on other C libraries.
pub fn share_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a tunable of glibc's allocator; it takes plain integers
        // and has no memory-safety preconditions. A return of 0 (not applied) is harmless.
        let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

/// The single-threaded runtime the daemons and their admin commands run on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Resolves on SIGTERM or SIGINT.
///
/// The signals are awaited in a task of their own, and this future waits on a one-shot
/// channel from it: a daemon's event loop polls its shutdown future at every wake-up, and a
/// one-shot receiver costs one atomic load where polling two signal streams costs ~1,800
/// instructions (measured with callgrind: about a tenth of a packet's round trip).
pub async fn shutdown_signal() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = tx.send(());
    });
    // An error means the task is gone: only when the runtime shuts down, i.e. we stop anyway.
    let _ = rx.await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, wait forever; the default action still ends the process.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A byte count for people: `812 B`, `51.90 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

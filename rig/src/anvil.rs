//! Starts Anvil on a free port and stops it when dropped. The binary comes from
//! `ANVIL_BIN`, `.tools/bin/anvil` (scripts/tools.sh installs it there) or `PATH`.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running Anvil.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    /// Its HTTP JSON-RPC URL.
    pub url: String,
}

/// Where the anvil binary is.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ANVIL_BIN") {
        return p.into();
    }
    let local = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.tools/bin/anvil"));
    if local.exists() { local } else { "anvil".into() }
}

impl Anvil {
    /// Starts a chain whose genesis block has time `genesis_time` (Unix seconds).
    pub async fn start(genesis_time: u64) -> anyhow::Result<Self> {
        Self::start_with(genesis_time, &[]).await
    }

    /// Like [`Anvil::start`], with more command-line arguments (a `--gas-limit` among them
    /// replaces the default).
    pub async fn start_with(genesis_time: u64, extra: &[&str]) -> anyhow::Result<Self> {
        let bin = binary();
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", "0", "--timestamp", &genesis_time.to_string()])
            .args(["--order", "fifo"])
            .args(if extra.contains(&"--gas-limit") {
                &[][..]
            } else {
                &["--gas-limit", "100000000"]
            })
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("starting {} (run scripts/tools.sh to install it)", bin.display())
            })?;
        let stdout = child.stdout.take().context("anvil stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("Listening on ") {
                    return Ok(format!("http://{}", addr.trim()));
                }
            }
            anyhow::bail!("anvil exited before listening")
        })
        .await
        .context("anvil did not start within 20 s")??;
        // Keep draining stdout so anvil never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, url })
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

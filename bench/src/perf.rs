//! An optional system-wide `perf record` (cpu-clock sampling, which works where hardware
//! counters are not exposed) around the default backfill, summarised by program (DSO)
//! and by the functions the Postgres server spends its time in.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

/// A running `perf record`.
pub(crate) struct Recording {
    child: Child,
    data: PathBuf,
}

/// Starts sampling every CPU into `data`; None when perf is missing or refuses.
pub(crate) async fn start(data: &Path) -> Option<Recording> {
    let child = Command::new("perf")
        .args(["record", "-a", "-e", "cpu-clock", "-F", "499", "-o"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    // Let it attach before the measured work starts.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    Some(Recording { child, data: data.to_path_buf() })
}

impl Recording {
    /// Stops sampling and returns the summary lines.
    pub(crate) async fn finish(mut self) -> Vec<String> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status().await;
        }
        let _ = self.child.wait().await;
        let mut lines = vec!["share of CPU samples by program (DSO):".to_string()];
        lines.extend(report(&self.data, &["--sort", "dso"], 8).await);
        lines.push("inside the Postgres server, by function:".to_string());
        lines.extend(report(&self.data, &["--sort", "sym", "--dsos", "postgres"], 12).await);
        lines
    }
}

/// The first `top` sample lines of `perf report` with `args`.
async fn report(data: &Path, args: &[&str], top: usize) -> Vec<String> {
    let out = Command::new("perf")
        .args(["report", "--stdio", "--percent-limit", "1", "-i"])
        .arg(data)
        .args(args)
        .output()
        .await;
    let Ok(out) = out else { return vec!["(perf report failed)".into()] };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('%'))
        .take(top)
        .map(|l| format!("  {}", l.trim()))
        .collect()
}

//! A PostgreSQL server of a test's own: `initdb` into a temporary folder and `pg_ctl` on a
//! free port (as the `postgres` user when the tests run as root, as Postgres requires), so
//! that a test can stop and restart the server under the pair without touching the
//! machine's server that every other test uses.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;
use tokio::process::Command;

/// A running private server; stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// URL of its `postgres` database (user postgres, trust auth).
    pub url: String,
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

/// The folder of the installed server's programs (Debian keeps them out of PATH).
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install the PostgreSQL server")?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop().context("no pg_ctl under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Cluster {
    /// Makes and starts a fresh server.
    pub async fn start() -> anyhow::Result<Self> {
        let cluster = Self::unstarted(bin_dir()?).await?;
        let data = cluster.dir.join("data");
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &data.to_string_lossy(),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            )
            .await?;
        cluster.start_again().await?;
        Ok(cluster)
    }

    /// A hot standby of this server: `pg_basebackup -R` (streaming replication, the
    /// primary's WAL streamed while it copies) into a folder of its own, started on a port
    /// of its own. It replays everything the primary commits; read-only.
    pub async fn standby(&self) -> anyhow::Result<Self> {
        let standby = Self::unstarted(self.bin.clone()).await?;
        let data = standby.dir.join("data");
        let primary_port = self.port.to_string();
        standby
            .run(
                "pg_basebackup",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &primary_port,
                    "-U",
                    "postgres",
                    "-D",
                    &data.to_string_lossy(),
                    "-R",
                    "-X",
                    "stream",
                    // A spread checkpoint on an idle primary takes minutes.
                    "--checkpoint=fast",
                    "--no-sync",
                ],
            )
            .await?;
        standby.start_again().await?;
        Ok(standby)
    }

    /// On a standby: stops replaying the primary's WAL (it keeps receiving it), so the
    /// standby lags from now on.
    pub async fn pause_replay(&self) -> anyhow::Result<()> {
        crate::db::connect(&self.url).await?.batch_execute("SELECT pg_wal_replay_pause()").await?;
        Ok(())
    }

    /// On a standby: replays again, catching up with the primary.
    pub async fn resume_replay(&self) -> anyhow::Result<()> {
        crate::db::connect(&self.url).await?.batch_execute("SELECT pg_wal_replay_resume()").await?;
        Ok(())
    }

    /// A free port and an empty folder owned by the server's user, for a new server.
    async fn unstarted(bin: PathBuf) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("holders-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            let status = Command::new("chown").arg("postgres:postgres").arg(&dir).status().await?;
            anyhow::ensure!(status.success(), "chown of {} failed", dir.display());
        }
        Ok(Self { url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), dir, bin, port })
    }

    /// Runs one of the server's programs as the server's owner.
    async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {program}"))?;
        anyhow::ensure!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn ctl_args(&self, action: &'static str, mode: &'static str) -> Vec<String> {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let log = self.dir.join("log").to_string_lossy().into_owned();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut args = vec![action.to_string(), "-D".into(), data, "-w".into()];
        match action {
            "start" | "restart" => args.extend(["-l".into(), log, "-o".into(), options]),
            _ => {}
        }
        if action != "start" {
            args.extend(["-m".into(), mode.into()]);
        }
        args
    }

    async fn ctl(&self, action: &'static str, mode: &'static str) -> anyhow::Result<()> {
        let args = self.ctl_args(action, mode);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("pg_ctl", &args).await
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server is back at once.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.ctl("restart", "fast").await
    }

    /// `pg_ctl stop -m fast`: the server is down until [`Cluster::start_again`].
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.ctl("stop", "fast").await
    }

    /// `pg_ctl start`.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        self.ctl("start", "fast").await
    }

    /// Creates database `name`; its URL.
    pub async fn create_db(&self, name: &str) -> anyhow::Result<String> {
        crate::db::connect(&self.url)
            .await?
            .execute(&format!("CREATE DATABASE {name}"), &[])
            .await?;
        Ok(crate::db::url_with_db(&self.url, name))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let args = self.ctl_args("stop", "immediate");
        let path = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            std::process::Command::new(path)
        };
        let _ = cmd.args(&args).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! API keys: the keys file (`<name> <sha256 hex of the key>` per line) and the ring of
//! names it grants, re-read when the file changes so that a key is issued or revoked
//! without a restart. The file never holds a key, and no key is ever logged: a presented
//! key is hashed at once and only its name travels on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::hex;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The names the keys file grants, by the SHA-256 of their key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyRing {
    by_hash: HashMap<[u8; 32], String>,
}

impl KeyRing {
    /// Parses a keys file's text. The error names the line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = || format!("line {}", i + 1);
            let mut words = line.split_whitespace();
            let (Some(name), Some(digest), None) = (words.next(), words.next(), words.next())
            else {
                return Err(format!("{}: expected `<name> <sha256 hex of the key>`", at()));
            };
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
                return Err(format!(
                    "{}: the name {name:?} may hold only letters, digits and - _ . @",
                    at()
                ));
            }
            let hash: [u8; 32] = hex::decode(digest)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    format!(
                        "{}: the second word is not 64 hex digits (the SHA-256 of the key, as `sha256sum` prints it)",
                        at()
                    )
                })?;
            if let Some(other) = by_hash.insert(hash, name.to_string()) {
                return Err(format!("{}: {name} has the same key as {other}", at()));
            }
        }
        Ok(Self { by_hash })
    }

    /// The name a presented key belongs to, if any.
    pub fn name_of(&self, key: &str) -> Option<&str> {
        self.name_by_digest(&digest(key))
    }

    /// The name of the key whose SHA-256 is `digest`, if the ring holds it.
    pub fn name_by_digest(&self, digest: &[u8; 32]) -> Option<&str> {
        self.by_hash.get(digest).map(String::as_str)
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether the ring holds no key (every call is then refused).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The SHA-256 of a key, as the keys file names it.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The keys file and the ring it gave last; shared by every request. Long calls
/// (streams) [`KeysFile::subscribe`] to hear of each change, so that a revoked key ends
/// them.
#[derive(Debug, Clone)]
pub struct KeysFile {
    path: PathBuf,
    ring: Arc<watch::Sender<Arc<KeyRing>>>,
}

impl KeysFile {
    /// Reads and parses `path`. The error names the file and the line at fault.
    pub fn load(path: &Path) -> Result<Self, String> {
        let ring = read(path, true)?;
        Ok(Self { path: path.to_path_buf(), ring: Arc::new(watch::Sender::new(Arc::new(ring))) })
    }

    /// The ring as of the last read.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.borrow().clone()
    }

    /// Changes each time the ring does.
    pub fn subscribe(&self) -> watch::Receiver<Arc<KeyRing>> {
        self.ring.subscribe()
    }

    /// Re-reads the file every `every` until `shutdown`, taking a changed ring. A file that
    /// cannot be read or parsed keeps the last good ring, and so does a file with nothing
    /// in it at all (an editor or a copy caught mid-write; a file that means "no key"
    /// says so with a comment): a half-written edit must not lock every caller out, nor
    /// let anyone in. Each distinct problem is logged once, not at every look.
    pub async fn watch(self, every: Duration, shutdown: CancellationToken) {
        let mut last_problem: Option<String> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            // A blank file while keys are granted is a write in progress, not "no key".
            let read = read(&self.path, self.ring().is_empty());
            match read {
                Ok(ring) => {
                    last_problem = None;
                    if ring != *self.ring() {
                        info!(keys = ring.len(), "the keys file changed; now granting its keys");
                        self.ring.send_replace(Arc::new(ring));
                    }
                }
                Err(e) if last_problem.as_ref() != Some(&e) => {
                    warn!(error = %e, "keeping the last good keys");
                    last_problem = Some(e);
                }
                Err(_) => {}
            }
        }
    }
}

/// The ring in the file at `path`; a file with nothing in it at all is refused unless
/// `blank_ok`.
fn read(path: &Path, blank_ok: bool) -> Result<KeyRing, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if text.trim().is_empty() && !blank_ok {
        return Err(format!(
            "{}: empty (being written?); a file that revokes every key holds a comment",
            path.display()
        ));
    }
    KeyRing::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, key: &str) -> String {
        format!("{name} {}\n", hex::encode(digest(key)))
    }

    #[test]
    fn grants_the_names_of_the_keys_it_lists() {
        let text = format!("# team keys\n\n{}{}  # trailing comment", line("alpha", "k1"), {
            line("beta", "k2").trim_end().to_string()
        });
        let ring = KeyRing::parse(&text).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.name_of("k1"), Some("alpha"));
        assert_eq!(ring.name_of("k2"), Some("beta"));
        assert_eq!(ring.name_of("k3"), None);
        // The hash, not the key, is what the file holds.
        assert_eq!(ring.name_of(&hex::encode(digest("k1"))), None);
    }

    #[test]
    fn a_bad_line_is_named() {
        for (text, says) in [
            ("alpha\n", "line 1"),
            ("# c\nalpha nothex\n", "line 2: the second word is not 64 hex digits"),
            ("al pha 00\n", "line 1: expected"),
            ("al/pha 0000000000000000000000000000000000000000000000000000000000000000", "name"),
        ] {
            let e = KeyRing::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        let twice = format!("{}{}", line("a", "same"), line("b", "same"));
        assert!(KeyRing::parse(&twice).unwrap_err().contains("line 2: b has the same key as a"));
    }
}

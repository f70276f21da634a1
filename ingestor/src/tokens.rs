//! Which tokens an ingestor indexes: those of the flags (`--token`, TOKEN_ADDRESSES,
//! TOKEN_ADDRESS) and of the tokens file (`--tokens-file`), which is watched and read
//! again when it changes, also when a new file is renamed over it (a Kubernetes ConfigMap
//! update swaps a symlink): [`watch`] publishes the wanted set on a watch channel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy_primitives::Address;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// One token wanted: its address and, from the tokens file, the block to start at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// The contract.
    pub address: Address,
    /// Its own start block, which overrides `--from`.
    pub start: Option<u64>,
}

/// How often the tokens file is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Parses a tokens file: one token a line, `<address> [start block]`; `#` starts a
/// comment; blank lines are skipped. A token named twice is refused (which start would
/// hold?). The error names the line and what to fix.
pub fn parse(text: &str) -> Result<Vec<Wanted>, String> {
    let mut out: Vec<Wanted> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let address = words.next().unwrap_or_default();
        let address = bootstrap::parse_address(address)
            .map_err(|e| format!("line {n}: {}", bootstrap::one_line(&e.to_string())))?;
        let start = match words.next() {
            None => None,
            Some(w) => Some(w.parse::<u64>().map_err(|_| {
                format!(
                    "line {n}: the start block {:?} is not a block number",
                    bootstrap::one_line(w)
                )
            })?),
        };
        if let Some(extra) = words.next() {
            return Err(format!(
                "line {n}: unexpected {:?} after the start block (a line is `<address> [start block]`)",
                bootstrap::one_line(extra)
            ));
        }
        if out.iter().any(|w| w.address == address) {
            return Err(format!("line {n}: token {address} is named twice"));
        }
        out.push(Wanted { address, start });
    }
    Ok(out)
}

/// Reads and parses the tokens file; the error names the file.
pub fn read(path: &Path) -> Result<Vec<Wanted>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--tokens-file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("--tokens-file {}: {e}", path.display()))
}

/// The flags' tokens and the file's, each once (the file's start wins).
pub fn merge(flags: &[Address], file: &[Wanted]) -> Vec<Wanted> {
    let mut out: Vec<Wanted> = file.to_vec();
    for a in flags {
        if !out.iter().any(|w| w.address == *a) {
            out.push(Wanted { address: *a, start: None });
        }
    }
    out
}

/// What tells whether the file changed: its target's identity, size, time and bytes.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
    text: String,
}

fn look(path: &Path) -> std::io::Result<Seen> {
    // Follows symlinks: a ConfigMap's file is a link whose target is replaced.
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Seen {
        inode,
        len: meta.len(),
        modified: meta.modified().ok(),
        text: std::fs::read_to_string(path)?,
    })
}

/// The wanted set, now and as the tokens file changes. With no file it never changes.
/// A file that becomes unreadable or wrong is reported and the set stays as it was.
pub fn watch(
    flags: Vec<Address>,
    file: Option<PathBuf>,
    stop: CancellationToken,
) -> Result<watch::Receiver<Vec<Wanted>>, String> {
    let Some(path) = file else {
        let (_tx, rx) = watch::channel(merge(&flags, &[]));
        return Ok(rx);
    };
    let first = read(&path)?;
    let (tx, rx) = watch::channel(merge(&flags, &first));
    let mut last = look(&path).ok();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
            let seen = match look(&path) {
                Ok(s) => s,
                Err(e) => {
                    // Between a delete and the rename of the new file, or gone: the
                    // set stays.
                    if last.take().is_some() {
                        warn!(file = %path.display(), error = %e, "cannot read the tokens file; the token set stays as it is");
                    }
                    continue;
                }
            };
            if last.as_ref().is_some_and(|l| l.text == seen.text) {
                last = Some(seen);
                continue;
            }
            match parse(&seen.text) {
                Ok(file) => {
                    let wanted = merge(&flags, &file);
                    info!(file = %path.display(), tokens = wanted.len(), "the tokens file changed");
                    if tx.send(wanted).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "the tokens file is wrong; the token set stays as it is")
                }
            }
            last = Some(seen);
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0x00000000000000000000000000000000000000aa";
    const B: &str = "0x00000000000000000000000000000000000000bb";

    #[test]
    fn a_file_lists_addresses_with_optional_starts_and_comments() {
        let got = parse(&format!("# tokens\n{A} 17  # from 17\n\n  {B}\n")).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].start, Some(17));
        assert_eq!(got[1], Wanted { address: B.parse().unwrap(), start: None });
    }

    #[test]
    fn each_wrong_line_is_named() {
        assert!(parse("0xnope\n").unwrap_err().starts_with("line 1:"));
        assert!(parse(&format!("\n{A} soon")).unwrap_err().contains("line 2: the start block"));
        assert!(parse(&format!("{A} 1 2")).unwrap_err().contains("unexpected"));
        assert!(parse(&format!("{A}\n{A} 5")).unwrap_err().contains("named twice"));
        let control = parse(&format!("{A} 1\u{7}")).unwrap_err();
        assert!(!control.contains('\u{7}'), "no control character echoed: {control:?}");
    }

    /// A ConfigMap volume: the file is a link through `..data`, a link to a folder that
    /// the kubelet replaces by swapping the link.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_configmap_update_swapping_the_data_link_is_seen() {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("tokens-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("v1")).unwrap();
        std::fs::create_dir_all(dir.join("v2")).unwrap();
        std::fs::write(dir.join("v1/tokens.txt"), format!("{A}\n")).unwrap();
        std::fs::write(dir.join("v2/tokens.txt"), format!("{A}\n{B} 9\n")).unwrap();
        symlink("v1", dir.join("..data")).unwrap();
        symlink("..data/tokens.txt", dir.join("tokens.txt")).unwrap();
        let stop = CancellationToken::new();
        let mut rx = watch(vec![], Some(dir.join("tokens.txt")), stop.clone()).unwrap();
        assert_eq!(rx.borrow_and_update().len(), 1);
        // The kubelet's swap: a new link renamed over the old one.
        symlink("v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
        let now = rx.borrow().clone();
        assert_eq!(now.len(), 2);
        assert_eq!(now[1].start, Some(9));
        stop.cancel();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flags_add_to_the_file_which_keeps_its_starts() {
        let a: Address = A.parse().unwrap();
        let b: Address = B.parse().unwrap();
        let got = merge(&[a, b], &[Wanted { address: a, start: Some(3) }]);
        assert_eq!(
            got,
            vec![Wanted { address: a, start: Some(3) }, Wanted { address: b, start: None }]
        );
    }
}

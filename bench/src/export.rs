//! ExportHolders on the filled store: every holder at the checkpoint and at a block 15
//! days back, timed from the request to the last chunk, with the rate in holders/s (the
//! issue's floor is 100,000/s at 10M holders).

use std::time::{Duration, Instant};

use futures::StreamExt;
use proto::pb::ExportHoldersRequest;

use crate::chain::BLOCK_SECONDS;
use crate::fill::{HISTORY_BLOCKS, TOKEN};
use crate::load::Served;

/// One export, timed.
#[derive(Debug, Clone)]
pub(crate) struct ExportFigures {
    /// Which moment.
    pub(crate) name: String,
    /// Holders received.
    pub(crate) holders: u64,
    /// Chunks received.
    pub(crate) chunks: u64,
    /// From the request to the last chunk.
    pub(crate) elapsed: Duration,
}

impl ExportFigures {
    /// Holders per second.
    pub(crate) fn rate(&self) -> f64 {
        self.holders as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Exports every holder at the checkpoint and 15 days back; each must hold `holders`
/// rows or fewer (a past moment has fewer holders than the end).
pub(crate) async fn measure_exports(
    served: &Served,
    holders: u64,
) -> anyhow::Result<Vec<ExportFigures>> {
    let day = 86_400 / BLOCK_SECONDS;
    let mut out = Vec::new();
    for (name, at_block) in [
        ("ExportHolders at the checkpoint", None),
        ("ExportHolders at a block 15 days back", Some(HISTORY_BLOCKS - 15 * day)),
    ] {
        let mut client = served.client.clone();
        let started = Instant::now();
        let mut stream = client
            .export_holders(ExportHoldersRequest {
                token: TOKEN.to_string(),
                at_block,
                ..Default::default()
            })
            .await?
            .into_inner();
        let (mut rows, mut chunks, mut last_rank) = (0u64, 0u64, 0u64);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            chunks += 1;
            rows += chunk.holders.len() as u64;
            if let Some(h) = chunk.holders.last() {
                last_rank = h.rank;
            }
        }
        let elapsed = started.elapsed();
        anyhow::ensure!(rows > 0 && rows <= holders && last_rank == rows, "{name}: {rows} rows");
        out.push(ExportFigures { name: name.to_string(), holders: rows, chunks, elapsed });
    }
    Ok(out)
}

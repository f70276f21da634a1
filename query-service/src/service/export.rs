//! ExportHolders: every holder of one moment, in ranking order, streamed in chunks from
//! one snapshot and one statement (the whole ranking, bound as a portal). The snapshot's
//! transaction lives in a task of its own (on the service's tracker, ended by shutdown)
//! for the whole export; the channel to the caller holds two chunks, so memory stays bounded whatever
//! the holder count, and a caller that goes away ends the task (and the transaction) at
//! its next chunk.

use proto::pb::{ExportHoldersRequest, HoldersChunk};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tracing::{Instrument, info_span, warn};

use super::holders::{at_least, moment, response};
use super::{Call, Holders, HoldersStream};
use crate::error::QueryError;
use crate::input;
use crate::lane::Cost;
use crate::store::{self, HolderRow};

/// Holders per chunk.
pub(super) const CHUNK: usize = 10_000;

/// How long one fetch of an export may take. The first fetch ranks every holder of the
/// moment in one statement (seconds at millions of holders), longer than an answer's
/// statement timeout allows.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Holders {
    pub(super) async fn export(
        &self,
        call: &Call,
        req: ExportHoldersRequest,
    ) -> Result<HoldersStream, QueryError> {
        let wanted = input::wanted(&req.token, req.chain_id)?;
        let at = input::at(req.finality, req.at_block, req.at_time.as_ref())?;
        let min = input::min_balance(&req.min_balance)?;
        self.reach(wanted, req.min_block).await?;
        let (chunks, rx) = mpsc::channel::<Result<HoldersChunk, Status>>(2);
        let (ready, started) = oneshot::channel::<Result<(), QueryError>>();
        let lanes = self.lanes.clone();
        let budget = call.budget;
        let span = info_span!("export", token = ?wanted);
        let shutdown = self.shutdown.clone();
        // On the service's tracker: shutdown waits for it, and ends it.
        self.tasks.spawn(
            async move {
                let mut ready = Some(ready);
                let work = async {
                    // The lease (and its place in the expensive lane) lasts the export.
                    let mut lease = lanes.lease(Cost::Expensive).await?;
                    let tx = store::snapshot(&mut lease.client, budget).await?;
                    let token = store::tokens::token(&tx, wanted).await?;
                    let moment = moment(&tx, &token, at).await?;
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                    let mut sent = 0u64;
                    let chunk_of = |rows: Vec<HolderRow>, sent: &mut u64| {
                        let answer = response(&token, &moment, rows, Some(*sent), None, 0);
                        *sent += answer.holders.len() as u64;
                        HoldersChunk {
                            holders: answer.holders,
                            as_of_block: answer.as_of_block,
                            as_of_time: answer.as_of_time,
                            total_supply: answer.total_supply,
                            token: answer.token,
                            decimals: answer.decimals,
                            symbol: answer.symbol,
                            chain_id: answer.chain_id,
                        }
                    };
                    // A caller's deadline still bounds the fetches.
                    let fetch_ms =
                        budget.map_or(FETCH_TIMEOUT, |b| b.min(FETCH_TIMEOUT)).as_millis();
                    tx.batch_execute(&format!("SET LOCAL statement_timeout = {fetch_ms}")).await?;
                    // One statement for the whole ranking, fetched a chunk at a time.
                    let portal = store::export::portal(&tx, &token, &moment).await?;
                    loop {
                        let rows = tx.query_portal(&portal, CHUNK as i32).await?;
                        let mut rows: Vec<HolderRow> =
                            rows.iter().map(store::holders::holder_row).collect();
                        // The filter cuts the ranking's tail: a chunk it cut is the last.
                        let fetched = rows.len();
                        let full = !at_least(&mut rows, min) && fetched == CHUNK;
                        if (!rows.is_empty() || sent == 0)
                            && chunks.send(Ok(chunk_of(rows, &mut sent))).await.is_err()
                        {
                            return Ok(());
                        }
                        if !full {
                            break;
                        }
                    }
                    tx.commit().await?;
                    Ok::<_, QueryError>(())
                };
                // At shutdown the export's transaction is dropped (rolled back) and the
                // caller told to come back.
                let result = tokio::select! {
                    r = work => r,
                    () = shutdown.cancelled() => Err(QueryError::ShuttingDown),
                };
                if let Err(e) = result {
                    match ready.take() {
                        Some(r) => {
                            let _ = r.send(Err(e));
                        }
                        None => {
                            warn!(error = %e, "an export ended early");
                            // A caller that reads nothing must not hold the shutdown up.
                            let last = chunks.send(Err(e.into()));
                            let _ =
                                tokio::time::timeout(std::time::Duration::from_secs(1), last).await;
                        }
                    }
                }
            }
            .instrument(span),
        );
        match started.await {
            Ok(Ok(())) => Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(QueryError::Unavailable("the export ended before it began".into())),
        }
    }
}

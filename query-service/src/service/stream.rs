//! StreamTransfers: where a stream starts (now, a block, or after a cursor), then the
//! live feed does the rest. Each caller may hold at most `--max-streams-per-caller`
//! ([`StreamSlots`]), so that one team cannot take every place of `--max-streams`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proto::pb::StreamTransfersRequest;

use super::{Call, Holders, TransferStream};
use crate::error::QueryError;
use crate::feed::{Revocation, Start, Subscription};
use crate::input::{self, Cursor};
use crate::lane::Cost;
use crate::store;

impl Holders {
    pub(super) async fn stream(
        &self,
        call: &Call,
        req: StreamTransfersRequest,
    ) -> Result<TransferStream, QueryError> {
        let wanted = input::wanted(&req.token, req.chain_id)?;
        let listed = input::tokens(&req.tokens)?;
        let addresses = input::addresses(&req.addresses)?;
        let slot = self.stream_slots.take(call.caller.name())?;
        if !req.cursor.is_empty() && req.from_block.is_some() {
            return Err(QueryError::invalid(
                "cursor",
                "set either cursor (to resume) or from_block (to start at a block), not both",
            ));
        }
        let (tokens, start, set) = {
            let mut lease = self.lease(Cost::Stream).await?;
            let tx = store::snapshot(&mut lease.client, call.budget).await?;
            let tokens = if listed.is_empty() {
                vec![store::tokens::token(&tx, wanted).await?]
            } else {
                let mut all = listed.clone();
                if let Some(t) = wanted.token.filter(|t| !all.contains(t)) {
                    all.push(t);
                }
                let mut tokens = Vec::with_capacity(all.len());
                for token in all {
                    let one =
                        store::tokens::Wanted { token: Some(token), chain_id: wanted.chain_id };
                    tokens.push(store::tokens::token(&tx, one).await?);
                }
                let chains: std::collections::BTreeSet<i64> =
                    tokens.iter().map(|t| t.chain_id).collect();
                if chains.len() > 1 {
                    let ids: Vec<String> = chains.iter().map(i64::to_string).collect();
                    return Err(QueryError::invalid(
                        "tokens",
                        format!(
                            "the tokens are on chains {}; one stream is of one chain: set chain_id",
                            ids.join(", ")
                        ),
                    ));
                }
                tokens.sort_by_key(|t| t.address);
                tokens
            };
            let chain_id = tokens[0].chain_id;
            let sorted: Vec<alloy_primitives::Address> = tokens.iter().map(|t| t.address).collect();
            let set = (!listed.is_empty()).then(|| input::SetCursor::digest_of(chain_id, &sorted));
            let start = match (req.cursor.as_str(), req.from_block) {
                ("", None) => Start::Now,
                ("", Some(block)) => Start::Block(i64::try_from(block).map_err(|_| {
                    QueryError::invalid("from_block", format!("{block} is not a block number"))
                })?),
                (cursor, _) => {
                    let seal = self.sealer.get(&*tx).await?;
                    let seqs = match set {
                        None => vec![Cursor::decode(cursor, chain_id, sorted[0], seal)?.seq],
                        Some(_) => input::SetCursor::decode(cursor, chain_id, &sorted, seal)?.seqs,
                    };
                    // A cursor ahead of the store (another store's, or one rolled back by
                    // a restore) would silently skip everything up to it.
                    for (token, seq) in tokens.iter().zip(&seqs) {
                        let newest = store::events::last_seq(&*tx, token.id).await?;
                        if *seq > newest {
                            return Err(QueryError::invalid(
                                "cursor",
                                format!(
                                    "it points after event {seq}, but the newest event of {} in this store is {newest}: it was issued by another store; resume with from_block instead",
                                    token.address
                                ),
                            ));
                        }
                    }
                    Start::After(seqs)
                }
            };
            tx.commit().await?;
            (tokens, start, set)
        };
        let revocation = match (&self.keys, call.caller.key()) {
            (Some(keys), Some(key)) => Some(Revocation { ring: keys.subscribe(), key }),
            _ => None,
        };
        let subscription = Subscription {
            tokens: tokens
                .iter()
                .map(|t| crate::feed::Streamed {
                    id: t.id,
                    address: t.address,
                    chain_id: t.chain_id,
                })
                .collect(),
            start,
            addresses,
            finalized_only: req.finalized_only,
            revocation,
            set,
        };
        let pool = self.lanes.stream_pool().clone();
        let rx = self.feed.subscribe(pool, subscription, self.shutdown.clone()).await?;
        // The caller's place is held for as long as tonic holds the stream.
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Box::pin(futures::StreamExt::map(stream, move |event| {
            let _held = &slot;
            event
        })))
    }
}

/// How many streams each caller holds, against the per-caller cap.
#[derive(Debug)]
pub(super) struct StreamSlots {
    held: Arc<Mutex<HashMap<String, usize>>>,
    most: usize,
}

impl StreamSlots {
    /// At most `most` streams per caller.
    pub(super) fn new(most: usize) -> Self {
        Self { held: Arc::default(), most }
    }

    /// A place for one more stream of `caller`, or RESOURCE_EXHAUSTED (with a retry hint).
    fn take(&self, caller: &str) -> Result<Slot, QueryError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(caller.to_string()).or_default();
        if *n >= self.most {
            return Err(QueryError::Busy(
                format!(
                    "{caller} holds {n} streams, the most one caller may; close one or retry later"
                ),
                std::time::Duration::from_secs(1),
            ));
        }
        *n += 1;
        Ok(Slot { held: self.held.clone(), caller: caller.to_string() })
    }
}

/// One caller's place, given back when dropped.
#[derive(Debug)]
struct Slot {
    held: Arc<Mutex<HashMap<String, usize>>>,
    caller: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.caller);
            }
        }
    }
}

-- Applies a staged batch in one statement: inserts the transfers not stored yet, each with
-- both sides' balances right after it, moves balances by the inserted ones only, keeps
-- block hashes and rejected logs, and advances the checkpoint. Data-modifying CTEs all
-- see the snapshot taken before the statement, so `prev` reads balances as they were
-- before `upsert` changes them. Sequence numbers come staged.
-- $1 token, $2 zero address, $3 checkpoint block, $4 its hash, $5 its time,
-- $6 and $7 block numbers and log indexes of rejected logs,
-- $8-$10 numbers, hashes and times of the blocks to remember (the checkpoint among them).
-- Returns: inserted, balance rows touched, blocks stored, token rows updated.
WITH new AS (
    SELECT * FROM staging_transfers s
    -- Only rows at or below the newest stored block can meet a stored row (a re-read),
    -- so only those are probed: cheaper than ON CONFLICT's speculative insertion of
    -- every row. The newest stored block is one backward step of the primary key.
    WHERE s.block_number > (SELECT coalesce(max(t.block_number), -1) FROM transfers t
                            WHERE t.token = $1)
       OR NOT EXISTS (SELECT 1 FROM transfers t WHERE t.token = $1
                      AND t.block_number = s.block_number AND t.log_index = s.log_index)
), legs AS (
    SELECT seq, to_address AS address, value AS delta, block_number, log_index FROM new
    UNION ALL
    SELECT seq, from_address, -value, block_number, log_index FROM new
), start AS (
    -- Balances before the batch; the zero address's is minus the supply.
    SELECT a.address, coalesce(b.balance,
               CASE WHEN a.address = $2 THEN -(SELECT total_supply FROM tokens WHERE address = $1)
                    ELSE 0 END) AS balance
    FROM (SELECT DISTINCT address FROM legs) a
    LEFT JOIN balances b ON b.token = $1 AND b.address = a.address
), after AS (
    -- Each address's balance right after each of its transfers (both legs of a transfer
    -- to oneself are peers, hence DISTINCT).
    SELECT DISTINCT ON (seq, address) seq, address, balance FROM (
        SELECT l.seq, l.address,
               s.balance + sum(l.delta) OVER (PARTITION BY l.address ORDER BY l.block_number, l.log_index) AS balance
        FROM legs l JOIN start s USING (address)) r
), ins AS (
    INSERT INTO transfers (token, block_number, log_index, block_hash, block_time, tx_hash,
                           from_address, to_address, value, seq, from_balance, to_balance)
    SELECT $1, n.block_number, n.log_index, n.block_hash, n.block_time, n.tx_hash, n.from_address,
           n.to_address, n.value, n.seq, f.balance, t.balance
    FROM new n
    JOIN after f ON f.seq = n.seq AND f.address = n.from_address
    JOIN after t ON t.seq = n.seq AND t.address = n.to_address
    RETURNING block_number, log_index, block_hash, block_time, from_address, to_address, value, seq,
              from_balance, to_balance
), moves AS (
    SELECT to_address AS address, value AS delta, block_number FROM ins WHERE to_address <> $2
    UNION ALL
    SELECT from_address, -value, block_number FROM ins WHERE from_address <> $2
), agg AS (
    SELECT address, sum(delta) AS delta, max(block_number) AS last_block FROM moves GROUP BY address
), prev AS (
    SELECT a.delta, coalesce(b.balance, 0) AS old
    FROM agg a LEFT JOIN balances b ON b.token = $1 AND b.address = a.address
), upsert AS (
    INSERT INTO balances (token, address, balance, last_transfer_block)
    SELECT $1, address, delta, last_block FROM agg
    ON CONFLICT (token, address) DO UPDATE
       SET balance = balances.balance + excluded.balance,
           last_transfer_block = greatest(balances.last_transfer_block, excluded.last_transfer_block)
    RETURNING 1
), counted AS (
    -- The holder count after each block of the inserted transfers: the count before the
    -- batch plus each transfer's move (a side from nothing to something +1, back -1; the
    -- zero address and a transfer to oneself move nothing), as `holders_moved` in
    -- balances.rs computes it.
    SELECT block_number, block_hash, block_time,
           (SELECT holder_count FROM tokens WHERE address = $1)
           + sum(sum(CASE WHEN from_address = to_address THEN 0 ELSE
                     CASE WHEN to_address = $2 THEN 0
                          ELSE (to_balance > 0)::int - (to_balance - value > 0)::int END
                   + CASE WHEN from_address = $2 THEN 0
                          ELSE (from_balance > 0)::int - (from_balance + value > 0)::int END
                 END)) OVER (ORDER BY block_number) AS holders
    FROM ins GROUP BY block_number, block_hash, block_time
), blk AS (
    -- A block without inserted transfers holds the count of the newest block at or
    -- below it: of this batch, else as stored.
    INSERT INTO blocks (token, number, hash, time, holders)
    SELECT $1::bytea, block_number, block_hash, block_time, holders FROM counted
    UNION
    SELECT $1, n, h, t, coalesce(
        (SELECT c.holders FROM counted c WHERE c.block_number <= n ORDER BY c.block_number DESC LIMIT 1),
        (SELECT k.holders FROM blocks k WHERE k.token = $1 AND k.number <= n ORDER BY k.number DESC LIMIT 1),
        0)
    FROM unnest($8::bigint[], $9::bytea[], $10::bigint[]) AS b(n, h, t)
    ON CONFLICT DO NOTHING
    RETURNING 1
), rej AS (
    INSERT INTO rejected_logs (token, block_number, log_index)
    SELECT $1, b, i FROM unnest($6::bigint[], $7::integer[]) AS r(b, i)
    ON CONFLICT DO NOTHING
    RETURNING 1
), tok AS (
    UPDATE tokens SET
        total_supply = total_supply
            + (SELECT coalesce(sum(value), 0) FROM ins WHERE from_address = $2)
            - (SELECT coalesce(sum(value), 0) FROM ins WHERE to_address = $2),
        transfer_count = transfer_count + (SELECT count(*) FROM ins),
        holder_count = holder_count
            + (SELECT count(*) FILTER (WHERE old + delta > 0) - count(*) FILTER (WHERE old > 0) FROM prev),
        rejected_logs = rejected_logs + (SELECT count(*) FROM rej),
        last_seq = coalesce((SELECT max(seq) FROM ins), last_seq),
        indexed_hash = CASE WHEN $3 >= indexed_block THEN $4 ELSE indexed_hash END,
        indexed_time = CASE WHEN $3 >= indexed_block THEN $5 ELSE indexed_time END,
        indexed_block = greatest(indexed_block, $3),
        updated_at = now()
    WHERE address = $1
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM upsert) AS balances_touched,
       (SELECT count(*) FROM blk) AS blocks, (SELECT count(*) FROM tok) AS tokens

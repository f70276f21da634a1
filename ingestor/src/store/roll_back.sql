-- Reverses every transfer above the fork block in one statement: the transfers move to
-- removed_transfers with new sequence numbers (newest first), balances and the supply
-- lose their effect, the blocks, rankings and rejected logs above the fork go, and the checkpoint
-- moves back to the fork.
-- $1 token, $2 zero address, $3 fork block, $4 its hash, $5 its time,
-- $6 the token's last sequence number, $7 its chain.
-- Returns: removed transfers, balance rows changed, blocks removed, fork rows, token rows.
WITH gone AS (
    DELETE FROM transfers WHERE token = $1 AND chain_id = $7 AND block_number > $3
    RETURNING seq, block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value
), moved AS (
    INSERT INTO removed_transfers (token, removed_seq, seq, block_number, log_index, block_hash, block_time,
                                   tx_hash, from_address, to_address, value)
    SELECT $1, $6 + row_number() OVER (ORDER BY block_number DESC, log_index DESC), seq, block_number, log_index,
           block_hash, block_time, tx_hash, from_address, to_address, value
    FROM gone
    RETURNING removed_seq
), moves AS (
    SELECT to_address AS address, -value AS delta FROM gone WHERE to_address <> $2
    UNION ALL
    SELECT from_address, value FROM gone WHERE from_address <> $2
), agg AS (
    SELECT address, sum(delta) AS delta FROM moves GROUP BY address
), prev AS (
    SELECT a.delta, b.balance AS old FROM agg a JOIN balances b ON b.token = $1 AND b.address = a.address
), upd AS (
    UPDATE balances b SET
        balance = b.balance + a.delta,
        -- The statement sees the rows it deletes, hence the explicit bound.
        last_transfer_block = greatest(
            coalesce((SELECT max(t.block_number) FROM transfers t
                      WHERE t.token = $1 AND t.from_address = b.address AND t.block_number <= $3), 0),
            coalesce((SELECT max(t.block_number) FROM transfers t
                      WHERE t.token = $1 AND t.to_address = b.address AND t.block_number <= $3), 0))
    FROM agg a
    WHERE b.token = $1 AND b.address = a.address
    RETURNING 1
), blk AS (
    DELETE FROM blocks WHERE token = $1 AND number > $3 RETURNING 1
), ranked AS (
    DELETE FROM rankings WHERE token = $1 AND block > $3 RETURNING 1
), ranked_rows AS (
    DELETE FROM ranking_rows WHERE token = $1 AND block > $3 RETURNING 1
), rej AS (
    DELETE FROM rejected_logs WHERE token = $1 AND block_number > $3 RETURNING 1
), fork AS (
    -- The fork block holds the holder count of the newest kept block at or below it.
    INSERT INTO blocks (token, number, hash, time, holders)
    VALUES ($1, $3, $4, $5, coalesce((SELECT holders FROM blocks WHERE token = $1 AND number <= $3
                                      ORDER BY number DESC LIMIT 1), 0))
    ON CONFLICT DO NOTHING RETURNING 1
), tok AS (
    UPDATE tokens SET
        total_supply = total_supply
            - (SELECT coalesce(sum(value), 0) FROM gone WHERE from_address = $2)
            + (SELECT coalesce(sum(value), 0) FROM gone WHERE to_address = $2),
        transfer_count = transfer_count - (SELECT count(*) FROM gone),
        holder_count = holder_count
            + (SELECT count(*) FILTER (WHERE old + delta > 0) - count(*) FILTER (WHERE old > 0) FROM prev),
        rejected_logs = rejected_logs - (SELECT count(*) FROM rej),
        last_seq = coalesce((SELECT max(removed_seq) FROM moved), last_seq),
        indexed_block = $3,
        indexed_hash = $4,
        indexed_time = $5,
        updated_at = now()
    WHERE id = $1
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS removed, (SELECT count(*) FROM upd) AS balances_touched,
       (SELECT count(*) FROM blk) AS blocks, (SELECT count(*) FROM fork) AS forks, (SELECT count(*) FROM tok) AS tokens

-- The holder count after each stored block, so that an answer at a past block says how
-- many held the token then with one step back in the blocks' primary key, not a pass
-- over the history. The ingestor writes it with each block row, in the batch's
-- transaction (a rollback deletes the rows above the fork with it), from the balances
-- it computes anyway: a transfer moves the count by each side that goes from nothing to
-- something (+1) or back (-1); the zero address (mints, burns) and a transfer to oneself
-- move nothing. A block without transfers (a verified header, a checkpoint) holds the
-- count of the newest transfer block at or below it.
ALTER TABLE blocks ADD COLUMN holders bigint;

-- What is stored already, from the balances each transfer carries.
WITH moved AS (
    SELECT token, block_number,
           sum(CASE WHEN from_address = to_address THEN 0 ELSE
                   CASE WHEN to_address = '\x0000000000000000000000000000000000000000'::bytea THEN 0
                        ELSE (to_balance > 0)::int - (to_balance - value > 0)::int END
                 + CASE WHEN from_address = '\x0000000000000000000000000000000000000000'::bytea THEN 0
                        ELSE (from_balance > 0)::int - (from_balance + value > 0)::int END
               END) AS delta
    FROM transfers GROUP BY token, block_number
)
-- Every block with transfers has its row; the running sum over all rows in block order
-- gives the rows without transfers the count below them.
UPDATE blocks b SET holders = r.holders
FROM (
    SELECT k.token, k.number,
           coalesce(sum(m.delta) OVER (PARTITION BY k.token ORDER BY k.number), 0) AS holders
    FROM blocks k LEFT JOIN moved m ON m.token = k.token AND m.block_number = k.number
) r
WHERE b.token = r.token AND b.number = r.number;

ALTER TABLE blocks ALTER COLUMN holders SET NOT NULL;

-- Finality from the node, and balances at any point in time.
--
-- The ingestor records the chain's safe and finalized blocks (the node's tags, or a depth
-- below the head where the node has none); -1 until it first does. A transfer is final
-- when its block is at or below both the finalized block and the checkpoint.
ALTER TABLE tokens ADD COLUMN safe_block bigint NOT NULL DEFAULT -1;
ALTER TABLE tokens ADD COLUMN finalized_block bigint NOT NULL DEFAULT -1;

-- Each transfer carries the sender's and the receiver's balance right after it. An
-- address's balance at block B is then the one of its newest transfer at or before B:
-- one backward step in transfers_from and one in transfers_to, whatever the table's
-- size. The zero address (mints and burns) counts too: its "balance" is minus the supply.
ALTER TABLE transfers ADD COLUMN from_balance numeric(78,0);
ALTER TABLE transfers ADD COLUMN to_balance numeric(78,0);

-- What is stored already: running sums per address in chain order. The two legs of a
-- transfer to oneself are peers in the window, so both see the transfer's whole effect.
UPDATE transfers t SET from_balance = r.from_balance, to_balance = r.to_balance
FROM (
    SELECT token, block_number, log_index,
           max(balance) FILTER (WHERE sender) AS from_balance,
           max(balance) FILTER (WHERE NOT sender) AS to_balance
    FROM (
        SELECT token, block_number, log_index, sender,
               sum(delta) OVER (PARTITION BY token, address ORDER BY block_number, log_index) AS balance
        FROM (
            SELECT token, block_number, log_index, true AS sender, from_address AS address, -value AS delta
            FROM transfers
            UNION ALL
            SELECT token, block_number, log_index, false, to_address, value FROM transfers
        ) legs
    ) w
    GROUP BY token, block_number, log_index
) r
WHERE t.token = r.token AND t.block_number = r.block_number AND t.log_index = r.log_index;

ALTER TABLE transfers ALTER COLUMN from_balance SET NOT NULL;
ALTER TABLE transfers ALTER COLUMN to_balance SET NOT NULL;

-- The balance of `addr` after block `at`, and the newest block at or before `at` with a
-- transfer of it (0, 0 when none). The one definition of "balance at a block".
CREATE FUNCTION balance_at(tok bytea, addr bytea, at bigint, OUT balance numeric, OUT last_block bigint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(max(x.balance), 0), coalesce(max(x.block_number), 0)
    FROM (
        SELECT l.balance, l.block_number FROM (
            (SELECT from_balance AS balance, block_number, log_index FROM transfers
             WHERE token = tok AND from_address = addr AND block_number <= at
             ORDER BY block_number DESC, log_index DESC LIMIT 1)
            UNION ALL
            (SELECT to_balance, block_number, log_index FROM transfers
             WHERE token = tok AND to_address = addr AND block_number <= at
             ORDER BY block_number DESC, log_index DESC LIMIT 1)
        ) l
        ORDER BY l.block_number DESC, l.log_index DESC LIMIT 1
    ) x
$$;

-- Every stored transfer with whether its block is final.
CREATE VIEW transfers_finality AS
SELECT t.*, t.block_number <= least(k.finalized_block, k.indexed_block) AS final
FROM transfers t JOIN tokens k ON k.address = t.token;
GRANT SELECT ON transfers_finality TO holders_reader;

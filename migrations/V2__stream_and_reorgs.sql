-- The stream log and reorg bookkeeping.
--
-- Every stored transfer gets a sequence number, assigned per token at commit under the
-- token row's lock, so numbers grow in commit order: a consumer resumes after the last
-- number it saw. A transfer taken back by a reorg moves to removed_transfers with a number
-- of its own (removed_seq), so the removal is an event too.

ALTER TABLE tokens ADD COLUMN last_seq bigint NOT NULL DEFAULT 0;

ALTER TABLE transfers ADD COLUMN seq bigint;
UPDATE transfers t SET seq = n.seq
FROM (SELECT token, block_number, log_index,
             row_number() OVER (PARTITION BY token ORDER BY block_number, log_index) AS seq
      FROM transfers) n
WHERE t.token = n.token AND t.block_number = n.block_number AND t.log_index = n.log_index;
UPDATE tokens SET last_seq = coalesce((SELECT max(seq) FROM transfers WHERE token = tokens.address), 0);
ALTER TABLE transfers ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX transfers_seq ON transfers (token, seq);

CREATE TABLE removed_transfers (
    token        bytea NOT NULL REFERENCES tokens (address),
    removed_seq  bigint NOT NULL,  -- the removal's own number
    seq          bigint NOT NULL,  -- the number the transfer had when it was added
    block_number bigint NOT NULL,
    log_index    integer NOT NULL,
    block_hash   bytea NOT NULL,
    block_time   bigint NOT NULL,
    tx_hash      bytea NOT NULL,
    from_address bytea NOT NULL,
    to_address   bytea NOT NULL,
    value        numeric(78,0) NOT NULL,
    PRIMARY KEY (token, removed_seq)
);
CREATE INDEX removed_transfers_seq ON removed_transfers (token, seq);

-- One address's transfers newest first (ListTransfers), and the 7-day sums: log_index
-- joins the key so a page ends at an exact position.
DROP INDEX transfers_from;
DROP INDEX transfers_to;
CREATE INDEX transfers_from ON transfers (token, from_address, block_number, log_index) INCLUDE (value);
CREATE INDEX transfers_to ON transfers (token, to_address, block_number, log_index) INCLUDE (value);

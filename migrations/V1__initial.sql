-- The store of indexed ERC-20 tokens. Keyed by token address so one database holds
-- several tokens. Addresses and hashes are bytea; amounts are NUMERIC(78,0), which holds
-- every uint256 exactly (2^256-1 has 78 digits).

-- One row per token: its metadata and the checkpoint. Every block in
-- start_block..=indexed_block is indexed; the row changes in the same transaction as the
-- transfers and balances of a batch.
CREATE TABLE tokens (
    address          bytea PRIMARY KEY CHECK (length(address) = 20),
    chain_id         bigint NOT NULL,
    name             text NOT NULL DEFAULT '',
    symbol           text NOT NULL DEFAULT '',
    decimals         smallint NOT NULL CHECK (decimals BETWEEN 0 AND 255),
    start_block      bigint NOT NULL CHECK (start_block >= 0),
    indexed_block    bigint NOT NULL,           -- start_block - 1 until a batch commits
    indexed_hash     bytea,
    indexed_time     bigint NOT NULL DEFAULT 0, -- Unix seconds of indexed_block
    total_supply     numeric(78,0) NOT NULL DEFAULT 0, -- minted minus burned, as indexed
    chain_supply     numeric(78,0),             -- totalSupply() as read at chain_supply_block
    chain_supply_block bigint,
    transfer_count   bigint NOT NULL DEFAULT 0,
    holder_count     bigint NOT NULL DEFAULT 0, -- addresses with balance > 0
    rejected_logs    bigint NOT NULL DEFAULT 0, -- rows of rejected_logs for this token
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (indexed_block >= start_block - 1)
);

-- Every Transfer log, once: (token, block_number, log_index) identifies a log.
CREATE TABLE transfers (
    token        bytea NOT NULL REFERENCES tokens (address),
    block_number bigint NOT NULL,
    log_index    integer NOT NULL,
    block_hash   bytea NOT NULL,
    block_time   bigint NOT NULL,
    tx_hash      bytea NOT NULL,
    from_address bytea NOT NULL,
    to_address   bytea NOT NULL,
    value        numeric(78,0) NOT NULL CHECK (value >= 0),
    PRIMARY KEY (token, block_number, log_index)
);
-- One address's transfers after a block: the 7-day change, and an address's history.
-- value is included so the 7-day sums are index-only scans.
CREATE INDEX transfers_from ON transfers (token, from_address, block_number) INCLUDE (value);
CREATE INDEX transfers_to ON transfers (token, to_address, block_number) INCLUDE (value);

-- Balances derived from the transfers: the sum of what an address received minus what it
-- sent. The zero address (mints and burns) has no row.
CREATE TABLE balances (
    token               bytea NOT NULL REFERENCES tokens (address),
    address             bytea NOT NULL,
    balance             numeric(78,0) NOT NULL,
    last_transfer_block bigint NOT NULL,
    PRIMARY KEY (token, address)
);
-- The ranking: richest first, ties by lowest address. Negating the balance makes the
-- whole order ascending, so a keyset page is one range scan of this index.
CREATE INDEX balances_rank ON balances (token, (-balance), address) WHERE balance > 0;

-- Blocks that hold transfers, and each checkpoint block: their hashes and times. Finds
-- "the last block at or before a time" without touching transfers.
CREATE TABLE blocks (
    token  bytea NOT NULL REFERENCES tokens (address),
    number bigint NOT NULL,
    hash   bytea NOT NULL,
    time   bigint NOT NULL,
    PRIMARY KEY (token, number)
);
CREATE INDEX blocks_time ON blocks (token, time, number);

-- Logs at the token's address with the Transfer topic but not an ERC-20 Transfer's shape
-- (an ERC-721-style Transfer has 4 topics): skipped, and kept here once each for audit.
CREATE TABLE rejected_logs (
    token        bytea NOT NULL REFERENCES tokens (address),
    block_number bigint NOT NULL,
    log_index    integer NOT NULL,
    PRIMARY KEY (token, block_number, log_index)
);

-- A question names a token by its address (its chain too only when two chains hold the
-- address), and every answer reads the token row first: without an index on the address
-- alone (the unique key is (chain_id, address)) each question read the whole tokens table,
-- a thousand rows for a set of a thousand tokens, ten thousand for a large tokens file.

CREATE INDEX IF NOT EXISTS tokens_address ON tokens (address);

-- The per-row foreign-key checks from the hot tables to tokens cost about 7% of a
-- backfill's insert time (measured, see README's performance section) and guard nothing
-- the writer does not already guarantee: the ingestor writes a token's rows only in a
-- transaction that holds that token's row locked (FOR UPDATE), so the row exists.
ALTER TABLE transfers DROP CONSTRAINT IF EXISTS transfers_token_fkey;
ALTER TABLE balances DROP CONSTRAINT IF EXISTS balances_token_fkey;
ALTER TABLE blocks DROP CONSTRAINT IF EXISTS blocks_token_fkey;
ALTER TABLE rejected_logs DROP CONSTRAINT IF EXISTS rejected_logs_token_fkey;
ALTER TABLE removed_transfers DROP CONSTRAINT IF EXISTS removed_transfers_token_fkey;

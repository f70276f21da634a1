-- Transfers partitioned by block range, so that a backfill appends to one partition at a
-- time and an old partition is left alone. The size of a partition, in blocks, is
-- transfer_partitioning.blocks (1,000,000 blocks: about 139 days of mainnet); it may be
-- changed only while no partition exists (tests make it small).
--
-- Every partition carries the parent's primary key and sequence index: both take rows in
-- the order the ingestor appends them, so they cost little. Its indexes by sender and by
-- receiver (transfers_from_<n>, transfers_to_<n>) take random inserts: a partition filled
-- by a backfill gets them built once, sorted, when the backfill has passed its end or
-- reached the head (index_transfer_partitions, one side per call); a partition made near the head gets them
-- at once. Queries plan per partition, so either way they use them where they exist.
--
-- The sequence index is no longer unique: a unique index of a partitioned table must hold
-- the partition key. The ingestor hands numbers out under the token row's lock.
--
-- An existing table becomes the partition of every block below the first boundary above
-- its newest transfer (one scan checks the range; the sequence index is built again).

CREATE TABLE transfer_partitioning (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    blocks bigint NOT NULL CHECK (blocks > 0)
);
INSERT INTO transfer_partitioning (blocks) VALUES (1000000);

DROP VIEW transfers_finality;
ALTER TABLE transfers RENAME TO transfers_old;
ALTER INDEX transfers_pkey RENAME TO transfers_old_pkey;
ALTER INDEX transfers_from RENAME TO transfers_from_old;
ALTER INDEX transfers_to RENAME TO transfers_to_old;
ALTER INDEX transfers_seq RENAME TO transfers_old_seq_unique;

CREATE TABLE transfers (LIKE transfers_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (block_number);
ALTER TABLE transfers ADD PRIMARY KEY (token, block_number, log_index);
CREATE INDEX transfers_seq ON transfers (token, seq);

DO $$
DECLARE
    size bigint := (SELECT blocks FROM transfer_partitioning);
    top bigint;
BEGIN
    SELECT max(block_number) / size * size + size INTO top FROM transfers_old;
    IF top IS NULL THEN
        DROP TABLE transfers_old;
        RETURN;
    END IF;
    CREATE INDEX transfers_old_seq ON transfers_old (token, seq);
    DROP INDEX transfers_old_seq_unique;
    EXECUTE format('ALTER TABLE transfers_old ADD CONSTRAINT transfers_old_blocks CHECK (block_number < %s)', top);
    EXECUTE format('ALTER TABLE transfers ATTACH PARTITION transfers_old FOR VALUES FROM (MINVALUE) TO (%s)', top);
END
$$;

-- Makes the partitions that blocks lo..hi fall in, where missing; with_indexes: with
-- their sender and receiver indexes (near the head). Returns how many it made. Safe to
-- call from several ingestors at once.
CREATE FUNCTION ensure_transfer_partitions(lo bigint, hi bigint, with_indexes boolean)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    size bigint := (SELECT blocks FROM transfer_partitioning);
    made integer := 0;
BEGIN
    FOR k IN (lo / size)..(hi / size) LOOP
        CONTINUE WHEN to_regclass(format('transfers_%s', k)) IS NOT NULL;
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF transfers FOR VALUES FROM (%s) TO (%s)',
                           format('transfers_%s', k), k * size, (k + 1) * size);
            made := made + 1;
        EXCEPTION
            -- Covered by an older partition (transfers_old), or made by another ingestor.
            WHEN invalid_object_definition OR duplicate_table OR unique_violation THEN NULL;
        END;
        IF with_indexes THEN
            PERFORM index_transfer_partitions(k * size, k * size, true, 'from');
            PERFORM index_transfer_partitions(k * size, k * size, true, 'to');
        END IF;
    END LOOP;
    RETURN made;
END
$$;

-- Builds the sender ('from') or receiver ('to') index of the partitions of blocks lo..hi
-- that lack it: those that end at or before hi, and with partial the one hi falls in too.
-- Each index is one statement's transaction: a crash leaves it built or not. The two
-- sides may be built at once, from two connections. Returns how many it built.
CREATE FUNCTION index_transfer_partitions(lo bigint, hi bigint, partial boolean, side text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    size bigint := (SELECT blocks FROM transfer_partitioning);
    built integer := 0;
    part text;
BEGIN
    IF side NOT IN ('from', 'to') THEN
        RAISE EXCEPTION 'side must be from or to, not %', side;
    END IF;
    PERFORM set_config('maintenance_work_mem', '256MB', true);
    FOR k IN (lo / size)..(hi / size) LOOP
        CONTINUE WHEN NOT partial AND (k + 1) * size - 1 > hi;
        part := format('transfers_%s', k);
        CONTINUE WHEN to_regclass(part) IS NULL
                   OR to_regclass(format('transfers_%s_%s', side, k)) IS NOT NULL;
        EXECUTE format('CREATE INDEX %I ON %I (token, %I, block_number, log_index) INCLUDE (value)',
                       format('transfers_%s_%s', side, k), part, side || '_address');
        built := built + 1;
    END LOOP;
    RETURN built;
END
$$;

CREATE VIEW transfers_finality AS
SELECT t.*, t.block_number <= least(k.finalized_block, k.indexed_block) AS final
FROM transfers t JOIN tokens k ON k.address = t.token;
GRANT SELECT ON transfers_finality TO holders_reader;
GRANT SELECT ON transfers, transfer_partitioning TO holders_reader;

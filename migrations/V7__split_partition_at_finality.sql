-- A partition split where a backfill stops being final. A backfill fills the partition
-- of its last final block and then indexes the blocks above it in verified steps; when
-- both lie in one partition, that partition's sender and receiver indexes can only be
-- built after the steps (the build locks out writes) and the steps' rows go in unindexed.
-- Made as two partitions instead, transfers_<k> below the split block and
-- transfers_<k>_tail from it, the first is indexed while the steps write into the
-- second, which is indexed like any partition the ingestor reaches the head in (once
-- the steps have caught up; its rows then are only the steps'). Only a partition that
-- does not exist yet is split.

CREATE TABLE transfer_partition_splits (
    partition_no bigint PRIMARY KEY,
    split_at     bigint NOT NULL
);

-- Makes the partition that block split_at falls in as two, split there, when that
-- partition does not exist and split_at does not start it. Returns whether it split.
-- One transaction: both parts or neither.
CREATE FUNCTION split_transfer_partition(split_at bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    size bigint := (SELECT blocks FROM transfer_partitioning);
    k bigint := split_at / size;
    tail text := format('transfers_%s_tail', split_at / size);
BEGIN
    IF split_at % size = 0 OR to_regclass(format('transfers_%s', k)) IS NOT NULL THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE %I PARTITION OF transfers FOR VALUES FROM (%s) TO (%s)',
                       format('transfers_%s', k), k * size, split_at);
        EXECUTE format('CREATE TABLE %I PARTITION OF transfers FOR VALUES FROM (%s) TO (%s)',
                       tail, split_at, (k + 1) * size);
        INSERT INTO transfer_partition_splits VALUES (k, split_at);
    EXCEPTION
        -- Covered by an older partition (transfers_old), or made by another ingestor.
        WHEN invalid_object_definition OR duplicate_table OR unique_violation THEN
            RETURN false;
    END;
    RETURN true;
END
$$;

-- As in V6, and a split partition's two parts each in their turn: the first once hi
-- has passed its end (or, with partial, once hi is in it), the tail likewise.
CREATE OR REPLACE FUNCTION index_transfer_partitions(lo bigint, hi bigint, partial boolean, side text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    size bigint := (SELECT blocks FROM transfer_partitioning);
    built integer := 0;
    split bigint;
    part record;
BEGIN
    IF side NOT IN ('from', 'to') THEN
        RAISE EXCEPTION 'side must be from or to, not %', side;
    END IF;
    PERFORM set_config('maintenance_work_mem', '256MB', true);
    FOR k IN (lo / size)..(hi / size) LOOP
        split := (SELECT s.split_at FROM transfer_partition_splits s WHERE s.partition_no = k);
        FOR part IN
            SELECT k::text AS suffix, k * size AS first, coalesce(split, (k + 1) * size) - 1 AS last
            UNION ALL
            SELECT k || '_tail', split, (k + 1) * size - 1 WHERE split IS NOT NULL
        LOOP
            CONTINUE WHEN part.first > hi OR (NOT partial AND part.last > hi);
            CONTINUE WHEN to_regclass('transfers_' || part.suffix) IS NULL
                       OR to_regclass(format('transfers_%s_%s', side, part.suffix)) IS NOT NULL;
            EXECUTE format('CREATE INDEX %I ON %I (token, %I, block_number, log_index) INCLUDE (value)',
                           format('transfers_%s_%s', side, part.suffix), 'transfers_' || part.suffix,
                           side || '_address');
            built := built + 1;
        END LOOP;
    END LOOP;
    RETURN built;
END
$$;

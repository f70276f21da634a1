-- Partitions sized by how many transfers they will hold, not by a fixed block range.
--
-- Until V12 a chain's partitions were numbered ranges of transfer_partitioning.blocks
-- blocks (1,000,000). A history dense in transfers (a thousand a block) then lay in one
-- partition, and its sender and receiver indexes could only be built after its last row:
-- at 10M transfers a third of the backfill was that one build. Now the ingestor asks for a
-- size in blocks that holds a few million transfers at the density it sees (never more than
-- transfer_partitioning.blocks), and makes the partition above a backfill's final blocks
-- first (where its verified steps write), so that the backfill's own partitions end
-- below it: every partition but the last one it fills is full, and indexed in the
-- background, before the backfill ends.
--
-- A partition is named by its first block: transfers_<chain>_at_<first>, its indexes
-- transfers_from_<chain>_at_<first> and transfers_to_<chain>_at_<first>. Partitions made
-- before keep their names (transfers_<chain>_<k>, ..._<k>_tail); every function below
-- reads partitions by their bounds from the catalog, so old and new sit side by side. A
-- partition starts at the first block that needs it and ends after `size` blocks or at the
-- next partition, never over another: several ingestors of one chain, backfilling
-- different ranges, make partitions that fit between each other's.

-- A partition is made as a table and then attached: CREATE TABLE ... PARTITION OF takes
-- an ACCESS EXCLUSIVE lock on the parent, which waits for every open batch and query on
-- the chain's transfers and makes every later one wait behind it (a query-service
-- answer stalled for as long as another lane's batch stays open); ATTACH PARTITION takes
-- SHARE UPDATE EXCLUSIVE, which neither reads nor inserts conflict with, and its check of
-- the new table's rows reads an empty table.

-- Makes the partition of `chain`'s transfers, where missing. Returns its name.
CREATE OR REPLACE FUNCTION transfer_chain_partition(chain bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    part text := format('transfers_%s', chain);
BEGIN
    IF to_regclass(part) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I (LIKE transfers INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (block_number)',
                           part);
            EXECUTE format('ALTER TABLE transfers ATTACH PARTITION %I FOR VALUES IN (%s)', part, chain);
        EXCEPTION
            -- Made by another ingestor meanwhile.
            WHEN invalid_object_definition OR duplicate_table OR unique_violation THEN NULL;
        END;
    END IF;
    RETURN part;
END
$$;

DROP FUNCTION ensure_transfer_partitions(bigint, bigint, bigint, boolean);
DROP FUNCTION split_transfer_partition(bigint, bigint);
DROP FUNCTION index_transfer_partitions(bigint, bigint, bigint, boolean, text);
DROP TABLE transfer_partition_splits;

-- The block-range partitions of `chain`'s transfers: name, first block, and the block
-- after the last.
CREATE FUNCTION transfer_partitions_of(chain bigint)
RETURNS TABLE (name text, first bigint, next bigint) LANGUAGE sql STABLE AS $$
    SELECT c.relname::text,
           CASE WHEN m[1] = 'MINVALUE' THEN -9223372036854775808 ELSE m[1]::bigint END,
           CASE WHEN m[2] = 'MAXVALUE' THEN 9223372036854775807 ELSE m[2]::bigint END
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid,
    LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                         'FROM \(''?(-?\d+|MINVALUE)''?\) TO \(''?(-?\d+|MAXVALUE)''?\)') AS m
    WHERE i.inhparent = to_regclass(format('transfers_%s', chain))
$$;

-- Makes the partitions of `chain` that blocks lo..hi need, where missing: each from the
-- first block not covered, for `size` blocks (NULL or more than
-- transfer_partitioning.blocks: that) or up to the next partition, whichever is fewer.
-- with_indexes: with their
-- sender and receiver indexes (near the head). Returns the last block of the partitions
-- that cover lo..hi without a gap. Safe to call from several ingestors at once.
CREATE FUNCTION ensure_transfer_partitions(chain bigint, lo bigint, hi bigint, with_indexes boolean,
                                           size bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    blocks bigint := (SELECT least(coalesce(size, p.blocks), p.blocks) FROM transfer_partitioning p);
    parent text := transfer_chain_partition(chain);
    b bigint := lo;
    covering bigint;
    start bigint;
    stop bigint;
    part text;
BEGIN
    IF blocks < 1 THEN
        RAISE EXCEPTION 'a partition size must be at least one block, not %', blocks;
    END IF;
    -- Each turn covers b or finds it covered (by us or by another ingestor meanwhile).
    FOR turn IN 1..100000 LOOP
        EXIT WHEN b > hi;
        SELECT p.next INTO covering FROM transfer_partitions_of(chain) p
        WHERE p.first <= b AND b < p.next;
        IF covering IS NOT NULL THEN
            b := covering;
            CONTINUE;
        END IF;
        start := b;
        stop := least(start + blocks,
                      coalesce((SELECT min(p.first) FROM transfer_partitions_of(chain) p
                                WHERE p.first > b), start + blocks));
        part := format('transfers_%s_at_%s', chain, start);
        BEGIN
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                           part, parent);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                           parent, part, start, stop);
        EXCEPTION
            -- Made by another ingestor meanwhile: the next turn sees it.
            WHEN invalid_object_definition OR duplicate_table OR unique_violation THEN
                CONTINUE;
        END;
        IF with_indexes THEN
            PERFORM index_transfer_partitions(chain, start, start, true, 'from');
            PERFORM index_transfer_partitions(chain, start, start, true, 'to');
        END IF;
        b := stop;
    END LOOP;
    RETURN b - 1;
END
$$;

-- Builds the sender ('from') or receiver ('to') index of the partitions of `chain`'s
-- blocks lo..hi that lack it: those that end at or before hi, and with partial the one
-- hi falls in too. Each index is one statement's transaction. Address first (see V8).
-- Returns how many it built.
CREATE FUNCTION index_transfer_partitions(chain bigint, lo bigint, hi bigint, partial boolean, side text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    built integer := 0;
    part record;
BEGIN
    IF side NOT IN ('from', 'to') THEN
        RAISE EXCEPTION 'side must be from or to, not %', side;
    END IF;
    PERFORM set_config('maintenance_work_mem', '256MB', true);
    FOR part IN
        SELECT p.name, substr(p.name, length('transfers_') + 1) AS suffix
        FROM transfer_partitions_of(chain) p
        WHERE p.next > lo AND p.first <= hi AND (partial OR p.next - 1 <= hi)
        ORDER BY p.first
    LOOP
        CONTINUE WHEN to_regclass(format('transfers_%s_%s', side, part.suffix)) IS NOT NULL;
        EXECUTE format('CREATE INDEX %I ON %I (%I, token, block_number, log_index) INCLUDE (value)',
                       format('transfers_%s_%s', side, part.suffix), part.name, side || '_address');
        built := built + 1;
    END LOOP;
    RETURN built;
END
$$;

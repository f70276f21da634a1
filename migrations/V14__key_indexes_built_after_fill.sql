-- The key (token, block_number, log_index) and the sequence index (token, seq) of a
-- transfer partition become indexes of the partition, built like its sender and receiver
-- indexes: at once for a partition near the head, after its last row for one a backfill
-- fills.
--
-- Until V13 both were indexes of the parent (its primary key and transfers_seq), so every
-- partition had them from its first row, and a backfill inserted each row into both. For
-- one token those inserts append at the right edge of each index; for a set of a thousand
-- tokens they land at a thousand places, each a descent from the root and a page split in
-- the middle. Measured on 1M rows in the writer's order (ten blocks a chunk, each chunk's
-- rows token by token): the inserts took 3.0 s for one token and 6.0 s for a thousand
-- spread by a power law, 0.9 s for either without the two indexes; building both
-- afterwards takes 1.4 s.
--
-- Exactly once never relied on the key (the writer skips stored blocks, and one ingestor
-- writes a token at a time); the key, built once the partition is full, still refuses a
-- row stored twice, then.

ALTER TABLE transfers DROP CONSTRAINT transfers_pkey;
DROP INDEX transfers_seq;

-- Builds one index of the partitions of `chain`'s blocks lo..hi that lack it: those that
-- end at or before hi, and with partial the one hi falls in too. `side`: 'from' or 'to'
-- (the sender or receiver index, address first, see V8), 'key' (unique: token,
-- block_number, log_index) or 'seq' (token, seq). Each index is one statement's
-- transaction. Returns how many it built.
DROP FUNCTION index_transfer_partitions(bigint, bigint, bigint, boolean, text);
CREATE FUNCTION index_transfer_partitions(chain bigint, lo bigint, hi bigint, partial boolean, side text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    built integer := 0;
    part record;
    def text;
BEGIN
    def := CASE side
        WHEN 'from' THEN 'CREATE INDEX %I ON %I (from_address, token, block_number, log_index) INCLUDE (value)'
        WHEN 'to' THEN 'CREATE INDEX %I ON %I (to_address, token, block_number, log_index) INCLUDE (value)'
        WHEN 'key' THEN 'CREATE UNIQUE INDEX %I ON %I (token, block_number, log_index)'
        WHEN 'seq' THEN 'CREATE INDEX %I ON %I (token, seq)'
    END;
    IF def IS NULL THEN
        RAISE EXCEPTION 'side must be from, to, key or seq, not %', side;
    END IF;
    PERFORM set_config('maintenance_work_mem', '256MB', true);
    -- The ingestor builds two at once, beside its writer: parallel workers on top of that
    -- only contend for the same cores (four builds of 1M rows on two connections: 3.2 s
    -- with two workers each, 3.0 s without, on 2 cores), and take them from the
    -- query-service's answers meanwhile.
    PERFORM set_config('max_parallel_maintenance_workers', '0', true);
    FOR part IN
        SELECT p.name, substr(p.name, length('transfers_') + 1) AS suffix
        FROM transfer_partitions_of(chain) p
        WHERE p.next > lo AND p.first <= hi AND (partial OR p.next - 1 <= hi)
        ORDER BY p.first
    LOOP
        CONTINUE WHEN to_regclass(format('transfers_%s_%s', side, part.suffix)) IS NOT NULL;
        EXECUTE format(def, format('transfers_%s_%s', side, part.suffix), part.name);
        built := built + 1;
    END LOOP;
    RETURN built;
END
$$;

-- As V13's, and a partition made with its indexes gets all four.
CREATE OR REPLACE FUNCTION ensure_transfer_partitions(chain bigint, lo bigint, hi bigint, with_indexes boolean,
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
            PERFORM index_transfer_partitions(chain, start, start, true, side)
            FROM unnest(ARRAY['key', 'seq', 'from', 'to']) AS side;
        END IF;
        b := stop;
    END LOOP;
    RETURN b - 1;
END
$$;

-- The partitions there are lose the parent's indexes above: each gets its own.
DO $$
DECLARE
    chain bigint;
BEGIN
    FOR chain IN
        SELECT substr(c.relname, length('transfers_') + 1)::bigint
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'transfers'::regclass
    LOOP
        PERFORM index_transfer_partitions(chain, 0, 9223372036854775806, true, side)
        FROM unnest(ARRAY['key', 'seq']) AS side;
    END LOOP;
END
$$;

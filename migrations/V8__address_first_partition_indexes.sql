-- The sender and receiver indexes of partitions built from now on lead with the address:
-- (from_address, token, block_number, log_index) INCLUDE (value), and likewise for the
-- receiver. Every query of them fixes both the token and the address by equality, so
-- either order serves it the same. The build does not: a store holds one or a few
-- tokens, so a token-first key compares equal 20-byte tokens in every comparison of the
-- sort before reaching the address. Measured on 936,000 rows of one token: 2.19 s for
-- the token-first key, 1.01 s address-first (one worker each); 0.75 s with parallel
-- workers. Indexes that exist already are left as they are (same names, same use).

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
            EXECUTE format('CREATE INDEX %I ON %I (%I, token, block_number, log_index) INCLUDE (value)',
                           format('transfers_%s_%s', side, part.suffix), 'transfers_' || part.suffix,
                           side || '_address');
            built := built + 1;
        END LOOP;
    END LOOP;
    RETURN built;
END
$$;

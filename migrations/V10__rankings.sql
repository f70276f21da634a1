-- Rankings kept by the ingestor: every so many transfers (--ranking-every), at the end
-- of a block, the richest holders after that block (--ranking-depth of them). A ranking
-- at a past block B then starts from the newest one at or below B and reads only the
-- transfers after it: an address that did not move since holds what it held then, one
-- that moved holds what its newest transfer at or below B left it. Written in the
-- batch's transaction; a rollback deletes those above the fork.
--
-- `complete`: the ranking holds every holder of that moment. Otherwise its rows are
-- the exact head of the ranking and nothing below its last row is known: a reader may
-- use only what ranks above that row.
CREATE TABLE rankings (
    token          bytea NOT NULL,
    block          bigint NOT NULL,
    depth          integer NOT NULL,
    complete       boolean NOT NULL,
    -- The token's stored transfers up to and including the block: how far the next
    -- ranking is.
    transfer_count bigint NOT NULL,
    PRIMARY KEY (token, block)
);

CREATE TABLE ranking_rows (
    token               bytea NOT NULL,
    block               bigint NOT NULL,
    rank                integer NOT NULL,
    address             bytea NOT NULL,
    balance             numeric(78,0) NOT NULL,
    last_transfer_block bigint NOT NULL,
    PRIMARY KEY (token, block, rank)
);

-- The key the query-service signs its page tokens and stream cursors with (HMAC-SHA256),
-- made once per store so that every query-service reading it (replicas too: the row is
-- replicated) accepts the tokens any of them issued, across restarts, with no setting.
-- `--token-secret` (QUERY_TOKEN_SECRET) overrides it. 256 random bits from two v4 UUIDs
-- (gen_random_uuid draws from the server's strong random source); the fixed version and
-- variant bits are hashed away.
CREATE TABLE token_mac_key (
    id  smallint PRIMARY KEY CHECK (id = 1),
    key bytea NOT NULL CHECK (length(key) = 32)
);
INSERT INTO token_mac_key (id, key)
SELECT 1, sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8'));

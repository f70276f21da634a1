-- The query-service's role: it may read every table and write none (least privilege).
-- Roles belong to the whole Postgres cluster, so it may exist already (another database,
-- a migration running at the same moment elsewhere). Set its password once, as an admin:
--   ALTER ROLE holders_reader PASSWORD '...';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'holders_reader') THEN
        BEGIN
            CREATE ROLE holders_reader LOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'the ingestor''s role may not create the role holders_reader for the query-service'
                    USING HINT = 'as an admin: CREATE ROLE holders_reader LOGIN; (or grant CREATEROLE to the ingestor''s role), then start the ingestor again';
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO holders_reader', current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO holders_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO holders_reader;
-- Tables later migrations create (they run as the role that owns the schema).
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO holders_reader;

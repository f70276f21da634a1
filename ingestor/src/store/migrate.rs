//! Brings a database's schema up to date from the SQL files in `migrations/`, in order,
//! each once, each in its own transaction. Several processes may start at once: a
//! Postgres advisory lock lets one migrate while the others wait.

use tokio_postgres::Client;
use tracing::info;

use super::error::{StoreError, StoreResult, What};

/// The migrations, in the order they apply: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../../../migrations/V1__initial.sql")),
    (2, "stream_and_reorgs", include_str!("../../../migrations/V2__stream_and_reorgs.sql")),
    (3, "no_token_foreign_keys", include_str!("../../../migrations/V3__no_token_foreign_keys.sql")),
    (4, "reader_role", include_str!("../../../migrations/V4__reader_role.sql")),
    (5, "finality_and_history", include_str!("../../../migrations/V5__finality_and_history.sql")),
    (6, "transfer_partitions", include_str!("../../../migrations/V6__transfer_partitions.sql")),
    (
        7,
        "split_partition_at_finality",
        include_str!("../../../migrations/V7__split_partition_at_finality.sql"),
    ),
    (
        8,
        "address_first_partition_indexes",
        include_str!("../../../migrations/V8__address_first_partition_indexes.sql"),
    ),
    (
        9,
        "holder_count_per_block",
        include_str!("../../../migrations/V9__holder_count_per_block.sql"),
    ),
    (10, "rankings", include_str!("../../../migrations/V10__rankings.sql")),
    (11, "token_mac_key", include_str!("../../../migrations/V11__token_mac_key.sql")),
    (12, "chain_in_every_key", include_str!("../../../migrations/V12__chain_in_every_key.sql")),
    (
        13,
        "partitions_by_density",
        include_str!("../../../migrations/V13__partitions_by_density.sql"),
    ),
    (
        14,
        "key_indexes_built_after_fill",
        include_str!("../../../migrations/V14__key_indexes_built_after_fill.sql"),
    ),
    (15, "token_by_address", include_str!("../../../migrations/V15__token_by_address.sql")),
];

/// Key of the advisory lock held while migrating (any constant unique to this program).
const LOCK_KEY: i64 = 0x4552_4332_304d_4947; // "ERC20MIG"

/// Applies the migrations the database lacks. Returns how many it applied.
pub async fn run(client: &mut Client) -> StoreResult<usize> {
    run_to(client, i32::MAX).await
}

/// Applies the migrations the database lacks up to version `upto`: a store of an older
/// release, for the upgrade tests.
pub async fn run_to(client: &mut Client, upto: i32) -> StoreResult<usize> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .what("taking the migration lock")?;
    let result = apply(client, upto).await;
    // Unlock even when a migration failed; a dead connection drops the lock anyway.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
    result
}

/// The shape of our `schema_migrations`: (column, type) in order.
const OURS: [(&str, &str); 3] =
    [("version", "integer"), ("name", "text"), ("applied_at", "timestamp with time zone")];

/// Refuses a `schema_migrations` table another tool made (golang-migrate's `version
/// bigint, dirty boolean`, Rails' `version varchar`, ...): its rows are not ours to read.
async fn check_foreign_table(client: &Client) -> StoreResult<()> {
    let columns: Vec<(String, String)> = client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'schema_migrations'
             ORDER BY ordinal_position",
            &[],
        )
        .await
        .what("reading the shape of schema_migrations")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let ours = columns.len() == OURS.len()
        && columns.iter().zip(OURS).all(|((c, t), (oc, ot))| c == oc && t == ot);
    if columns.is_empty() || ours {
        return Ok(());
    }
    let shape: Vec<String> = columns.iter().map(|(c, t)| format!("{c} {t}")).collect();
    Err(StoreError::Refused(format!(
        "the database holds another tool's schema_migrations table ({}): give the ingestor a database of its own, or a schema of its own (add ?options=-csearch_path%3Dholders to --database-url after CREATE SCHEMA holders)",
        shape.join(", ")
    )))
}

async fn apply(client: &mut Client, upto: i32) -> StoreResult<usize> {
    check_foreign_table(client).await?;
    client
        .batch_execute(
            // No NOTICE "already exists" (logged) at every start.
            "SET client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .what("creating schema_migrations")?;
    client
        .batch_execute("RESET client_min_messages")
        .await
        .what("resetting client_min_messages")?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
        .await
        .what("reading schema_migrations")?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .what("reading schema_migrations")?;
    if let Some(&newest) = applied.last() {
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if newest > known {
            return Err(StoreError::Refused(format!(
                "the database has schema version {newest}, newer than this binary knows ({known}): run a newer ingestor"
            )));
        }
    }
    let mut count = 0;
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) || version > upto {
            continue;
        }
        let tx = client.transaction().await.what("starting a migration")?;
        tx.batch_execute(sql).await.what(format!("applying migration V{version}__{name}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .what("recording a migration")?;
        tx.commit().await.what(format!("committing migration V{version}__{name}"))?;
        info!(version, name, "applied migration");
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// Every file in migrations/ is listed, in version order, and nothing else is.
    #[test]
    fn every_migration_file_is_listed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".sql"))
            .collect();
        files.sort_by_key(|f| f[1..f.find("__").unwrap()].parse::<i32>().unwrap());
        let listed: Vec<String> =
            MIGRATIONS.iter().map(|(v, n, _)| format!("V{v}__{n}.sql")).collect();
        assert_eq!(files, listed);
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}

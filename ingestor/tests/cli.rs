//! The binary's contract with its operator: a bad or missing setting stops it with one
//! line naming the setting and exit code 2; --help lists every environment variable.

use std::process::Command;

fn ingestor(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingestor"));
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the ingestor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const BASE: &[(&str, &str)] =
    &[("RPC_URL", "http://127.0.0.1:1"), ("DATABASE_URL", "postgres://u:secret@127.0.0.1:1/db")];

#[test]
fn a_range_that_cannot_be_is_refused_in_one_line() {
    for args in [&["--from", "6", "--to", "5"][..], &["--from", "head", "--to", "100"][..]] {
        let (code, _, err) = ingestor(args, BASE);
        assert_eq!(code, 2, "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("--to") && err.contains("--from"), "{err}");
    }
}

#[test]
fn a_missing_setting_is_named() {
    let (code, _, err) = ingestor(&[], &[("DATABASE_URL", "postgres://x@127.0.0.1/db")]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--rpc-url"), "{err}");
}

#[test]
fn bad_values_are_named() {
    for (args, needle) in [
        (&["--token", "0xBAAc2B4491727D78D2b78815144570b9f2Fe8899"][..], "--token"),
        (&["--from", "ten"][..], "--from"),
        (&["--poll-interval", "soon"][..], "--poll-interval"),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        let (code, _, err) = ingestor(args, BASE);
        assert_eq!(code, 2, "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (code, _, err) =
        ingestor(&[], &[("RPC_URL", "ftp://x"), ("DATABASE_URL", "postgres://x@h/db")]);
    assert_eq!(code, 2);
    assert!(err.contains("--rpc-url"), "{err}");
}

/// Settings after the subcommand, as users type them, are taken like settings before it:
/// `verify` gets past parsing and fails only at the unreachable node and database (exit 2,
/// "could not check"), in either order.
#[test]
fn verify_takes_settings_after_the_subcommand() {
    let settings = [
        "--rpc-url",
        "http://127.0.0.1:1",
        "--database-url",
        "postgres://u:secret@127.0.0.1:1/db",
        "--max-attempts",
        "1",
        "--max-outage",
        "1s",
    ];
    let after = [&["verify"][..], &settings, &["--sample", "100"]].concat();
    let before = [&settings[..], &["verify", "--sample", "100"]].concat();
    for args in [after, before] {
        let (code, out, err) = ingestor(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(out.contains("verify could not check"), "{args:?}: {out}{err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
        assert!(!out.contains("secret") && !err.contains("secret"), "{out}{err}");
    }
}

#[test]
fn help_lists_every_environment_variable() {
    let (code, out, _) = ingestor(&["--help"], &[]);
    assert_eq!(code, 0);
    for var in [
        "RPC_URL",
        "DATABASE_URL",
        "TOKEN_ADDRESS",
        "FROM_BLOCK",
        "TO_BLOCK",
        "INGESTOR_POLL_INTERVAL",
        "LOG_FORMAT",
    ] {
        assert!(out.contains(var), "--help lacks {var}");
    }
}

/// An unreachable database fails the run (exit 1) after its retries, and the password in
/// DATABASE_URL appears nowhere in the output.
#[test]
fn an_unreachable_database_fails_without_leaking_the_password() {
    let (code, out, err) = ingestor(
        &[
            "--from",
            "1",
            "--to",
            "2",
            "--max-attempts",
            "2",
            "--max-backoff",
            "10ms",
            "--max-outage",
            "1s",
        ],
        BASE,
    );
    assert_eq!(code, 1, "{err}");
    assert!(!out.contains("secret") && !err.contains("secret"), "{err}");
    assert!(err.contains("database"), "{err}");
}

/// --migrate-only needs no RPC URL: it migrates and exits 0 (here against the local test
/// server, in a database of its own).
#[test]
fn migrate_only_needs_just_the_database() {
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("holders_cli_{}", std::process::id());
    let psql = |sql: &str| {
        let (base, _) = admin.rsplit_once('/').unwrap();
        std::process::Command::new("psql")
            .arg(format!("{base}/postgres"))
            .args(["-qAtc", sql])
            .output()
            .unwrap()
    };
    psql(&format!("DROP DATABASE IF EXISTS {db}"));
    psql(&format!("CREATE DATABASE {db}"));
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    let (code, _, err) = ingestor(&["--migrate-only"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "{err}");
    let out = std::process::Command::new("psql")
        .arg(&url)
        .args(["-qAtc", "SELECT max(version) FROM schema_migrations"])
        .output()
        .unwrap();
    let newest = ingestor::store::migrate::MIGRATIONS.last().unwrap().0;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), newest.to_string());
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

/// Settings that cannot work are named in one line with exit 2, before any work: a
/// database URL that is not one, a secret given both directly and from a file, a verify
/// that would check nothing, a duration too large to hold.
#[test]
fn settings_that_cannot_work_are_refused_in_one_line() {
    let dir = std::env::temp_dir().join(format!("ingestor-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("db");
    std::fs::write(&file, "postgres://u:secret@127.0.0.1:1/db\n").unwrap();
    let file = file.to_string_lossy().into_owned();
    let both = [
        ("RPC_URL", "http://127.0.0.1:1"),
        ("DATABASE_URL", "postgres://x@h/db"),
        ("DATABASE_URL_FILE", file.as_str()),
    ];
    let bad_url =
        [("RPC_URL", "http://127.0.0.1:1"), ("DATABASE_URL", "postgres://x@h:99999999/db")];
    for (args, env, needles) in [
        (&[][..], &both[..], &["DATABASE_URL and DATABASE_URL_FILE are both set"][..]),
        (
            &["--database-url", "postgres://x@h/db"][..],
            &both[2..],
            &["--database-url and DATABASE_URL_FILE"][..],
        ),
        (&[][..], &bad_url[..], &["--database-url", "not a PostgreSQL URL"][..]),
        (&["verify", "--sample", "0"][..], BASE, &["--sample 0"][..]),
        (&["--poll-interval", "9999999999999999999h"][..], BASE, &["--poll-interval"][..]),
    ] {
        let (code, _, err) = ingestor(args, env);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: {err}");
        }
        assert!(!err.contains("secret"), "{err}");
    }
    let (code, out, _) = ingestor(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("DATABASE_URL_FILE") && out.contains("RPC_URL_FILE"), "{out}");
    // verify --help lists what verify reads, not the indexing settings.
    let (code, out, _) = ingestor(&["verify", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("--sample") && out.contains("--rpc-url"), "{out}");
    assert!(!out.contains("--batch-transfers") && !out.contains("--from"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A database that refuses the credentials, or does not exist, is named at once (exit
/// 2), not retried: the local test server refuses an unknown role and database.
#[test]
fn a_database_that_refuses_is_named_at_once() {
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (base, _) = admin.rsplit_once('/').unwrap();
    let missing = format!("{base}/no_such_database_{}", std::process::id());
    let started = std::time::Instant::now();
    let (code, _, err) = ingestor(&["--migrate-only"], &[("DATABASE_URL", &missing)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "retried");
}

//! `demo --help` and a mistyped argument stop before the demo touches anything: the
//! demo's database, made here beforehand with a marker in it, is still there after.

use std::process::Command;

fn demo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_demo")).args(args).output().unwrap()
}

#[tokio::test]
async fn help_and_unknown_arguments_touch_nothing() {
    let admin = rig::db::connect(&rig::db::admin_url()).await.unwrap();
    // A demo left running keeps its database: only the marker is ours then.
    let made = admin.execute("CREATE DATABASE holders_demo", &[]).await.is_ok();
    let url = rig::db::url_with_db(&rig::db::admin_url(), "holders_demo");
    let c = rig::db::connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE IF NOT EXISTS demo_cli_marker (x int)").await.unwrap();
    drop(c);

    let help = demo(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Usage: demo") && text.contains("--keep-running"), "{text}");
    let bad = demo(&["--kep-running"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--kep-running"));

    let c = rig::db::connect(&url).await.expect("holders_demo is still there");
    c.query_one("SELECT count(*) FROM demo_cli_marker", &[]).await.expect("and untouched");
    c.batch_execute("DROP TABLE demo_cli_marker").await.unwrap();
    drop(c);
    if made {
        let _ = admin.execute("DROP DATABASE holders_demo WITH (FORCE)", &[]).await;
    }
}

//! The binary's contract with its operator: a bad or missing setting stops it with one
//! line naming the setting and exit code 2.

use std::process::Command;

fn query_service(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_query-service"));
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the query-service");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn missing_and_bad_settings_are_named_in_one_line() {
    let db = [("DATABASE_URL", "postgres://x@127.0.0.1:1/db")];
    for (args, env, needle) in [
        (&[][..], &[][..], "--database-url"),
        (&["--listen", "nowhere"][..], &db[..], "--listen"),
        (&["--statement-timeout", "0s"][..], &db[..], "--statement-timeout"),
    ] {
        let (code, err) = query_service(args, env);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

//! The binary's contract with its operator: what cannot work stops it with one line
//! naming the setting and exit code 2, before it says SERVING.

use std::process::Command;

fn query_service(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_query-service"));
    cmd.args(args).args(["--metrics-listen", "127.0.0.1:0"]).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the query-service");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into())
}

const DB: (&str, &str) = ("DATABASE_URL", "postgres://u:secret@127.0.0.1:1/db");

#[test]
fn settings_that_cannot_work_are_refused_in_one_line() {
    let dir = std::env::temp_dir().join(format!("qs-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(path("garbage.pem"), "not a certificate\n").unwrap();
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-keyout", &path("key.pem"), "-out", &path("cert.pem")])
        .args(["-days", "1", "-subj", "/CN=localhost"])
        .output()
        .unwrap();
    assert!(made.status.success());
    std::fs::write(path("db"), "postgres://u:secret@127.0.0.1:1/db").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let listen = listen.to_string();
    let (cert, key, garbage) = (path("cert.pem"), path("key.pem"), path("garbage.pem"));
    let db_file = path("db");
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec!["--tls-cert", &cert, "--tls-key", &garbage], vec![DB], "private key"),
        (vec!["--tls-cert", &garbage, "--tls-key", &key], vec![DB], "--tls-cert"),
        (
            vec!["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &garbage],
            vec![DB],
            "--tls-client-ca",
        ),
        (vec!["--listen", &taken], vec![DB], "--listen"),
        (vec![], vec![("DATABASE_URL", "postgres://x@h:99999999/db")], "--database-url"),
        (vec![], vec![DB, ("DATABASE_URL_FILE", &db_file)], "DATABASE_URL and DATABASE_URL_FILE"),
        (vec!["--token-secret", "short"], vec![DB], "--token-secret"),
    ];
    for (mut args, env, needle) in cases {
        if !args.contains(&"--listen") {
            args.extend(["--listen", &listen]);
        }
        let (code, err) = query_service(&args, &env);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("SERVING") && !err.contains("secret@"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

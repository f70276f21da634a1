//! Least privilege and secrecy: the query-service works as a role that can write nothing,
//! and database passwords and RPC API keys never reach the logs of either binary, whether
//! things go well or not.

use std::process::Stdio;
use std::time::Duration;

use proto::pb::{GetHoldersRequest, GetTopHoldersRequest};
use rig::pair::QueryService;
use rig::proxy::{FaultProxy, Rules};
use tokio::process::Command;
use tokio_postgres::error::SqlState;

use crate::{small, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_service_reads_as_a_role_that_cannot_write() {
    let w = world(small(51)).await;
    w.ingest_all().await;
    // The migration made the role; the query-service connects as it.
    let reader_url = rig::db::url_with_user(&w.db.url, "holders_reader");
    let qs = QueryService::start(&reader_url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let top = client
        .get_top_holders(GetTopHoldersRequest { limit: 5, ..Default::default() })
        .await
        .expect("GetTopHolders as holders_reader")
        .into_inner();
    assert_eq!(top.holders.len(), 5);
    let page = client
        .get_holders(GetHoldersRequest { page_size: 3, ..Default::default() })
        .await
        .expect("GetHolders as holders_reader")
        .into_inner();
    assert_eq!(page.holders.len(), 3);

    let reader = rig::db::connect(&reader_url).await.unwrap();
    for sql in [
        "UPDATE balances SET balance = 0",
        "DELETE FROM transfers",
        "INSERT INTO blocks (token, number, hash, time) VALUES (1, 1, '\\x00', 0)",
        "TRUNCATE tokens",
        "CREATE TABLE intruder (a int)",
        "DROP TABLE transfers",
        "ALTER TABLE balances ADD COLUMN x int",
    ] {
        let err = reader.batch_execute(sql).await.expect_err(sql);
        assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {err}");
    }
}

const DB_PASSWORD: &str = "pw-DB-SECRET-7f3a";
const RPC_KEY: &str = "RPC-SECRET-KEY-91c2";

/// Runs `binary` with `env` and `args` until it exits or `within` passes (then kills it);
/// its stderr, which must hold neither secret.
async fn run_and_check_log(
    binary: &str,
    env: &[(&str, &str)],
    args: &[&str],
    within: Duration,
) -> (bool, String) {
    let bin = rig::pair::ingestor_binary().unwrap().with_file_name(binary);
    let mut child = Command::new(bin)
        .args(args)
        .args(rig::pair::LOCAL_PORTS.iter().filter(|_| binary == "ingestor"))
        // Only what the case gives: scripts/test.sh exports DATABASE_URL for the tests.
        .env_remove("DATABASE_URL")
        .env_remove("RPC_URL")
        .envs(env.iter().copied())
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let reading = crate::read_stderr(&mut child);
    let status = match tokio::time::timeout(within, child.wait()).await {
        Ok(status) => status.unwrap().success(),
        Err(_) => {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            false
        }
    };
    let log = reading.await.unwrap();
    assert!(!log.is_empty(), "{binary} logged nothing");
    for secret in [DB_PASSWORD, RPC_KEY] {
        assert!(!log.contains(secret), "{binary} {args:?} logged a secret:\n{log}");
    }
    (status, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_api_keys_never_reach_the_logs() {
    let w = world(small(52)).await;
    // Trust auth ignores the password; the proxy ignores the path that carries the key.
    let db_url = w.db.url.replacen("://postgres@", &format!("://postgres:{DB_PASSWORD}@"), 1);
    assert!(db_url.contains(DB_PASSWORD), "{db_url}");
    let proxy = FaultProxy::start(&w.chain.url, Rules::default()).await.unwrap();
    let rpc_url = format!("{}/v3/{RPC_KEY}", proxy.url);
    let (from, to) = (w.history.start_block.to_string(), w.history.end_block.to_string());
    let token = w.history.token.to_string();
    let range = ["--token", &token, "--from", &from, "--to", &to];
    let long = Duration::from_secs(60);

    // A backfill that works, in both log formats.
    for format in ["text", "json"] {
        let env = [("DATABASE_URL", db_url.as_str()), ("RPC_URL", rpc_url.as_str())];
        let mut args = range.to_vec();
        args.extend(["--log-format", format]);
        let (ok, _) = run_and_check_log("ingestor", &env, &args, long).await;
        assert!(ok, "the backfill with a password and a key failed");
    }
    // The same from mounted secret files (DATABASE_URL_FILE, RPC_URL_FILE).
    let dir = std::env::temp_dir().join(format!("holders-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (db_file, rpc_file) = (dir.join("database-url"), dir.join("rpc-url"));
    std::fs::write(&db_file, format!("{db_url}\n")).unwrap();
    std::fs::write(&rpc_file, &rpc_url).unwrap();
    let (db_file, rpc_file) = (db_file.to_string_lossy(), rpc_file.to_string_lossy());
    let env = [("DATABASE_URL_FILE", &*db_file), ("RPC_URL_FILE", &*rpc_file)];
    let (ok, _) = run_and_check_log("ingestor", &env, &range, long).await;
    assert!(ok, "the backfill with secrets from files failed");
    w.assert_balances_at(w.history.end_block).await;
    let env = [("DATABASE_URL_FILE", "/nonexistent/secret"), ("RPC_URL", rpc_url.as_str())];
    let (ok, log) = run_and_check_log("ingestor", &env, &range, long).await;
    assert!(!ok && log.contains("DATABASE_URL_FILE=/nonexistent/secret"), "{log}");
    assert_eq!(log.trim().lines().count(), 1, "one line: {log}");
    std::fs::remove_dir_all(&dir).unwrap();

    // A database that refuses, a node that is not there: errors name the setting, not
    // the secret.
    let dead_db = format!("postgres://postgres:{DB_PASSWORD}@127.0.0.1:9/holders");
    let dead_rpc = format!("http://127.0.0.1:9/v3/{RPC_KEY}");
    let quick = ["--max-attempts", "2", "--max-backoff", "50ms", "--max-outage", "1s"];
    for (db, rpc) in [(dead_db.as_str(), rpc_url.as_str()), (db_url.as_str(), dead_rpc.as_str())] {
        let env = [("DATABASE_URL", db), ("RPC_URL", rpc)];
        let mut args = range.to_vec();
        args.extend(quick);
        let (ok, _) = run_and_check_log("ingestor", &env, &args, long).await;
        assert!(!ok, "the ingestor succeeded against a dead database or node");
    }

    // The query-service, serving and then with its database gone.
    let listen =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let serving = async {
        let mut client = rig::pair::wait_for_client(&format!("http://{listen}")).await.unwrap();
        client
            .get_top_holders(GetTopHoldersRequest { limit: 3, ..Default::default() })
            .await
            .unwrap();
    };
    let args = ["--listen", listen.as_str(), "--metrics-listen", "127.0.0.1:0"];
    let env = [("DATABASE_URL", db_url.as_str())];
    let (ok, _) = tokio::join!(
        run_and_check_log("query-service", &env, &args, Duration::from_secs(4)),
        serving
    )
    .0;
    assert!(!ok, "the query-service stopped by itself");
    let env = [("DATABASE_URL", dead_db.as_str())];
    run_and_check_log("query-service", &env, &args, Duration::from_secs(4)).await;
}

/// Makes a CA and a server certificate for localhost/127.0.0.1 signed by it (openssl CLI);
/// the paths of ca.pem, cert.pem and key.pem.
pub(crate) async fn certificates(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let run = |args: &[&str]| {
        let out =
            std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test CA"],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &["-keyout", "key.pem", "-out", "server.csr", "-subj", "/CN=localhost"],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
    ["ca.pem", "cert.pem", "key.pem"].map(|f| dir.join(f))
}

/// Makes a client certificate signed by the CA `ca`.pem/.key in `dir` (made by
/// [`certificates`]); the paths of client.pem and client.key.
pub(crate) async fn client_certificate(dir: &std::path::Path, ca: &str) -> [std::path::PathBuf; 2] {
    let run = |args: &[&str]| {
        let out =
            std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=test client",
    ]);
    std::fs::write(
        dir.join("client.cnf"),
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "1",
        "-extfile",
        "client.cnf",
    ]);
    ["client.pem", "client.key"].map(|f| dir.join(f))
}

/// A query-service binary on `listen` serving TLS with this certificate and key, and
/// with `client_ca` asking each client for a certificate from it (mutual TLS).
pub(crate) fn tls_query_service(
    database_url: &str,
    listen: std::net::SocketAddr,
    [cert, key]: [&std::path::Path; 2],
    client_ca: Option<&std::path::Path>,
) -> tokio::process::Child {
    let bin = rig::pair::ingestor_binary().unwrap().with_file_name("query-service");
    let mut command = Command::new(bin);
    command
        .args(["--database-url", database_url, "--listen", &listen.to_string()])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key);
    if let Some(ca) = client_ca {
        command.arg("--tls-client-ca").arg(ca);
    }
    command.stderr(Stdio::null()).kill_on_drop(true).spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_on_a_plaintext_client_is_refused() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    let w = world(small(53)).await;
    w.ingest_all().await;
    let dir = std::env::temp_dir().join(format!("holders-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let [ca, cert, key] = certificates(&dir).await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut child = tls_query_service(&w.db.url, listen, [&cert, &key], None);

    // A client that trusts the CA gets answers.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()))
        .domain_name("localhost");
    let endpoint =
        Endpoint::from_shared(format!("https://{listen}")).unwrap().tls_config(tls).unwrap();
    let started = std::time::Instant::now();
    let channel = loop {
        match endpoint.connect().await {
            Ok(c) => break c,
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no TLS connection: {e:?}"),
        }
    };
    let mut client = proto::pb::holder_service_client::HolderServiceClient::new(channel);
    let top = client
        .get_top_holders(GetTopHoldersRequest { limit: 3, ..Default::default() })
        .await
        .expect("an answer over TLS");
    assert_eq!(top.into_inner().holders.len(), 3);

    // A plaintext client is not.
    let plain = async {
        let mut c = proto::pb::holder_service_client::HolderServiceClient::connect(format!(
            "http://{listen}"
        ))
        .await?;
        c.get_top_holders(GetTopHoldersRequest { limit: 3, ..Default::default() }).await?;
        anyhow::Ok(())
    };
    let refused =
        tokio::time::timeout(Duration::from_secs(10), plain).await.expect("refused in time");
    assert!(refused.is_err(), "a plaintext client got an answer from a TLS server");

    // A bad key path stops the binary with one line naming the flag.
    let bin = rig::pair::ingestor_binary().unwrap().with_file_name("query-service");
    let out = Command::new(bin)
        .args(["--database-url", &w.db.url, "--tls-cert"])
        .arg(&cert)
        .args(["--tls-key", "/nonexistent/key.pem"])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--tls-key") && err.trim().lines().count() == 1, "{err}");
    child.start_kill().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

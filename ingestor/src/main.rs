//! The `ingestor` binary: settings, logging and signals; the work is in the library.

use std::process::ExitCode;

use ingestor::Config;

fn main() -> ExitCode {
    few_malloc_arenas();
    if wants_verify_help() {
        #[allow(clippy::print_stdout)]
        {
            print!("{}", ingestor::config::verify_help());
        }
        return ExitCode::SUCCESS;
    }
    let config = match bootstrap::parse_or_exit::<Config>(
        "ingestor",
        &ingestor::config::SECRETS,
        Config::validate,
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    bootstrap::shutdown::block_on(run(config))
}

/// `ingestor verify --help` (or `-h`, or `help verify`), answered with verify's own
/// settings only.
fn wants_verify_help() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verify = args.iter().any(|a| a == "verify");
    verify && args.iter().any(|a| a == "--help" || a == "-h" || a == "help")
}

async fn run(config: Config) -> ExitCode {
    let otlp = config.otlp_endpoint.as_deref();
    let telemetry = match bootstrap::telemetry::init_or_exit(config.log_format, "ingestor", otlp) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let code = work(config).await;
    telemetry.shutdown().await;
    code
}

async fn work(config: Config) -> ExitCode {
    if let Some(ingestor::config::Command::Verify { sample, json, cross_check, cross_check_span }) =
        config.command
    {
        return verify(&config, sample, json, cross_check.then_some(cross_check_span)).await;
    }
    let shutdown = bootstrap::shutdown::on_signal();
    let grace = config.shutdown_grace;
    match bootstrap::shutdown::within_grace(
        ingestor::run(config, shutdown.clone()),
        &shutdown,
        grace,
    )
    .await
    {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            if let Some(bad) = e.chain().find_map(|c| c.downcast_ref::<ingestor::Misconfigured>()) {
                // One line naming the setting, as for a bad flag.
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("ingestor: error: {}", bootstrap::one_line(&bad.0));
                }
                return ExitCode::from(2);
            }
            tracing::error!(error = format!("{e:#}"), "ingestor stopped");
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    }
}

/// `ingestor verify`: the report on stdout; exit 0 when everything matches, 1 on a
/// mismatch, 2 when it could not check.
#[allow(clippy::print_stdout)]
async fn verify(config: &Config, sample: Option<u64>, json: bool, cross: Option<u64>) -> ExitCode {
    match ingestor::verify_store(config, sample, cross).await {
        Ok(checked) => {
            let ok = |(report, cross): &ingestor::Verified| {
                report.matches() && cross.as_ref().is_none_or(|c| c.diffs.is_empty())
            };
            let differ: Vec<String> =
                checked.iter().filter(|c| !ok(c)).map(|c| c.0.token.to_checksum(None)).collect();
            if json {
                let one = |(report, cross): &ingestor::Verified| {
                    let mut out = report.to_json();
                    if let Some(c) = cross {
                        out["cross_check"] = c.to_json();
                    }
                    out
                };
                // One token: its report, as before token sets; several: each, and which differ.
                let out = match checked.as_slice() {
                    [only] => one(only),
                    all => serde_json::json!({
                        "ok": differ.is_empty(),
                        "differ": differ,
                        "tokens": all.iter().map(one).collect::<Vec<_>>(),
                    }),
                };
                println!("{out}");
            } else {
                for (report, cross) in &checked {
                    println!("{}", report.summary());
                    for m in &report.mismatches {
                        println!(
                            "mismatch {} stored {} on chain {}",
                            m.address, m.stored, m.on_chain
                        );
                    }
                    if let Some(c) = cross {
                        println!("{}", c.summary());
                        for d in &c.diffs {
                            println!(
                                "range {}..={}: --rpc-url #1 {} logs, #2 {} logs, store {}",
                                d.from, d.to, d.nodes[0], d.nodes[1], d.stored
                            );
                        }
                    }
                }
                if checked.len() > 1 {
                    if differ.is_empty() {
                        println!("verify: all {} tokens match", checked.len());
                    } else {
                        println!(
                            "verify: {} of {} tokens differ: {}",
                            differ.len(),
                            checked.len(),
                            differ.join(", ")
                        );
                    }
                }
            }
            ExitCode::from(if differ.is_empty() { 0 } else { 1 })
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "ok": null, "error": format!("{e:#}") }));
            } else {
                println!("verify could not check: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

/// glibc gives each thread that allocates an arena of its own and keeps what a batch freed
/// in it for that thread: a backfill's peak RSS grows with the threads that ever touched a
/// batch. Two arenas hold it near one batch and a half (measured in docs/performance.md).
/// Before any thread is started.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no thread is running yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

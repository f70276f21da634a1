//! What both binaries share: parsing settings (with errors on one line that name the
//! setting), addresses and durations read the same way, error chains in log
//! lines, and the NOTIFY channel they meet on in Postgres; [`shutdown`] turns SIGTERM or
//! SIGINT into one token handed down by value; [`listen`] binds the auxiliary ports;
//! [`metrics`] serves Prometheus; [`telemetry`] sets up logs and OpenTelemetry traces.

pub mod listen;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

use std::process::ExitCode;
use std::time::Duration;

use alloy_primitives::Address;
use clap::Parser;

/// The Postgres NOTIFY channel on which the ingestor announces every commit and rollback
/// (delivered when its transaction commits), and on which the query-service's live feed
/// listens. The payload is the token (hex) and its newest sequence number: `<hex>:<seq>`.
pub const NOTIFY_CHANNEL: &str = "holders_transfers";

/// A setting that carries a secret, as (flag, environment variable): it can also come
/// from a file named by the variable with `_FILE` appended (a mounted Kubernetes or
/// Docker secret), so that it appears neither in the process list nor in the pod spec.
pub type Secret = (&'static str, &'static str);

/// Parses the settings of binary `name`. `--help` and `--version` print and exit 0 (help
/// lists the `_FILE` variables of `secrets`); a bad or missing setting prints one line
/// naming it and exits 2; `validate` checks the rules between settings. A secret setting
/// given neither as a flag nor in its variable is read from the file its `_FILE` variable
/// names; given both ways, it is refused, naming both.
pub fn parse_or_exit<C: Parser>(
    name: &str,
    secrets: &[Secret],
    validate: impl FnOnce(&C) -> Result<(), String>,
) -> Result<C, ExitCode> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    for &(flag, var) in secrets {
        let in_env = std::env::var_os(var).is_some_and(|v| !v.is_empty());
        let as_flag = args
            .iter()
            .any(|a| a.to_str().is_some_and(|a| a == flag || a.starts_with(&format!("{flag}="))));
        let Some(path) = std::env::var_os(format!("{var}_FILE")).filter(|p| !p.is_empty()) else {
            continue;
        };
        if in_env || as_flag {
            let other = if as_flag { flag.to_string() } else { var.to_string() };
            return Err(config_error(
                name,
                &format!("{other} and {var}_FILE are both set: keep one of them"),
            ));
        }
        match std::fs::read_to_string(&path) {
            // Passed to the parser only, not to the OS: the process list shows no secret.
            Ok(value) => args.extend([flag.into(), value.trim().into()]),
            Err(e) => {
                return Err(config_error(
                    name,
                    &format!("{var}_FILE={}: cannot read it: {e}", path.to_string_lossy()),
                ));
            }
        }
    }
    let files: Vec<String> =
        secrets.iter().map(|(flag, var)| format!("  {var}_FILE  a file holding {flag}")).collect();
    let mut command = C::command();
    if !files.is_empty() {
        command = command.after_help(format!(
            "Secrets may come from files instead (each variable names a file):\n{}",
            files.join("\n")
        ));
    }
    let config = match command.try_get_matches_from(args).and_then(|m| C::from_arg_matches(&m)) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return Err(ExitCode::SUCCESS);
        }
        Err(e) => return Err(config_error(name, &e.to_string())),
    };
    validate(&config).map_err(|e| config_error(name, &e))?;
    Ok(config)
}

/// Prints `message` (clap's, or ours) as one line and returns exit code 2.
#[allow(clippy::print_stderr)]
fn config_error(name: &str, message: &str) -> ExitCode {
    let lines = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with("Usage:"));
    let line = lines.collect::<Vec<_>>().join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    eprintln!("{name}: error: {line}");
    ExitCode::from(2)
}

/// `text` on one line: line breaks and other control characters become spaces, runs of
/// spaces one, at most 500 characters (cut with …).
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(512));
    let mut space = false;
    for c in text.chars() {
        if c.is_control() || c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if out.chars().count() >= 500 {
            out.push('…');
            return out;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Shows an error with its sources, `outer: inner: innermost`, for log lines (a typed
/// error's `Display` shows only its own level).
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// Why a string is not an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// Not `0x` and 40 hex digits.
    Malformed,
    /// Mixed case, but not the EIP-55 checksum of this address.
    Checksum,
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Malformed => "not an address (0x and 40 hex digits)",
            Self::Checksum => "a mixed-case address that fails its EIP-55 checksum",
        })
    }
}

impl std::error::Error for AddressError {}

/// Parses a `0x`-prefixed address. All-lowercase and all-uppercase are accepted as they
/// are; mixed case claims an EIP-55 checksum, which must be right.
pub fn parse_address(s: &str) -> Result<Address, AddressError> {
    let hex = s.strip_prefix("0x").ok_or(AddressError::Malformed)?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AddressError::Malformed);
    }
    let mixed =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    if mixed {
        Address::parse_checksummed(s, None).map_err(|_| AddressError::Checksum)
    } else {
        s.parse().map_err(|_| AddressError::Malformed)
    }
}

/// Parses `250ms`, `2s`, `5m` or `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let bad = || format!("'{s}' is not a duration like 500ms, 2s or 5m");
    let n: u64 = n.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(bad),
        "h" => n.checked_mul(3600).map(Duration::from_secs).ok_or_else(bad),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_eip55() {
        let dog = "0xBAac2B4491727D78D2b78815144570b9f2Fe8899";
        assert_eq!(parse_address(dog).unwrap(), parse_address(&dog.to_lowercase()).unwrap());
        assert!(parse_address(&format!("0x{}", dog[2..].to_uppercase())).is_ok());
        assert_eq!(
            parse_address("0xBAAc2B4491727D78D2b78815144570b9f2Fe8899"),
            Err(AddressError::Checksum)
        );
        for bad in [
            "",
            "0x",
            "0x1234",
            "baac2b4491727d78d2b78815144570b9f2fe8899",
            "0xzzac2b4491727d78d2b78815144570b9f2fe8899",
        ] {
            assert_eq!(parse_address(bad), Err(AddressError::Malformed), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("fast").is_err());
    }
}

//! Why a store call failed, and whether repeating it can help.

use std::borrow::Cow;

use crate::retry::Transient;

/// A failed store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres refused a statement, or the connection failed under it.
    #[error("{what}")]
    Database {
        /// What the store was doing.
        what: Cow<'static, str>,
        /// Postgres' error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection could be had from the pool.
    #[error("connecting to the database")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The database URL or pool settings are wrong.
    #[error("{0}")]
    Config(String),
    /// The store refused the write: it would break an invariant (a gap after the
    /// checkpoint, a rollback above it, a token without a row, a transfer without a time).
    #[error("{0}")]
    Refused(String),
}

impl StoreError {
    /// A Postgres failure while doing `what`.
    pub fn database(what: impl Into<Cow<'static, str>>, source: tokio_postgres::Error) -> Self {
        Self::Database { what: what.into(), source }
    }
}

impl Transient for StoreError {
    /// The database was unreachable, the connection broke, or the server asked to retry.
    /// A repeated commit is safe (see [`super::Store::commit`]); a refused batch, a SQL
    /// error, a database that does not exist or credentials it refuses are not transient:
    /// they are named at once.
    fn is_transient(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            Self::Pool(deadpool_postgres::PoolError::Backend(source)) => is_outage(source),
            Self::Pool(_) => true,
            Self::Database { source, .. } => {
                is_outage(source)
                    || source.code().is_some_and(|c| {
                        *c == SqlState::T_R_SERIALIZATION_FAILURE
                            || *c == SqlState::T_R_DEADLOCK_DETECTED
                    })
            }
            Self::Config(_) | Self::Refused(_) => false,
        }
    }

    /// The database is away: unreachable, restarting, failing over, or full of
    /// connections. Waited for, however long it takes (unless `--max-outage`).
    fn is_outage(&self) -> bool {
        match self {
            Self::Pool(deadpool_postgres::PoolError::Backend(source)) => is_outage(source),
            Self::Pool(
                deadpool_postgres::PoolError::Timeout(_) | deadpool_postgres::PoolError::Closed,
            ) => true,
            Self::Database { source, .. } => is_outage(source),
            _ => false,
        }
    }
}

/// Whether `e` says the server is away rather than that the statement or the settings
/// are wrong: no SQLSTATE (the connection itself failed), class 08 (connection
/// exception), a shutdown or start-up in progress, or too many connections.
fn is_outage(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    match e.code() {
        // No SQLSTATE is also a parameter that could not be encoded, or a column not
        // decoded: our bug, not an outage. The connection failed only when it is closed,
        // an I/O error lies beneath, or the client says it could not connect or talk.
        None => {
            let text = e.to_string();
            e.is_closed()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                || [
                    "error connecting",
                    "timeout waiting",
                    "error communicating",
                    "unexpected message",
                ]
                .iter()
                .any(|p| text.starts_with(p))
        }
        Some(code) => {
            [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
            ]
            .contains(code)
                || code.code().starts_with("08")
        }
    }
}

/// `.what("reading the token row")` on a Postgres result: the error says what the store
/// was doing, like anyhow's context, but stays typed.
pub(crate) trait What<T> {
    /// Names what failed.
    fn what(self, what: impl Into<Cow<'static, str>>) -> Result<T, StoreError>;
}

impl<T> What<T> for Result<T, tokio_postgres::Error> {
    fn what(self, what: impl Into<Cow<'static, str>>) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::database(what, e))
    }
}

/// The store's results.
pub type StoreResult<T> = Result<T, StoreError>;

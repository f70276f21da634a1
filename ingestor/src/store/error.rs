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
    /// A repeated commit is safe (see [`super::Store::commit`]); a refused batch or a SQL
    /// error is not transient.
    fn is_transient(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            Self::Pool(_) => true,
            Self::Database { source, .. } => match source.code() {
                // No SQLSTATE: the connection itself failed.
                None => true,
                Some(code) => {
                    [
                        SqlState::T_R_SERIALIZATION_FAILURE,
                        SqlState::T_R_DEADLOCK_DETECTED,
                        SqlState::ADMIN_SHUTDOWN,
                        SqlState::CRASH_SHUTDOWN,
                        SqlState::CANNOT_CONNECT_NOW,
                        SqlState::TOO_MANY_CONNECTIONS,
                    ]
                    .contains(code)
                        || code.code().starts_with("08")
                }
            },
            Self::Config(_) | Self::Refused(_) => false,
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

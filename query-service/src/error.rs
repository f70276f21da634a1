//! The failures a request can meet, and the one place they become gRPC statuses. SQL text
//! never reaches a caller; the details go to the log.

use tonic::{Code, Status};

/// The retry hint of a stream refused at the stream limit: streams are long, so a place
/// frees at the pace clients leave, not in milliseconds.
const STREAM_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The caller sent a bad value.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field at fault.
        field: String,
        /// What is wrong and what to send instead.
        message: String,
    },
    /// The token asked for is not indexed.
    #[error("{0}")]
    NotFound(String),
    /// The store cannot answer yet (nothing indexed, schema missing).
    #[error("{0}")]
    NotReady(String),
    /// The database is unreachable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// This store is behind what the request needs (`min_block`): another replica may
    /// have it.
    #[error("{0}")]
    Lagging(String),
    /// The query ran past the statement timeout.
    #[error("the query took too long")]
    TooSlow,
    /// As many streams are open as the server allows.
    #[error("{0} streams are open, the most this server allows; retry later")]
    TooManyStreams(usize),
    /// Expensive work is at its limit and none finished within the wait; worth a retry
    /// after the duration.
    #[error("{0}")]
    Busy(String, std::time::Duration),
    /// The server is shutting down; a stream resumes elsewhere from its last cursor.
    #[error("the server is shutting down; resume with your last cursor")]
    ShuttingDown,
    /// The live feed stopped under a stream.
    #[error("the feed stopped")]
    FeedStopped,
    /// The API key a stream was opened with left the keys file.
    #[error("the API key of this call was revoked")]
    Revoked,
    /// Anything else: a bug or a broken store.
    #[error("internal error")]
    Internal(String),
}

impl QueryError {
    /// A bad value in `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}

impl From<deadpool_postgres::PoolError> for QueryError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        Self::Unavailable(match &e {
            PoolError::Backend(e) => cause_class(e).to_string(),
            PoolError::Timeout(_) => "no database connection came free in time".to_string(),
            other => other.to_string(),
        })
    }
}

/// Why a connection could not be had, in words an operator acts on (the details, which
/// may hold more than a caller should see, go to the log).
fn cause_class(e: &tokio_postgres::Error) -> &'static str {
    match e.code().map(|c| c.code()) {
        Some(c) if c.starts_with("28") => {
            "the database refused this service's credentials (check --database-url)"
        }
        Some("3D000") => "the database named in --database-url does not exist",
        Some(c) if c.starts_with("53") => "the database is out of connections or resources",
        Some(c) if c.starts_with("57P") => "the database is starting up or shutting down",
        _ => "the database cannot be reached",
    }
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match e.code() {
            // No SQLSTATE: the connection failed, unless a value could not be encoded or
            // decoded, or a row was not as expected (a bug of ours, not an outage).
            None if [
                "error serializing",
                "error deserializing",
                "invalid column",
                "expected",
                "query returned an unexpected",
            ]
            .iter()
            .any(|p| e.to_string().starts_with(p)) =>
            {
                Self::Internal(e.to_string())
            }
            None => Self::Unavailable("the database cannot be reached".into()),
            Some(c) if *c == SqlState::QUERY_CANCELED => Self::TooSlow,
            Some(c) if *c == SqlState::UNDEFINED_TABLE => Self::NotReady(
                "the database has no schema yet: start the ingestor once to migrate it".into(),
            ),
            Some(c)
                if c.code().starts_with("08")
                    || c.code().starts_with("57P")
                    || *c == SqlState::TOO_MANY_CONNECTIONS =>
            {
                Self::Unavailable(e.to_string())
            }
            Some(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<QueryError> for Status {
    fn from(e: QueryError) -> Self {
        let code = match &e {
            QueryError::Invalid { .. } => Code::InvalidArgument,
            QueryError::NotFound(_) => Code::NotFound,
            QueryError::NotReady(_) => Code::FailedPrecondition,
            QueryError::Unavailable(_) | QueryError::Lagging(_) => Code::Unavailable,
            QueryError::TooSlow => Code::DeadlineExceeded,
            QueryError::TooManyStreams(_) | QueryError::Busy(..) => Code::ResourceExhausted,
            QueryError::ShuttingDown | QueryError::FeedStopped => Code::Unavailable,
            QueryError::Revoked => Code::Unauthenticated,
            QueryError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Code::Internal
            }
        };
        if matches!(e, QueryError::Unavailable(_)) {
            tracing::warn!(error = %e, "database unavailable");
        }
        // Refusals under load say when to try again (google.rpc.RetryInfo), so clients back
        // off by the server's word rather than guess.
        let retry = match &e {
            QueryError::Busy(_, retry) => Some(*retry),
            QueryError::TooManyStreams(_) => Some(STREAM_RETRY),
            _ => None,
        };
        let message = match e {
            QueryError::Busy(message, _) => message,
            e => e.to_string(),
        };
        match retry {
            Some(retry) => {
                use tonic_types::StatusExt;
                let details = tonic_types::ErrorDetails::with_retry_info(Some(retry));
                Self::with_error_details(code, message, details)
            }
            None => Self::new(code, message),
        }
    }
}

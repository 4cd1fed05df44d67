use std::path::PathBuf;

/// What a caller should do about a [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Someone else appended first: reload the state and redo the work.
    Conflict,
    /// The request itself is wrong (bad seqs, duplicate event id): retrying
    /// it unchanged fails again.
    Invalid,
    /// The store could not serve the request right now: retry with backoff.
    Transient,
    /// Configuration, corruption or an unexpected backend failure: retrying
    /// will not help; alert an operator.
    Fatal,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "append conflict for user {user_id}: expected last seq {expected}, log is at {actual}"
    )]
    Conflict {
        user_id: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid append for user {user_id}: {reason}")]
    InvalidEvents { user_id: String, reason: String },
    #[error("append for user {user_id} repeats an event id already stored")]
    DuplicateEvent { user_id: String },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("data directory {} is in use by another process", dir.display())]
    DirInUse { dir: PathBuf },
    #[error("database {} has schema version {found}, newer than the {supported} this build knows; upgrade colloquy", path.display())]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database {database} is not ready for this build: {detail}; run `colloquy migrate`")]
    NotMigrated { database: String, detail: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("storage backend: {message}")]
    Backend { message: String, retryable: bool },
}

/// The embedded stores' segment files and directory lock.
impl From<colloquy_segments::Error> for StoreError {
    fn from(e: colloquy_segments::Error) -> StoreError {
        match e {
            colloquy_segments::Error::Io { context, source } => StoreError::Io { context, source },
            colloquy_segments::Error::Damaged { path, at, follows } => {
                let path = path.display();
                StoreError::Corrupt(match follows {
                    None => format!("{path}: the record at byte {at} is damaged"),
                    Some(later) => format!(
                        "{path}: the record at byte {at} is damaged but a whole one follows at byte {later}"
                    ),
                })
            }
            colloquy_segments::Error::Locked { dir } => StoreError::DirInUse { dir },
        }
    }
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Conflict { .. } => ErrorKind::Conflict,
            StoreError::InvalidEvents { .. } | StoreError::DuplicateEvent { .. } => {
                ErrorKind::Invalid
            }
            StoreError::Unavailable(_)
            | StoreError::Backend {
                retryable: true, ..
            } => ErrorKind::Transient,
            StoreError::DirInUse { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::NotMigrated { .. }
            | StoreError::Config(_)
            | StoreError::Corrupt(_)
            | StoreError::Io { .. }
            | StoreError::Backend {
                retryable: false, ..
            } => ErrorKind::Fatal,
        }
    }

    /// Whether the same request may succeed if simply tried again later.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// A configuration that picks a backend this build left out: `what`
    /// names the choice (`store.backend = "mysql"`), `feature` the cargo
    /// feature that builds the backend in.
    pub(crate) fn not_built(what: &str, feature: &str) -> StoreError {
        StoreError::Config(format!(
            "{what} needs a colloquy built with the `{feature}` cargo feature (it is on by default)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_left_out_is_a_configuration_error_naming_its_feature() {
        let e = StoreError::not_built("store.backend = \"mysql\"", "mysql");
        assert_eq!(e.kind(), ErrorKind::Fatal);
        assert_eq!(
            e.to_string(),
            "invalid configuration: store.backend = \"mysql\" needs a colloquy built with the \
             `mysql` cargo feature (it is on by default)"
        );
    }
}

use std::path::PathBuf;

/// What a caller should do about a [`BusError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The bus is at its bound: nothing was stored; back off and retry (the
    /// gateway answers 503 with Retry-After).
    Full,
    /// A passing failure: retry with backoff.
    Transient,
    /// The request itself is wrong (unknown topic, bad name, offset out of
    /// range, record too large): retrying it unchanged fails again.
    Invalid,
    /// Configuration, corruption or a failed disk: retrying will not help;
    /// alert an operator.
    Fatal,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("topic {topic} is full: {backlog} records not yet consumed")]
    Full { topic: String, backlog: u64 },
    #[error("topic {topic} has too many publishes waiting to be written")]
    Overloaded { topic: String },
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("topic {topic} has {existing} partitions, not {requested}")]
    PartitionMismatch {
        topic: String,
        existing: u32,
        requested: u32,
    },
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("record of {size} bytes is over the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    #[error("offset {offset} of {topic}/{partition} is outside {start}..={end}")]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        start: u64,
        end: u64,
    },
    #[error("invalid bus configuration: {0}")]
    Config(String),
    #[error("data directory {} is in use by another process", dir.display())]
    DirInUse { dir: PathBuf },
    #[error("corrupt log: {0}")]
    Corrupt(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A write to this partition failed earlier; what reached the disk is
    /// unknown until the log is scanned again, so it takes no more writes.
    #[error("partition {topic}/{partition} failed a write; reopen the bus to recover")]
    Failed { topic: String, partition: u32 },
    #[error("the bus is closed")]
    Closed,
    /// A Kafka client or broker error; `kind` says whether it passes
    /// (broker unreachable, leader moving, timeout) or not (authorization,
    /// configuration). After a failed publish the record may still have
    /// been stored, so a retry may store it twice (consumers are idempotent).
    #[cfg(feature = "kafka")]
    #[error("{context}: {source}")]
    Kafka {
        context: String,
        kind: ErrorKind,
        source: rdkafka::error::KafkaError,
    },
}

/// The embedded backend's segment files and directory lock.
impl From<colloquy_segments::Error> for BusError {
    fn from(e: colloquy_segments::Error) -> BusError {
        match e {
            colloquy_segments::Error::Io { context, source } => BusError::Io { context, source },
            e @ colloquy_segments::Error::Damaged { .. } => BusError::Corrupt(e.to_string()),
            colloquy_segments::Error::Locked { dir } => BusError::DirInUse { dir },
        }
    }
}

impl BusError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BusError::Full { .. } | BusError::Overloaded { .. } => ErrorKind::Full,
            BusError::UnknownTopic(_)
            | BusError::UnknownPartition { .. }
            | BusError::PartitionMismatch { .. }
            | BusError::InvalidName { .. }
            | BusError::RecordTooLarge { .. }
            | BusError::OffsetOutOfRange { .. } => ErrorKind::Invalid,
            BusError::Config(_)
            | BusError::DirInUse { .. }
            | BusError::Corrupt(_)
            | BusError::Io { .. }
            | BusError::Failed { .. }
            | BusError::Closed => ErrorKind::Fatal,
            #[cfg(feature = "kafka")]
            BusError::Kafka { kind, .. } => *kind,
        }
    }

    /// Whether the same request may succeed if simply tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Full | ErrorKind::Transient)
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BusError {
        let context = context.into();
        move |source| BusError::Io { context, source }
    }
}

//! Error type of the store.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// On-disk data is damaged in a way recovery must not silently repair
    /// (for example a bad record followed by valid records). `offset` is the
    /// byte offset inside `file`.
    #[error("corruption in {}: at offset {offset}: {reason}", file.display())]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage inside `file`.
        offset: u64,
        /// What was found.
        reason: String,
    },
    /// A message (encoded record) exceeds the configured maximum size.
    #[error("message too large: {size} bytes (max {max})")]
    MessageTooLarge {
        /// Encoded record size.
        size: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// Another process (or another open store in this one) holds the data
    /// dir; `pid` is the holder's, when it could be read from the lock file.
    #[error("data dir {} is in use by {}", dir.display(), match pid { Some(p) => format!("pid {p}"), None => "another process (pid unknown)".to_string() })]
    Locked {
        /// The data dir.
        dir: PathBuf,
        /// The holder's pid.
        pid: Option<u32>,
    },
    /// No space left to create or grow a file; reads keep working.
    #[error("disk full")]
    DiskFull,
    /// Configuration rejected by `StoreConfig::validate`.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Invalid argument from the caller (empty topic, too many bytes in a field, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The index service failed.
    #[error("index: {0}")]
    Index(String),
    /// The store was closed, or a background thread is gone.
    #[error("store closed")]
    Closed,
    /// Replicated bytes that do not continue this log exactly (a slave
    /// never writes them).
    #[error("replication: {0}")]
    Replica(#[from] crate::replica::ReplicaError),
    /// Any other I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Maps an I/O error, turning `ENOSPC`/`EDQUOT` into [`Error::DiskFull`].
    pub(crate) fn from_io(e: std::io::Error) -> Error {
        match e.raw_os_error() {
            Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => Error::DiskFull,
            _ if e.kind() == std::io::ErrorKind::StorageFull => Error::DiskFull,
            _ => Error::Io(e),
        }
    }

    /// Builds a corruption error.
    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}

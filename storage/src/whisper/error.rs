//! Errors of whisper operations. Messages reuse Python whisper's wording where it
//! has one, so scripts that match on `whisper-*.py` output keep working.

use std::io;
use std::path::PathBuf;

/// Result of a whisper operation.
pub type Result<T, E = WhisperError> = std::result::Result<T, E>;

/// Everything that can go wrong reading or writing a whisper file.
#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    /// The operating system refused a read, write, open or lock.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file is not a whisper file, or is truncated or damaged.
    #[error("{reason} ({path})")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An archive list that whisper would refuse to create.
    #[error("{0}")]
    InvalidConfiguration(String),
    /// A retention definition such as `10s:1d` that does not parse.
    #[error("{0}")]
    InvalidRetention(String),
    /// An aggregation method name whisper does not know.
    #[error("Unrecognized aggregation method: {0}")]
    InvalidAggregationMethod(String),
    /// An xFilesFactor that is not a number between 0 and 1.
    #[error("{0}")]
    InvalidXFilesFactor(String),
    /// `from` is after `until`.
    #[error("Invalid time interval: from time '{from}' is after until time '{until}'")]
    InvalidTimeInterval {
        /// Requested start.
        from: i64,
        /// Requested end.
        until: i64,
    },
    /// A single update whose timestamp is in the future or older than the file keeps.
    #[error("Timestamp not covered by any archives in this database.")]
    TimestampNotCovered,
    /// `archiveToSelect` names a precision the file has no archive for.
    #[error("Invalid granularity: {0}")]
    InvalidGranularity(u64),
    /// A timestamp that a 32-bit unsigned whisper slot cannot hold.
    #[error("timestamp {0} cannot be stored in a whisper file (it must be within 0..=4294967295)")]
    TimestampOutOfRange(i64),
    /// `merge` of two files whose archives differ.
    #[error("{from} and {to} archive configurations are unalike. Resize the input before merging")]
    ArchivesDiffer {
        /// Source file.
        from: PathBuf,
        /// Destination file.
        to: PathBuf,
    },
    /// A file that `create` would overwrite.
    #[error("File {0} already exists!")]
    AlreadyExists(PathBuf),
}

impl WhisperError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        WhisperError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        WhisperError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

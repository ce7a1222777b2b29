//! The errors a relay, agent or receiver reports when it cannot start: a
//! setting that cannot work, an address it cannot listen on, a file or
//! directory it cannot use. Each message says what to change.

/// Why a service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work; the message names it and what to use.
    #[error("{0}")]
    Config(String),
    /// An address that cannot be listened on.
    #[error(
        "cannot listen for {what} on {addr}: {source} (in use, or not an address of this host?)"
    )]
    Bind {
        /// The protocol.
        what: String,
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file or directory that cannot be used.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster a relay follows could not be asked.
    #[error("{0}")]
    Cluster(String),
}

impl Error {
    /// A setting refused with `message`.
    pub fn config(message: impl Into<String>) -> Error {
        Error::Config(message.into())
    }

    /// An I/O failure while doing `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

//! The whisper file format, compatible byte for byte with Python whisper 1.1.10.
//!
//! A file is a header (metadata, then one `offset, secondsPerPoint, points`
//! entry per archive) followed by the archives, each a ring of 12-byte
//! big-endian `(u32 timestamp, f64 value)` points whose slot is found from the
//! archive's first ("base") point. Every algorithm here follows whisper's own,
//! including its quirks, so that files written by graunt and by Python whisper
//! are interchangeable; the few deliberate differences are documented where
//! they are made (never writing outside an archive, errors instead of crashes).
//!
//! The entry points: [`create`], [`WhisperFile`] (open, then `update`,
//! `update_many`, `fetch`), [`merge`], [`fill`], [`set_aggregation`].

mod blocks;
mod error;
mod fetch;
mod file;
mod format;
mod paged;
mod pyset;
mod retention;
mod tools;
mod update;

pub use blocks::Blocks;
pub use error::{Result, WhisperError};
pub use fetch::{fetch, fetch_archive, fetch_window, Series, EVERY_SLOT};
pub use file::{create, create_atomic, create_in, layout, CreateOptions, WhisperFile};
pub use format::{
    aggregate, encode_header, AggregationMethod, ArchiveInfo, Header, ARCHIVE_INFO_SIZE,
    METADATA_SIZE, POINT_SIZE,
};
pub use pyset::set_iteration_order;
pub use retention::{parse_precision, parse_retention, validate_archive_list, Retention};
pub use tools::{fill, fill_missing, merge, migrate, set_aggregation};
pub use update::{update, update_many};

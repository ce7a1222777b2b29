//! graunt-storage: the bottom layer of graunt, importing nothing else of ours.
//!
//! - [`whisper`]: the whisper file format, read and written byte for byte as
//!   Python whisper 1.1.10 does, over any [`whisper::Blocks`] (a file or a buffer).
//! - [`schema`]: carbon's `storage-schemas.conf` and `storage-aggregation.conf`.
//! - [`metric`]: which names are accepted and where their files live.
//! - [`names`]: the tree of metric names in memory, for `find` and globs.
//! - [`events`]: graphite-web's events (annotations) and their file.
//! - [`tags`]: tagged series (`name;tag=value`): parsing, normalising,
//!   their files, tag expressions.
//! - [`store`]: a node's storage, tying together [`cache`], [`wal`] and [`writer`].
//!
//! ```text
//! receivers ──Store::accept──▶ wal (append) ──▶ cache ──writer──▶ whisper files
//!                                                 │                   │
//! reads ◀──────────────Store::fetch (whisper overlaid with cache)─────┘
//! ```

pub mod cache;
pub mod conf;
pub mod events;
pub mod find;
pub mod metric;
pub mod names;
pub mod schema;
pub mod store;
pub mod tagindex;
pub mod tags;
pub mod wal;
pub mod whisper;
pub mod writer;

pub use cache::Datapoint;

//! graunt-query: graphite-web's query language, independent of HTTP.
//!
//! - [`time`]: graphite's time expressions (`-1h`, `now-1d`, `midnight`,
//!   `HH:MM_YYYYMMDD`, epoch seconds), as `from`/`until`/`now` take them.
//! - [`parser`]: target expressions (`sumSeries(a.*.b)`, keyword arguments,
//!   strings, numbers, booleans, `None`) into a syntax tree, with errors that
//!   name the position.
//!
//! - [`series`], [`eval`], [`functions`]: evaluating a target into series
//!   over a [`eval::Source`], as graphite-web does.
//! - [`source`]: the node's own store as a [`eval::Source`], and
//!   [`source::Sources`], which the web layer asks for the source of one
//!   request (the node's store alone, or the whole cluster).
//! - [`fold`]: aggregations a cluster folds where the data is.
//! - [`pyfmt`]: Python's number formatting, for names such as `scale(a,2)`.
//!
//! It sits on graunt-storage; graunt-cluster implements [`eval::Source`]
//! over the cluster, and the node's HTTP layer calls it.

pub mod eval;
pub mod fold;
pub mod functions;
pub mod parser;
pub mod pyfmt;
pub mod series;
pub mod source;
pub mod time;

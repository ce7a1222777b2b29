//! graunt-query: graphite-web's query language, independent of HTTP.
//!
//! - [`time`]: graphite's time expressions (`-1h`, `now-1d`, `midnight`,
//!   `HH:MM_YYYYMMDD`, epoch seconds), as `from`/`until`/`now` take them.
//! - [`parser`]: target expressions (`sumSeries(a.*.b)`, keyword arguments,
//!   strings, numbers, booleans, `None`) into a syntax tree, with errors that
//!   name the position.
//!
//! - [`series`], [`eval`], [`functions`]: evaluating a target into series
//!   over a [`eval::Source`] (the node's store), as graphite-web does.
//! - [`pyfmt`]: Python's number formatting, for names such as `scale(a,2)`.
//!
//! It sits beside the node, on graunt-storage; the node's HTTP layer calls it.

pub mod eval;
pub mod functions;
pub mod parser;
pub mod pyfmt;
pub mod series;
pub mod time;

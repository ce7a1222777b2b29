//! graunt, the node: the wiring of one binary over the role crates.
//!
//! - [`serve`]: `graunt serve` as a library call (bound listeners, a
//!   validated [`serve::ServeConfig`], a shutdown signal): the node's sink
//!   (write-ahead log and cache) behind graunt-relay's receivers, carbonlink,
//!   statsd, self-metrics and the HTTP port.
//! - [`web`]: graphite-web's HTTP API, graphs and the UI, over the
//!   graunt-query source each request opens (this node, or the cluster).
//! - [`cli`]: the command line: `serve`, `relay`, `agent`, `cluster`,
//!   `whisper`, `health`.
//!
//! ```text
//! socket ─▶ graunt_relay::receive ─▶ serve::sink::StoreSink ─▶ graunt_storage::Store ─▶ .wsp
//! /render ─▶ web::render ─▶ Sources::open ─▶ graunt_query::eval ─▶ json/csv/png/…
//! ```

pub mod cli;
pub mod serve;
pub mod web;

//! graunt-relay: the ingestion side of graunt, everything between a
//! client's socket and a store or a destination.
//!
//! - [`codec`]: carbon plaintext, carbon pickle, statsd and the
//!   acknowledged-pickle control lines, pure functions over bytes.
//! - [`receive`]: the carbon receivers (plaintext TCP/UDP, pickle) node and
//!   relay share, generic over a [`receive::Sink`], with one set of bounds
//!   ([`receive::Limits`]) and one way of counting refusals; [`ack`]: both
//!   ends of acknowledged pickle over TCP.
//! - [`statsd`]: etsy statsd's aggregation and its listeners.
//! - [`route`]: relay rules and tenant fences over graunt-cluster's hash rings;
//!   [`rules`]: carbon's rewrite rules, whitelist and blacklist files.
//! - [`service`]: `graunt relay` (tenants, router, per-destination queues
//!   with spill, senders, following a cluster); [`agent`]: `graunt agent`.
//! - [`shutdown`], [`net`]: the shutdown signal every task obeys and the
//!   socket plumbing (bind, bounded accept loop, idle reads); [`hangup`]:
//!   SIGHUP for the tasks that re-read their files.
//!
//! ```text
//! client ─▶ receive::{line,pickle} ─▶ Sink ─┬─ node: write-ahead log + cache (graunt)
//!                                           └─ relay: fence ─▶ router ─▶ queue ─▶ ack::Sender ─▶ node
//! statsd ─▶ statsd::listen ─▶ Aggregator ─flush─▶ node store / agent forwarder / relay router
//! ```
//!
//! Every service is a library call taking bound listeners, its validated
//! config and a [`shutdown::Shutdown`], so tests start them in-process.

pub mod ack;
pub mod agent;
pub mod codec;
pub mod duration;
pub mod error;
pub mod hangup;
pub mod net;
pub mod receive;
pub mod route;
pub mod rules;
pub mod service;
pub mod shutdown;
pub mod statsd;
pub mod tls;

pub use error::Error;

//! graunt-relay: the wire side of ingestion. Today: the carbon plaintext
//! codec ([`codec::plaintext`]), the carbon pickle codec ([`codec::pickle`])
//! and the statsd codec ([`codec::statsd`]), pure functions over bytes, and
//! etsy-compatible statsd aggregation ([`statsd`]), shared by `graunt
//! serve`, `graunt agent` and, later, the relay. Hash rings, routing rules, tenants and destination
//! queues arrive with the relay issue.

pub mod codec;
pub mod hashing;
pub mod route;
pub mod statsd;

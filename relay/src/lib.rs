//! graunt-relay: the wire side of ingestion. Today: the carbon plaintext
//! codec ([`codec::plaintext`]) and the carbon pickle codec
//! ([`codec::pickle`]), pure functions over bytes shared by `graunt serve`
//! and, later, the relay. Hash rings, routing rules, tenants and destination
//! queues arrive with the relay issue.

pub mod codec;

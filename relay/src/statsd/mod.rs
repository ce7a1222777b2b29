//! statsd in graunt: the packet parser (`crate::codec::statsd`), etsy
//! statsd 0.9's aggregation ([`aggregate`]), its settings ([`config`]) and
//! the listeners that feed an aggregator and flush it into a sink
//! ([`listen`]), shared by `graunt serve`, `graunt agent` and relay tenants.
//!
//! ```text
//! UDP/TCP packets ─▶ listen ─▶ Aggregator ─every flush_interval─▶ Sink (node store, agent buffer, relay router)
//! ```

pub mod aggregate;
pub mod config;
pub mod listen;

pub use aggregate::{js_number_string, Aggregator, Config, Line};
pub use config::{Listener, StatsdFile};

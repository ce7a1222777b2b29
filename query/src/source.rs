//! Where a request's series come from: [`StoreSource`], one node's store
//! (the whisper tree overlaid with the cache), and [`Sources`], which hands
//! the web layer the source of one request without it knowing whether that
//! is this node alone or the whole cluster.

use std::collections::BTreeSet;
use std::sync::Arc;

use graunt_storage::find;
use graunt_storage::store::Store;

use crate::eval::{EvalError, Source};
use crate::series::Series;

/// Opens the source one request reads from. Called on a blocking thread:
/// an implementation may wait on the network.
pub trait Sources: Send + Sync {
    /// The source of one request; `local` (graphite-web's `local=1`, what
    /// cluster peers ask) limits it to this node's own data.
    fn open(&self, local: bool) -> Box<dyn Source + Send>;

    /// This node's own store.
    fn store(&self) -> &Arc<Store>;
}

/// A node that is no cluster member reads its own store only.
impl Sources for Arc<Store> {
    fn open(&self, _local: bool) -> Box<dyn Source + Send> {
        Box::new(StoreSource(self.clone()))
    }

    fn store(&self) -> &Arc<Store> {
        self
    }
}

/// A [`Source`] over one node's store: find over the whisper tree and the
/// cache's names; fetch with the cache laid over the file.
pub struct StoreSource(pub Arc<Store>);

impl Source for StoreSource {
    /// Every node (branches and leaves) matching `pattern`, sorted, on disk
    /// or only in the cache.
    fn find_nodes(&self, pattern: &str) -> Result<Vec<find::Node>, EvalError> {
        // The cache first: a metric the writer finishes meanwhile leaves the
        // cache only after its file exists, so the disk scan that follows
        // sees it. (The other order can miss it in between.)
        let names = self.0.cache.names();
        let mut nodes: BTreeSet<find::Node> =
            find::find_in_names(names.iter().map(String::as_str), pattern)
                .into_iter()
                .collect();
        nodes.extend(
            find::find(self.0.whisper_dir(), pattern)
                .map_err(|e| EvalError::Storage(e.to_string()))?,
        );
        Ok(nodes.into_iter().collect())
    }

    fn fetch(
        &self,
        path: &str,
        from: i64,
        until: i64,
        now: i64,
    ) -> Result<Option<Series>, EvalError> {
        let fetched = self
            .0
            .fetch(path, from, until, now)
            .map_err(|e| EvalError::Storage(e.to_string()))?;
        Ok(fetched.map(|s| Series::new(path, s.start, s.end, s.step, s.values)))
    }
}

/// The metric paths among found nodes.
pub fn leaves(nodes: Vec<find::Node>) -> Vec<String> {
    nodes
        .into_iter()
        .filter(|n| n.is_leaf)
        .map(|n| n.path)
        .collect()
}

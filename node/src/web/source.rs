//! The node's store as a query source: find over the whisper tree and the
//! cache's names; fetch with the cache laid over the file.

use std::collections::BTreeSet;

use graunt_query::eval::{EvalError, Source};
use graunt_query::series::Series;
use graunt_storage::find;
use graunt_storage::store::Store;

/// A [`Source`] over one node's store.
pub struct StoreSource<'a>(pub &'a Store);

impl StoreSource<'_> {
    /// Every node (branches and leaves) matching `pattern`, sorted, on disk
    /// or only in the cache.
    pub fn find_nodes(&self, pattern: &str) -> Result<Vec<find::Node>, EvalError> {
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
}

/// The metric paths among found nodes.
pub fn leaves(nodes: Vec<find::Node>) -> Vec<String> {
    nodes
        .into_iter()
        .filter(|n| n.is_leaf)
        .map(|n| n.path)
        .collect()
}

impl Source for StoreSource<'_> {
    fn find_leaves(&self, pattern: &str) -> Result<Vec<String>, EvalError> {
        Ok(leaves(self.find_nodes(pattern)?))
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

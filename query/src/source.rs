//! Where a request's series come from: [`StoreSource`], one node's store
//! (the whisper tree overlaid with the cache), and [`Sources`], which hands
//! the web layer the source of one request without it knowing whether that
//! is this node alone or the whole cluster.

use std::collections::BTreeSet;
use std::sync::Arc;

use graunt_storage::find;
use graunt_storage::store::Store;
use graunt_storage::tagindex::{TagAnswer, TagQuery};
use graunt_storage::whisper::EVERY_SLOT;

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
        if graunt_storage::tags::is_tagged(pattern) {
            // As graphite-web's finder: a tagged name is not a glob, it is
            // found as written (normalised) in the cache or on disk.
            let found = graunt_storage::metric::validate_name(pattern).is_ok()
                && (self.0.tags.contains(pattern) || self.0.path_of(pattern).exists());
            return Ok(found
                .then(|| find::Node {
                    path: pattern.to_string(),
                    is_leaf: true,
                })
                .into_iter()
                .collect());
        }
        if self.0.names.is_ready() {
            return self
                .0
                .find(pattern)
                .map_err(|e| EvalError::Storage(e.to_string()));
        }
        // Until the name index has read the disk once, the cache and then
        // the disk: a metric the writer finishes meanwhile leaves the cache
        // only after its file exists, so the disk scan that follows sees
        // it. (The other order can miss it in between.) Tagged names are not
        // part of the tree.
        let names = self.0.cache.names();
        let untagged = names
            .iter()
            .map(String::as_str)
            .filter(|n| !graunt_storage::tags::is_tagged(n));
        let mut nodes: BTreeSet<find::Node> =
            find::find_in_names(untagged, pattern).into_iter().collect();
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
        self.read(path, (from, until, now), EVERY_SLOT)
    }

    fn tags(&self, q: &TagQuery) -> Result<TagAnswer, EvalError> {
        self.0
            .tags
            .answer(q)
            .map_err(|e| EvalError::Tags(e.to_string()))
    }
}

impl StoreSource {
    /// [`Source::fetch_many`], each path cut to the slots that overlap its
    /// window (`[first, end)` in time) when it has one, reading only those
    /// ([`Store::fetch_window`]); `windows` is in the order of `paths`.
    pub fn fetch_windows(
        &self,
        paths: &[String],
        (from, until, now): (i64, i64, i64),
        windows: &[Option<(i64, i64)>],
    ) -> Result<Vec<Option<Series>>, EvalError> {
        let asked: Vec<(&String, (i64, i64))> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (p, windows.get(i).copied().flatten().unwrap_or(EVERY_SLOT)))
            .collect();
        crate::eval::read_each(&asked, |&(path, window)| {
            self.read(path, (from, until, now), window)
        })
    }

    /// One path's slots in `window`, as a [`Series`] named by the path.
    fn read(
        &self,
        path: &str,
        range: (i64, i64, i64),
        window: (i64, i64),
    ) -> Result<Option<Series>, EvalError> {
        let fetched = self
            .0
            .fetch_window(path, range, window)
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

/// A [`Source`] that shows only the series under some name prefixes (a
/// tenant's `namespaces`, like `cust.acme.`): finds list nothing else (a
/// branch shows only as the way down to them), fetches of anything else
/// find nothing. Every read of a request goes through its source, so globs,
/// function arguments and `template()` cannot reach around it.
pub struct Fenced {
    inner: Box<dyn Source + Send>,
    namespaces: Vec<String>,
}

impl Fenced {
    /// `inner` seen through `namespaces`.
    pub fn new(inner: Box<dyn Source + Send>, namespaces: Vec<String>) -> Fenced {
        Fenced { inner, namespaces }
    }

    /// Whether a series may be read.
    fn readable(&self, path: &str) -> bool {
        self.namespaces.iter().any(|n| inside(path, n))
    }

    /// Whether a branch leads to a namespace (or lies inside one).
    fn on_the_way(&self, branch: &str) -> bool {
        self.namespaces.iter().any(|n| {
            inside(branch, n)
                || n.strip_prefix(branch)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }
}

/// Whether `path` is under the namespace `ns` (`cust.acme.` or `cust.acme`:
/// both mean the node `acme` of `cust` and what is below it).
fn inside(path: &str, ns: &str) -> bool {
    let ns = ns.strip_suffix('.').unwrap_or(ns);
    path == ns
        || path
            .strip_prefix(ns)
            .is_some_and(|rest| rest.starts_with('.'))
}

impl Source for Fenced {
    fn find_nodes(&self, pattern: &str) -> Result<Vec<find::Node>, EvalError> {
        Ok(self
            .inner
            .find_nodes(pattern)?
            .into_iter()
            .filter(|n| {
                if n.is_leaf {
                    self.readable(&n.path)
                } else {
                    self.on_the_way(&n.path)
                }
            })
            .collect())
    }

    /// Tagged series under the namespaces only; the tag listings and
    /// autocompletion span every tenant's series, so a tenant gets none.
    fn tags(&self, q: &TagQuery) -> Result<TagAnswer, EvalError> {
        Ok(match q {
            TagQuery::FindSeries { .. } => match self.inner.tags(q)? {
                TagAnswer::Series(s) => {
                    TagAnswer::Series(s.into_iter().filter(|p| self.readable(p)).collect())
                }
                other => other,
            },
            TagQuery::Tags { .. } => TagAnswer::Tags(Vec::new()),
            TagQuery::TagValues { .. } => TagAnswer::Values(None),
            TagQuery::AutoTags { .. }
            | TagQuery::AutoValues { .. }
            | TagQuery::DelSeries { .. } => TagAnswer::Names(Vec::new()),
        })
    }

    fn fetch(
        &self,
        path: &str,
        from: i64,
        until: i64,
        now: i64,
    ) -> Result<Option<Series>, EvalError> {
        if !self.readable(path) {
            return Ok(None);
        }
        self.inner.fetch(path, from, until, now)
    }

    fn fetch_many(
        &self,
        paths: &[String],
        from: i64,
        until: i64,
        now: i64,
    ) -> Result<Vec<Option<Series>>, EvalError> {
        let allowed: Vec<String> = paths.iter().filter(|p| self.readable(p)).cloned().collect();
        let mut fetched = self
            .inner
            .fetch_many(&allowed, from, until, now)?
            .into_iter();
        Ok(paths
            .iter()
            .map(|p| {
                if self.readable(p) {
                    fetched.next().flatten()
                } else {
                    None
                }
            })
            .collect())
    }

    fn partial(&self) -> Vec<(String, String)> {
        self.inner.partial()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_whole_nodes() {
        assert!(inside("cust.acme.web.load", "cust.acme."));
        assert!(inside("cust.acme", "cust.acme"));
        assert!(!inside("cust.acmex.web", "cust.acme."));
        assert!(!inside("cust", "cust.acme."));
    }
}

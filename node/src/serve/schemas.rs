//! Keeps the store's storage schemas and aggregation rules equal to their
//! files (`schemas`, `aggregation`), as carbon re-reads its while running:
//! looked at every 10 s and at SIGHUP, applied to files created from then
//! on, with the sections added, removed or changed in the log. A file that
//! does not parse is refused with its line and the rules in force stay. On
//! a cluster member whose cluster has schemas set, the cluster's win.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use graunt_cluster::member::ClusterNode;
use graunt_storage::schema::{Aggregations, Schemas};
use graunt_storage::store::Store;

/// The node's schema files.
#[derive(Debug, Clone, Default)]
pub struct SchemaFiles {
    /// `storage-schemas.conf`, if not the embedded default.
    pub schemas: Option<PathBuf>,
    /// `storage-aggregation.conf`, if not the embedded default.
    pub aggregation: Option<PathBuf>,
}

/// How often unchanged files are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// One watched file: its stamp and text when last read.
struct Watched {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    text: String,
}

impl Watched {
    fn new(path: PathBuf) -> Watched {
        let stamp = stamp(&path);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        Watched { path, stamp, text }
    }

    /// The new text, when the file changed since it was last read.
    fn changed(&mut self, forced: bool) -> Option<String> {
        let now = stamp(&self.path);
        if now == self.stamp && !forced {
            return None;
        }
        self.stamp = now;
        match std::fs::read_to_string(&self.path) {
            Ok(text) if text != self.text => Some(text),
            Ok(_) => None,
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "cannot read the file; the rules in force stay");
                None
            }
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The sections added, removed and changed between two texts of a carbon
/// file, for the log.
pub fn section_changes(old: &str, new: &str) -> String {
    let parse = |t: &str| graunt_storage::conf::parse(t).unwrap_or_default();
    let (old, new) = (parse(old), parse(new));
    let mut parts = Vec::new();
    let names = |v: &[graunt_storage::conf::Section], other: &[graunt_storage::conf::Section]| {
        v.iter()
            .filter(|s| !other.iter().any(|o| o.name == s.name))
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    };
    let added = names(&new, &old);
    let removed = names(&old, &new);
    let changed: Vec<String> = new
        .iter()
        .filter(|s| {
            old.iter()
                .any(|o| o.name == s.name && o.options != s.options)
        })
        .map(|s| s.name.clone())
        .collect();
    for (what, list) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !list.is_empty() {
            parts.push(format!("{what} [{}]", list.join(", ")));
        }
    }
    if parts.is_empty() {
        "sections reordered or reformatted".into()
    } else {
        parts.join("; ")
    }
}

/// Watches the files until `shutdown`.
pub async fn follow(
    files: SchemaFiles,
    store: Arc<Store>,
    member: Option<Arc<ClusterNode>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut schemas = files.schemas.map(Watched::new);
    let mut aggregation = files.aggregation.map(Watched::new);
    if schemas.is_none() && aggregation.is_none() {
        return;
    }
    let mut hangups = graunt_relay::hangup::subscribe();
    loop {
        let forced = tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(CHECK_EVERY) => false,
            r = hangups.changed() => r.is_ok(),
        };
        // Each file gives way to the cluster's own counterpart, if set.
        let (cluster_schemas, cluster_aggregation) = match &member {
            Some(node) => {
                let state = node.state.state().await;
                (state.schemas.is_some(), state.aggregation.is_some())
            }
            None => (false, false),
        };
        if let Some(w) = schemas.as_mut() {
            if let Some(text) = w.changed(forced) {
                apply(w, text, cluster_schemas, "storage schemas", |t| {
                    Schemas::parse(t).map(|s| {
                        warn_all(&s.warnings);
                        store.set_schemas(s)
                    })
                });
            }
        }
        if let Some(w) = aggregation.as_mut() {
            if let Some(text) = w.changed(forced) {
                apply(w, text, cluster_aggregation, "storage aggregation", |t| {
                    Aggregations::parse(t).map(|a| {
                        warn_all(&a.warnings);
                        store.set_aggregations(a)
                    })
                });
            }
        }
    }
}

fn warn_all(warnings: &[String]) {
    for w in warnings {
        tracing::warn!("{w}");
    }
}

fn apply<E: std::fmt::Display>(
    w: &mut Watched,
    text: String,
    from_cluster: bool,
    what: &str,
    set: impl FnOnce(&str) -> Result<(), E>,
) {
    if from_cluster {
        tracing::warn!(file = %w.path.display(), "{what} changed on disk, but the cluster's are in force (graunt cluster schemas set); the file is not used");
        w.text = text;
        return;
    }
    let changes = section_changes(&w.text, &text);
    match set(&text) {
        Ok(()) => {
            tracing::info!(file = %w.path.display(), changes = %changes, "{what} reloaded; files created from now on follow them");
            w.text = text;
        }
        Err(e) => {
            tracing::error!(file = %w.path.display(), error = %e, "{what} refused; the rules in force stay");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_their_sections() {
        let old = "[a]\npattern = x\nretentions = 1m:1d\n[b]\npattern = y\nretentions = 1m:1d\n";
        let new = "[a]\npattern = x\nretentions = 10s:1d\n[c]\npattern = z\nretentions = 1m:1d\n";
        assert_eq!(
            section_changes(old, new),
            "added [c]; removed [b]; changed [a]"
        );
        assert_eq!(
            section_changes(old, old),
            "sections reordered or reformatted"
        );
    }
}

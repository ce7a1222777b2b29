//! A node's tag index, graphite-web's tag database kept beside the whisper
//! tree: series (normalised tagged names), tag -> value -> series postings,
//! and every tag name ever seen (graphite-web never forgets one). Answers
//! `findSeries`, the tag listings and autocompletion. Durable as an
//! append-only log, `<data_dir>/tags/series.log` (`+name` and `-name`
//! lines), replayed at start; an existing tree without it is indexed once
//! from its readable `_tagged` file names.
//!
//! Memory: each series costs its name once (shared by the id table, the id
//! map and the name set the ingest check reads), the entries of those three,
//! and 4 bytes per tag in the postings: 207 bytes per series in all at a
//! million series of 4 tags (bench/tags.py, docs/BENCHMARKS.md).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use regex::Regex;

use crate::tags::{Op, TagError, TagExpr, TaggedSeries};

#[derive(Default)]
struct Inner {
    /// Series by id; `None` once deleted.
    paths: Vec<Option<Arc<str>>>,
    ids: HashMap<Arc<str>, u32>,
    /// tag -> value -> ids of the series with it, ascending.
    postings: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
    /// Every tag ever given (kept when its series go).
    known: BTreeSet<String>,
    /// Ids of tags and values in the order first seen (the listings' `id`).
    tag_ids: HashMap<String, u32>,
    value_ids: HashMap<String, u32>,
}

impl Inner {
    fn insert(&mut self, path: &str, series: &TaggedSeries) -> bool {
        if self.ids.contains_key(path) {
            return false;
        }
        let id = self.paths.len() as u32;
        let path: Arc<str> = Arc::from(path);
        self.paths.push(Some(path.clone()));
        self.ids.insert(path, id);
        for (tag, value) in &series.tags {
            // Clones only for what is new: a million series share a few
            // tags and values.
            if !self.known.contains(tag) {
                self.known.insert(tag.clone());
            }
            if !self.tag_ids.contains_key(tag) {
                let next = self.tag_ids.len() as u32 + 1;
                self.tag_ids.insert(tag.clone(), next);
            }
            if !self.value_ids.contains_key(value) {
                let next = self.value_ids.len() as u32 + 1;
                self.value_ids.insert(value.clone(), next);
            }
            if !self.postings.contains_key(tag) {
                self.postings.insert(tag.clone(), BTreeMap::new());
            }
            if let Some(values) = self.postings.get_mut(tag) {
                match values.get_mut(value) {
                    Some(ids) => ids.push(id),
                    None => {
                        values.insert(value.clone(), vec![id]);
                    }
                }
            }
        }
        true
    }

    fn remove(&mut self, path: &str, series: &TaggedSeries) -> bool {
        let Some(id) = self.ids.remove(path) else {
            return false;
        };
        self.paths[id as usize] = None;
        for (tag, value) in &series.tags {
            if let Some(values) = self.postings.get_mut(tag) {
                if let Some(ids) = values.get_mut(value) {
                    ids.retain(|&i| i != id);
                    if ids.is_empty() {
                        values.remove(value);
                    }
                }
                if values.is_empty() {
                    self.postings.remove(tag);
                }
            }
        }
        true
    }

    /// The ids of series a selecting expression takes.
    fn selected(&self, e: &TagExpr) -> Vec<u32> {
        let Some(values) = self.postings.get(&e.tag) else {
            return Vec::new();
        };
        if e.op == Op::Eq {
            return values.get(&e.value).cloned().unwrap_or_default();
        }
        let mut out: Vec<u32> = values
            .iter()
            .filter(|(v, _)| e.selects(v))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        out.sort_unstable();
        out
    }

    /// The ids a filtering expression (one that passes a series without
    /// the tag) turns away: those whose value fails it.
    fn rejected(&self, e: &TagExpr) -> HashSet<u32> {
        let Some(values) = self.postings.get(&e.tag) else {
            return HashSet::new();
        };
        values
            .iter()
            .filter(|(v, _)| !e.filters(Some(v)))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect()
    }

    fn find(&self, exprs: &[TagExpr]) -> Vec<u32> {
        let mut selecting: Vec<Vec<u32>> = exprs
            .iter()
            .filter(|e| !e.matches_empty())
            .map(|e| self.selected(e))
            .collect();
        selecting.sort_by_key(Vec::len);
        let Some((first, rest)) = selecting.split_first() else {
            return Vec::new();
        };
        let mut ids = first.clone();
        for other in rest {
            ids = intersect(&ids, other);
        }
        for e in exprs.iter().filter(|e| e.matches_empty()) {
            if ids.is_empty() {
                break;
            }
            let rejected = self.rejected(e);
            ids.retain(|i| !rejected.contains(i));
        }
        ids
    }

    fn sorted_paths(&self, ids: &[u32]) -> Vec<String> {
        let mut out: Vec<String> = ids
            .iter()
            .filter_map(|&i| self.paths[i as usize].as_deref().map(str::to_string))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// A tag with its listing id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its id.
    pub id: u32,
    /// The tag.
    pub name: String,
}

/// graphite-web's `filter`: a regex anchored at the start unless it starts
/// with `^`, searched.
pub fn listing_filter(filter: &str) -> Result<Regex, TagError> {
    let anchored = if filter.starts_with('^') {
        filter.to_string()
    } else {
        format!("^({filter})")
    };
    Regex::new(&anchored).map_err(|e| TagError(format!("invalid filter {filter:?}: {e}")))
}

/// A node's tag index.
pub struct TagIndex {
    inner: RwLock<Inner>,
    /// The names indexed, apart from `inner`: the check every tagged point
    /// makes never waits behind a slow listing holding `inner`.
    names: RwLock<HashSet<Arc<str>>>,
    log: Mutex<BufWriter<File>>,
    path: PathBuf,
}

/// The log's lines, without a torn last one (cut off, so the next record
/// starts on its own line); lines that are not UTF-8 are skipped.
fn read_log(path: &Path) -> io::Result<Vec<String>> {
    let mut bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(keep);
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(keep as u64)?;
        tracing::warn!(file = %path.display(), "the tag index log ended in a torn record (a crash while appending); cut it off");
    }
    Ok(bytes
        .split(|&b| b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

impl TagIndex {
    /// Opens the index in `dir` (creating it), replaying its log; with no
    /// log yet, indexes the readable names under `whisper_dir/_tagged`.
    pub fn open(dir: &Path, whisper_dir: &Path) -> io::Result<TagIndex> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("series.log");
        let mut inner = Inner::default();
        let existed = path.exists();
        let lines = read_log(&path)?;
        for line in &lines {
            let (kind, name) = match line.split_at_checked(1) {
                Some(x) => x,
                None => continue,
            };
            if kind == "?" {
                // A tag no live series had when the log was compacted.
                inner.known.insert(name.to_string());
                continue;
            }
            // Only normalised names were written; anything else is damage.
            let Ok(series) = TaggedSeries::parse(name) else {
                continue;
            };
            if series.path() != name {
                continue;
            }
            match kind {
                "+" => {
                    inner.insert(name, &series);
                }
                "-" => {
                    inner.remove(name, &series);
                }
                _ => {}
            }
        }
        let mut found = Vec::new();
        if !existed {
            let mut hashed = 0usize;
            scan_tagged(&whisper_dir.join("_tagged"), &mut found, &mut hashed);
            if hashed > 0 {
                tracing::warn!(
                    files = hashed,
                    "tagged files named by their hash cannot be indexed from the tree: post their names to /tags/tagMultiSeries, as carbon does"
                );
            }
        }
        // Compacted when mostly deletions and re-additions; tags only
        // deleted series had stay known.
        let live = inner.ids.len();
        if existed && lines.len() > 1024 && lines.len() > 2 * live {
            let tmp = dir.join("series.log.tmp");
            let mut w = BufWriter::new(File::create(&tmp)?);
            let carried: HashSet<&str> = inner.postings.keys().map(String::as_str).collect();
            for t in inner.known.iter().filter(|t| !carried.contains(t.as_str())) {
                writeln!(w, "?{t}")?;
            }
            for p in inner.paths.iter().flatten() {
                writeln!(w, "+{p}")?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let names = RwLock::new(inner.ids.keys().cloned().collect());
        let index = TagIndex {
            inner: RwLock::new(inner),
            names,
            log: Mutex::new(BufWriter::new(file)),
            path,
        };
        for name in found {
            index.ensure(&name);
        }
        index.sync()?;
        Ok(index)
    }

    /// Series indexed.
    pub fn len(&self) -> usize {
        self.read().ids.len()
    }

    /// Whether a (normalised) series is indexed.
    pub fn contains(&self, name: &str) -> bool {
        self.names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// No series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every series indexed, sorted.
    pub fn all_series(&self) -> Vec<String> {
        let inner = self.read();
        let mut out: Vec<String> = inner
            .paths
            .iter()
            .flatten()
            .map(|p| p.to_string())
            .collect();
        out.sort_unstable();
        out
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one change and logs it, the log written under the same
    /// lock, so the log's order is the index's.
    fn change(&self, name: &str, series: &TaggedSeries, add: bool) {
        let mut inner = self.write();
        let changed = if add {
            inner.insert(name, series)
        } else {
            inner.remove(name, series)
        };
        if !changed {
            return;
        }
        {
            let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
            if add {
                names.insert(Arc::from(name));
            } else {
                names.remove(name);
            }
        }
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(log, "{}{name}", if add { '+' } else { '-' }) {
            tracing::error!(file = %self.path.display(), error = %e, "cannot append to the tag index log");
        }
        drop(inner);
    }

    /// Indexes a normalised tagged name if it is new (the store calls this
    /// for every tagged name it takes; the check is a shared-lock lookup
    /// that slow listings do not hold up).
    pub fn ensure(&self, name: &str) {
        if self.contains(name) {
            return;
        }
        let Ok(series) = TaggedSeries::parse(name) else {
            return;
        };
        self.change(name, &series, true);
    }

    /// graphite-web's `tagSeries`: parses and normalises `path`, indexes it
    /// (a name without tags too) and answers the normalised name.
    pub fn tag_series(&self, path: &str) -> Result<String, TagError> {
        let series = TaggedSeries::parse(path)?;
        let normal = series.path();
        // A log line per name: no line breaks or other controls.
        if normal.bytes().any(|b| matches!(b, 0..=0x1f | 0x7f)) {
            return Err(TagError(format!(
                "Cannot use {path:?} as a metric name: it holds a control character"
            )));
        }
        self.change(&normal, &series, true);
        Ok(normal)
    }

    /// graphite-web's `delSeries`: forgets a series (not its file; its tag
    /// names stay known).
    pub fn del_series(&self, path: &str) -> Result<(), TagError> {
        let series = TaggedSeries::parse(path)?;
        let normal = series.path();
        self.change(&normal, &series, false);
        Ok(())
    }

    /// Writes the log out and fsyncs it (the fsync outside the log's lock,
    /// so new series are not held up by the disk).
    pub fn sync(&self) -> io::Result<()> {
        let file = {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.flush()?;
            log.get_ref().try_clone()?
        };
        file.sync_data()
    }

    /// The series the expressions select, sorted and unique.
    pub fn find_series(&self, exprs: &[TagExpr]) -> Vec<String> {
        let inner = self.read();
        let ids = inner.find(exprs);
        inner.sorted_paths(&ids)
    }

    /// Every tag known, sorted, narrowed by `filter`, at most `limit`.
    pub fn tags(&self, filter: Option<&Regex>, limit: Option<usize>) -> Vec<Listed> {
        let inner = self.read();
        inner
            .known
            .iter()
            .filter(|t| filter.is_none_or(|f| f.is_match(t)))
            .take(limit.unwrap_or(usize::MAX))
            .map(|t| Listed {
                id: inner.tag_ids.get(t).copied().unwrap_or(0),
                name: t.clone(),
            })
            .collect()
    }

    /// `autoComplete/tags`: with expressions, the tags of the series they
    /// select less every tag they name; without, the known tags; starting
    /// with `prefix`, sorted, at most `limit`.
    pub fn autocomplete_tags(&self, exprs: &[TagExpr], prefix: &str, limit: usize) -> Vec<String> {
        let inner = self.read();
        if exprs.is_empty() {
            return inner
                .known
                .range(prefix.to_string()..)
                .take_while(|t| t.starts_with(prefix))
                .take(limit)
                .cloned()
                .collect();
        }
        let ids: HashSet<u32> = inner.find(exprs).into_iter().collect();
        let named: HashSet<&str> = exprs.iter().map(|e| e.tag.as_str()).collect();
        inner
            .postings
            .range(prefix.to_string()..)
            .take_while(|(t, _)| t.starts_with(prefix))
            .filter(|(t, _)| !named.contains(t.as_str()))
            .filter(|(_, values)| {
                values
                    .values()
                    .any(|posting| posting.iter().any(|i| ids.contains(i)))
            })
            .take(limit)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// `autoComplete/values`: the values of `tag` among the series the
    /// expressions select (all live series holding it, without), starting
    /// with `prefix`, sorted, at most `limit`. As graphite-web, the caller
    /// adds `<tag>!=` to the expressions it was given.
    pub fn autocomplete_values(
        &self,
        tag: &str,
        exprs: &[TagExpr],
        prefix: &str,
        limit: usize,
    ) -> Vec<String> {
        let inner = self.read();
        let Some(values) = inner.postings.get(tag) else {
            return Vec::new();
        };
        let candidates = values
            .range(prefix.to_string()..)
            .take_while(|(v, _)| v.starts_with(prefix));
        if exprs.is_empty() {
            return candidates.take(limit).map(|(v, _)| v.clone()).collect();
        }
        let ids: HashSet<u32> = inner.find(exprs).into_iter().collect();
        candidates
            .filter(|(_, posting)| posting.iter().any(|i| ids.contains(i)))
            .take(limit)
            .map(|(v, _)| v.clone())
            .collect()
    }
}

/// A question to a tag index, as a node asks its peers (`/cluster/tags`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TagQuery {
    /// `findSeries`: the series the expressions select.
    FindSeries {
        /// Tag expressions.
        exprs: Vec<String>,
    },
    /// `/tags`: the known tags matching `filter`.
    Tags {
        /// graphite's `filter`.
        filter: Option<String>,
    },
    /// `/tags/<tag>`: a tag's values matching `filter`.
    TagValues {
        /// The tag.
        tag: String,
        /// graphite's `filter`.
        filter: Option<String>,
    },
    /// `autoComplete/tags`.
    AutoTags {
        /// Tag expressions (may be none).
        exprs: Vec<String>,
        /// Wanted prefix.
        prefix: String,
        /// At most this many.
        limit: usize,
    },
    /// `delSeries`: forgets the series (every member of a cluster is asked,
    /// as each holds its own copies); answered with no names.
    DelSeries {
        /// The series, as given (normalised here).
        paths: Vec<String>,
    },
    /// `autoComplete/values` (the expressions as given, without `<tag>!=`).
    AutoValues {
        /// The tag.
        tag: String,
        /// Tag expressions (may be none).
        exprs: Vec<String>,
        /// Wanted prefix.
        prefix: String,
        /// At most this many.
        limit: usize,
    },
}

/// A tag's values: `(value, its id, the hashes of the series holding it)`.
pub type ValueList = Vec<(String, u32, Vec<u64>)>;

/// A tag index's answer; answers of several nodes merge
/// ([`TagAnswer::merge`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TagAnswer {
    /// Series names, sorted.
    Series(Vec<String>),
    /// Tags with their ids, sorted by tag.
    Tags(Vec<(String, u32)>),
    /// A tag's id and its values with their ids and the hashes of the
    /// series holding each (so copies on several nodes count once);
    /// `None` for a tag never seen.
    Values(Option<(u32, ValueList)>),
    /// Names (autocompletion), sorted.
    Names(Vec<String>),
}

/// A series name's 64-bit FNV-1a hash (for counting across nodes).
pub fn series_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl TagAnswer {
    /// The union of two answers to the same question (`limit` for names).
    pub fn merge(self, other: TagAnswer, limit: Option<usize>) -> TagAnswer {
        fn union(mut a: Vec<String>, b: Vec<String>, limit: Option<usize>) -> Vec<String> {
            a.extend(b);
            a.sort_unstable();
            a.dedup();
            if let Some(l) = limit {
                a.truncate(l);
            }
            a
        }
        match (self, other) {
            (TagAnswer::Series(a), TagAnswer::Series(b)) => TagAnswer::Series(union(a, b, None)),
            (TagAnswer::Names(a), TagAnswer::Names(b)) => TagAnswer::Names(union(a, b, limit)),
            (TagAnswer::Tags(a), TagAnswer::Tags(b)) => {
                let mut m: BTreeMap<String, u32> = BTreeMap::new();
                for (t, id) in a.into_iter().chain(b) {
                    m.entry(t).or_insert(id);
                }
                TagAnswer::Tags(m.into_iter().collect())
            }
            (TagAnswer::Values(a), TagAnswer::Values(b)) => {
                let (a, b) = match (a, b) {
                    (None, x) | (x, None) => return TagAnswer::Values(x),
                    (Some(a), Some(b)) => (a, b),
                };
                let mut m: BTreeMap<String, (u32, Vec<u64>)> = BTreeMap::new();
                for (v, id, hashes) in a.1.into_iter().chain(b.1) {
                    let slot = m.entry(v).or_insert((id, Vec::new()));
                    slot.1.extend(hashes);
                }
                let values = m
                    .into_iter()
                    .map(|(v, (id, mut h))| {
                        h.sort_unstable();
                        h.dedup();
                        (v, id, h)
                    })
                    .collect();
                TagAnswer::Values(Some((a.0, values)))
            }
            (a, _) => a,
        }
    }
}

impl TagIndex {
    /// Answers `q` from this index alone.
    pub fn answer(&self, q: &TagQuery) -> Result<TagAnswer, TagError> {
        let filter = |f: &Option<String>| f.as_deref().map(listing_filter).transpose();
        Ok(match q {
            TagQuery::DelSeries { paths } => {
                for p in paths {
                    self.del_series(p)?;
                }
                TagAnswer::Names(Vec::new())
            }
            TagQuery::FindSeries { exprs } => {
                TagAnswer::Series(self.find_series(&crate::tags::parse_exprs(exprs)?))
            }
            TagQuery::Tags { filter: f } => TagAnswer::Tags(
                self.tags(filter(f)?.as_ref(), None)
                    .into_iter()
                    .map(|t| (t.name, t.id))
                    .collect(),
            ),
            TagQuery::TagValues { tag, filter: f } => {
                let f = filter(f)?;
                let inner = self.read();
                if !inner.known.contains(tag) {
                    return Ok(TagAnswer::Values(None));
                }
                let id = inner.tag_ids.get(tag).copied().unwrap_or(0);
                let values = inner
                    .postings
                    .get(tag)
                    .map(|values| {
                        values
                            .iter()
                            .filter(|(v, _)| f.as_ref().is_none_or(|f| f.is_match(v)))
                            .map(|(v, ids)| {
                                let hashes = ids
                                    .iter()
                                    .filter_map(|&i| inner.paths[i as usize].as_deref())
                                    .map(series_hash)
                                    .collect();
                                (
                                    v.clone(),
                                    inner.value_ids.get(v).copied().unwrap_or(0),
                                    hashes,
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                TagAnswer::Values(Some((id, values)))
            }
            TagQuery::AutoTags {
                exprs,
                prefix,
                limit,
            } => {
                let exprs = if exprs.is_empty() {
                    Vec::new()
                } else {
                    crate::tags::parse_exprs(exprs)?
                };
                TagAnswer::Names(self.autocomplete_tags(&exprs, prefix, *limit))
            }
            TagQuery::AutoValues {
                tag,
                exprs,
                prefix,
                limit,
            } => {
                let exprs = if exprs.is_empty() {
                    Vec::new()
                } else {
                    // graphite-web adds `<tag>!=` so that one expression
                    // selects; it is what walking the tag's own values
                    // checks anyway, so with another selecting expression
                    // it is left out (it would take every series with the
                    // tag: a million ids for `host`).
                    let given: Vec<TagExpr> = exprs
                        .iter()
                        .map(|e| TagExpr::parse(e))
                        .collect::<Result<_, _>>()?;
                    if given.iter().any(|e| !e.matches_empty()) {
                        given
                    } else {
                        let mut all = exprs.clone();
                        all.push(format!("{tag}!="));
                        crate::tags::parse_exprs(&all)?
                    }
                };
                TagAnswer::Names(self.autocomplete_values(tag, &exprs, prefix, *limit))
            }
        })
    }
}

/// Readable tagged names under `dir` (`_tagged/xxx/yyy/name.wsp`), and a
/// count of hashed ones.
fn scan_tagged(dir: &Path, found: &mut Vec<String>, hashed: &mut usize) {
    let Ok(first) = std::fs::read_dir(dir) else {
        return;
    };
    for a in first.flatten() {
        let Ok(second) = std::fs::read_dir(a.path()) else {
            continue;
        };
        for b in second.flatten() {
            let Ok(files) = std::fs::read_dir(b.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wsp")) else {
                    continue;
                };
                match crate::tags::decode_file_name(stem) {
                    Some(n) => found.push(n),
                    None => *hashed += 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::parse_exprs;

    fn index(names: &[&str]) -> (tempfile::TempDir, TagIndex) {
        let dir = tempfile::tempdir().unwrap();
        let idx = TagIndex::open(&dir.path().join("tags"), &dir.path().join("whisper")).unwrap();
        for n in names {
            idx.ensure(n);
        }
        (dir, idx)
    }

    fn find(idx: &TagIndex, exprs: &[&str]) -> Vec<String> {
        idx.find_series(&parse_exprs(exprs).unwrap())
    }

    #[test]
    fn expressions_select_as_graphite() {
        let (_d, idx) = index(&[
            "cpu.load;dc=x;host=a",
            "cpu.load;dc=y;host=b",
            "cpu.load;host=c",
            "mem.free;dc=x;host=a",
        ]);
        assert_eq!(
            find(&idx, &["name=cpu.load", "dc=x"]),
            ["cpu.load;dc=x;host=a"]
        );
        assert_eq!(
            find(&idx, &["name=cpu.load", "dc!=x"]),
            ["cpu.load;dc=y;host=b", "cpu.load;host=c"]
        );
        assert_eq!(find(&idx, &["name=cpu.load", "dc="]), ["cpu.load;host=c"]);
        assert_eq!(find(&idx, &["dc!="]).len(), 3);
        assert_eq!(find(&idx, &["host=~[ab]", "name!=~mem"]).len(), 2);
        assert_eq!(find(&idx, &["name=cpu.load", "dc!=~x"]).len(), 2);
        assert!(find(&idx, &["dc=x", "dc=y"]).is_empty());
        assert_eq!(
            idx.autocomplete_tags(
                &parse_exprs(&["name=cpu.load", "host!=a"]).unwrap(),
                "",
                100
            ),
            ["dc"]
        );
        assert_eq!(
            idx.autocomplete_values("host", &parse_exprs(&["dc!=x", "host!="]).unwrap(), "", 100),
            ["b", "c"]
        );
        assert_eq!(idx.autocomplete_values("host", &[], "", 2), ["a", "b"]);
        let values = |tag: &str| {
            let q = TagQuery::TagValues {
                tag: tag.into(),
                filter: None,
            };
            match idx.answer(&q).unwrap() {
                TagAnswer::Values(v) => v.map(|(_, v)| {
                    v.into_iter()
                        .map(|(value, _, series)| (value, series.len()))
                        .collect::<Vec<_>>()
                }),
                _ => None,
            }
        };
        assert_eq!(
            values("dc").unwrap(),
            [("x".to_string(), 2), ("y".to_string(), 1)]
        );
        assert!(values("nosuch").is_none());
    }

    #[test]
    fn the_index_survives_a_restart_and_remembers_deleted_tags() {
        let dir = tempfile::tempdir().unwrap();
        let open = || TagIndex::open(&dir.path().join("tags"), &dir.path().join("w")).unwrap();
        let idx = open();
        idx.ensure("a;x=1");
        assert_eq!(idx.tag_series("b;z=2;y=1").unwrap(), "b;y=1;z=2");
        idx.del_series("a;x=1").unwrap();
        idx.sync().unwrap();
        drop(idx);
        let idx = open();
        assert_eq!(idx.len(), 1);
        let tags: Vec<String> = idx.tags(None, None).into_iter().map(|t| t.name).collect();
        assert_eq!(tags, ["name", "x", "y", "z"]);
        let q = TagQuery::TagValues {
            tag: "x".into(),
            filter: None,
        };
        // Known, with no live series left.
        assert!(matches!(idx.answer(&q).unwrap(), TagAnswer::Values(Some((_, v))) if v.is_empty()));
    }

    #[test]
    fn a_tree_without_a_log_is_indexed_from_readable_names() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w");
        let readable = crate::tags::readable_path(&w, "cpu.load;dc=x");
        std::fs::create_dir_all(readable.parent().unwrap()).unwrap();
        std::fs::write(&readable, b"").unwrap();
        let idx = TagIndex::open(&dir.path().join("tags"), &w).unwrap();
        assert_eq!(find(&idx, &["dc=x"]), ["cpu.load;dc=x"]);
    }
}

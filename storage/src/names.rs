//! The tree of metric names held in memory, so `find`, `expand` and
//! `index.json` answer without walking the whisper tree. It is built from
//! the disk in the background at start and again every rescan (files that
//! other processes add or delete, as go-carbon's `scan-frequency`), and
//! kept current in between by the files this node creates or deletes
//! itself. Series received but without a file yet are not in it: the
//! cache lists them ([`crate::cache::Cache::unfiled`]) and a find adds them.
//!
//! It mirrors what a walk of the tree finds: directories are branches (an
//! emptied one stays, as on disk), `.wsp` files leaves, and the unfiled
//! names given to a find both. A name the tree lacks but that a pattern
//! spells out without wildcards is still looked for on disk, so a file
//! copied in by hand is found by its name at once and by globs after the
//! next rescan.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::find::{self, Level, Node};

/// One level of the tree: a directory's entries by name.
#[derive(Default)]
struct Branch {
    children: Children,
}

/// Most levels hold a few names (a host's metrics), some very many (the
/// hosts): a sorted list costs a few bytes per name where a B-tree's first
/// node costs hundreds, and a B-tree keeps inserting into a long level cheap.
enum Children {
    Few(Vec<(Box<str>, Child)>),
    Many(BTreeMap<Box<str>, Child>),
}

/// Past this many names a level becomes a B-tree.
const FEW: usize = 16;

impl Default for Children {
    fn default() -> Self {
        Children::Few(Vec::new())
    }
}

impl Children {
    fn get(&self, name: &str) -> Option<&Child> {
        match self {
            Children::Few(v) => v
                .binary_search_by(|(k, _)| (**k).cmp(name))
                .ok()
                .map(|i| &v[i].1),
            Children::Many(m) => m.get(name),
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Child> {
        match self {
            Children::Few(v) => v
                .binary_search_by(|(k, _)| (**k).cmp(name))
                .ok()
                .map(|i| &mut v[i].1),
            Children::Many(m) => m.get_mut(name),
        }
    }

    fn entry(&mut self, name: &str) -> &mut Child {
        if let Children::Few(v) = self {
            if v.len() >= FEW && v.binary_search_by(|(k, _)| (**k).cmp(name)).is_err() {
                *self = Children::Many(std::mem::take(v).into_iter().collect());
            }
        }
        match self {
            Children::Few(v) => {
                let i = match v.binary_search_by(|(k, _)| (**k).cmp(name)) {
                    Ok(i) => i,
                    Err(i) => {
                        v.reserve_exact(1);
                        v.insert(i, (name.into(), Child::default()));
                        i
                    }
                };
                &mut v[i].1
            }
            Children::Many(m) => m.entry(name.into()).or_default(),
        }
    }

    fn remove(&mut self, name: &str) {
        match self {
            Children::Few(v) => {
                if let Ok(i) = v.binary_search_by(|(k, _)| (**k).cmp(name)) {
                    v.remove(i);
                }
            }
            Children::Many(m) => {
                m.remove(name);
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Children::Few(v) => v.len(),
            Children::Many(m) => m.len(),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, &Child)> + '_> {
        match self {
            Children::Few(v) => Box::new(v.iter().map(|(k, c)| (&**k, c))),
            Children::Many(m) => Box::new(m.iter().map(|(k, c)| (&**k, c))),
        }
    }
}

/// One name at a level: a leaf (a metric), a branch, or both.
#[derive(Default)]
struct Child {
    leaf: bool,
    branch: Option<Box<Branch>>,
}

/// The level below a name that has none.
static EMPTY: Branch = Branch {
    children: Children::Few(Vec::new()),
};

impl Branch {
    fn contains(&self, name: &str) -> bool {
        let mut level = self;
        let mut nodes = name.split('.').peekable();
        while let Some(node) = nodes.next() {
            let Some(child) = level.children.get(node) else {
                return false;
            };
            if nodes.peek().is_none() {
                return child.leaf;
            }
            match &child.branch {
                Some(b) => level = b,
                None => return false,
            }
        }
        false
    }

    fn insert(&mut self, name: &str) {
        let mut level = self;
        let mut nodes = name.split('.').peekable();
        while let Some(node) = nodes.next() {
            let child = level.children.entry(node);
            if nodes.peek().is_none() {
                child.leaf = true;
                return;
            }
            level = child.branch.get_or_insert_with(Default::default);
        }
    }

    /// Forgets the leaf `name`; its branches stay (their directories do).
    fn remove(&mut self, name: &str) {
        let nodes: Vec<&str> = name.split('.').collect();
        let Some((last, path)) = nodes.split_last() else {
            return;
        };
        let mut level = self;
        for node in path {
            match level
                .children
                .get_mut(node)
                .and_then(|c| c.branch.as_deref_mut())
            {
                Some(b) => level = b,
                None => return,
            }
        }
        if let Some(child) = level.children.get_mut(last) {
            child.leaf = false;
            if child.branch.is_none() {
                level.children.remove(last);
            }
        }
    }

    fn apply(&mut self, change: &Change) {
        match change {
            Change::Insert(name) => self.insert(name),
            Change::Remove(name) => self.remove(name),
        }
    }
}

/// A level of the tree while a pattern is matched: the tree's entries, and
/// the directory behind them for names the tree does not hold.
struct Lookup<'a> {
    branch: &'a Branch,
    dir: PathBuf,
}

impl Level for Lookup<'_> {
    fn entries(&self) -> io::Result<Vec<(String, bool)>> {
        let mut out = Vec::with_capacity(self.branch.children.len());
        for (name, child) in self.branch.children.iter() {
            if child.branch.is_some() {
                out.push((name.to_string(), true));
            }
            if child.leaf {
                out.push((name.to_string(), false));
            }
        }
        Ok(out)
    }

    // The disk is asked only about a name the tree has never seen (a file
    // copied in since the last rescan): a known name costs no syscall.
    fn is_branch(&self, name: &str) -> bool {
        match self.branch.children.get(name) {
            Some(c) => c.branch.is_some(),
            None => self.dir.join(name).is_dir(),
        }
    }

    fn is_leaf(&self, name: &str) -> bool {
        match self.branch.children.get(name) {
            Some(c) => c.leaf,
            None => self.dir.join(format!("{name}.wsp")).is_file(),
        }
    }

    fn down(&self, name: &str) -> Self {
        let branch = self
            .branch
            .children
            .get(name)
            .and_then(|c| c.branch.as_deref())
            .unwrap_or(&EMPTY);
        Lookup {
            branch,
            dir: self.dir.join(name),
        }
    }
}

/// A change made while a rescan runs, applied again to its result.
enum Change {
    Insert(String),
    Remove(String),
}

/// See the module docs.
pub struct NameIndex {
    root: PathBuf,
    tree: RwLock<Branch>,
    /// Whether a first scan has finished: until then finds walk the disk.
    ready: AtomicBool,
    /// Changes since the running rescan began; `None` when none runs.
    journal: Mutex<Option<Vec<Change>>>,
    /// Whether a rescan runs (the journal is open).
    scanning: AtomicBool,
}

impl NameIndex {
    /// An index of the tree at `root`, empty and not ready until [`Self::rescan`].
    pub fn new(root: &Path) -> Self {
        NameIndex {
            root: root.to_path_buf(),
            tree: RwLock::new(Branch::default()),
            ready: AtomicBool::new(false),
            journal: Mutex::new(None),
            scanning: AtomicBool::new(false),
        }
    }

    /// Whether the first scan has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn change(&self, change: Change) {
        let mut tree = self.tree.write().unwrap_or_else(|e| e.into_inner());
        tree.apply(&change);
        // Recorded under the tree's lock: a rescan swaps its result in
        // under the same lock, so no change falls between the two.
        if let Some(journal) = self
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            journal.push(change);
        }
    }

    /// Whether the tree holds the leaf `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tree
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Adds the leaf `name` (a dotted path in the tree): its file exists.
    pub fn insert(&self, name: &str) {
        // While a rescan runs every insert is recorded: the old tree may
        // hold a name (deleted by hand) the new one will not.
        if self.scanning.load(Ordering::Acquire) || !self.contains(name) {
            self.change(Change::Insert(name.to_string()));
        }
    }

    /// Forgets the leaf `name`: its file is gone.
    pub fn remove(&self, name: &str) {
        self.change(Change::Remove(name.to_string()));
    }

    /// The dotted tree path of a whisper file under the root, if it is one.
    pub fn name_of(&self, file: &Path) -> Option<String> {
        let rel = file.strip_prefix(&self.root).ok()?;
        let mut nodes = Vec::new();
        for part in rel.components() {
            nodes.push(part.as_os_str().to_str()?);
        }
        let last = nodes.last_mut()?;
        *last = last.strip_suffix(".wsp")?;
        Some(nodes.join("."))
    }

    /// Rebuilds the tree from the disk; changes made while it runs are
    /// kept.
    pub fn rescan(&self) -> io::Result<usize> {
        self.rescan_with(|| {})
    }

    /// [`Self::rescan`], calling `meanwhile` once the journal is open.
    fn rescan_with(&self, meanwhile: impl FnOnce()) -> io::Result<usize> {
        *self.journal.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
        self.scanning.store(true, Ordering::Release);
        meanwhile();
        let result = (|| -> io::Result<(Branch, usize)> {
            let mut fresh = Branch::default();
            let mut ancestors = Vec::new();
            let leaves = scan(&self.root, &mut fresh, &mut ancestors)?;
            Ok((fresh, leaves))
        })();
        let mut tree = self.tree.write().unwrap_or_else(|e| e.into_inner());
        let journal = self
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.scanning.store(false, Ordering::Release);
        let (mut fresh, leaves) = result?;
        for change in journal.iter().flatten() {
            fresh.apply(change);
        }
        *tree = fresh;
        self.ready.store(true, Ordering::Release);
        Ok(leaves)
    }

    /// Every node matching `pattern`, sorted by path, as [`find::find`]
    /// would find it on disk, with the `unfiled` series (received, their
    /// files perhaps not made yet; read before the tree is).
    pub fn find(&self, pattern: &str, unfiled: &[Arc<str>]) -> io::Result<Vec<Node>> {
        let mut nodes: BTreeSet<Node> = find::find_in_names(unfiled.iter().map(|n| &**n), pattern)
            .into_iter()
            .collect();
        let tree = self.tree.read().unwrap_or_else(|e| e.into_inner());
        nodes.extend(find::find_in(
            Lookup {
                branch: &tree,
                dir: self.root.clone(),
            },
            pattern,
        )?);
        Ok(nodes.into_iter().collect())
    }
}

/// Reads the directory `dir` into `level`, following links to directories
/// but not around a loop; answers the leaves found.
fn scan(dir: &Path, level: &mut Branch, ancestors: &mut Vec<(u64, u64)>) -> io::Result<usize> {
    // Directories and files come and go while the tree is read (writers'
    // temporary files, a rebalance): what vanished is skipped, and a
    // directory that cannot be read is named and skipped, as the disk
    // walk of a find would skip it.
    let gone = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
        )
    };
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if gone(&e) => return Ok(0),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !ancestors.is_empty() => {
            tracing::warn!(dir = %dir.display(), error = %e, "a whisper directory cannot be read; its series are not listed");
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if gone(&e) => return Ok(0),
        Err(e) => return Err(e),
    };
    let id = (meta.dev(), meta.ino());
    if ancestors.contains(&id) {
        return Ok(0);
    }
    ancestors.push(id);
    let mut leaves = 0;
    for entry in read {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let kind = match entry.file_type() {
            Ok(k) => k,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        let is_dir = if kind.is_symlink() {
            entry.path().is_dir()
        } else {
            kind.is_dir()
        };
        if is_dir {
            let child = level.children.entry(&name);
            let branch = child.branch.get_or_insert_with(Default::default);
            leaves += scan(&entry.path(), branch, ancestors)?;
        } else if let Some(stem) = name.strip_suffix(".wsp") {
            level.children.entry(stem).leaf = true;
            leaves += 1;
        }
    }
    ancestors.pop();
    Ok(leaves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"").unwrap();
        }
        dir
    }

    fn paths(nodes: Vec<Node>) -> Vec<(String, bool)> {
        nodes.into_iter().map(|n| (n.path, n.is_leaf)).collect()
    }

    #[test]
    fn finds_what_the_disk_walk_finds() {
        let dir = tree(&[
            "servers/web1/cpu.wsp",
            "servers/web2/cpu.wsp",
            "servers/web2/mem.wsp",
            "servers/db1/cpu.wsp",
            "servers/db1/disk/sda.wsp",
            "servers.wsp",
            "servers/web1/notes.txt",
        ]);
        fs::create_dir_all(dir.path().join("empty/branch")).unwrap();
        // A level past FEW names (a B-tree), leaves and branches mixed.
        for i in 0..40 {
            fs::create_dir_all(dir.path().join(format!("many/h{i}"))).unwrap();
            fs::write(dir.path().join(format!("many/h{i}/cpu.wsp")), b"").unwrap();
            fs::write(dir.path().join(format!("many/h{i}.wsp")), b"").unwrap();
        }
        let index = NameIndex::new(dir.path());
        assert_eq!(index.rescan().unwrap(), 86);
        for pattern in [
            "*",
            "servers",
            "servers.*",
            "servers.*.*",
            "servers.web{1,2}.cpu",
            "servers.web[2].*",
            "servers.**",
            "servers.**.cpu",
            "**",
            "**.sda",
            "servers.web1.notes",
            "servers.nope.*",
            "servers...cpu",
            "empty.*",
            "s?rvers.d*.*",
            "many.*",
            "many.h1*.cpu",
            "many.h{3,33,x}",
            "many.**",
        ] {
            assert_eq!(
                paths(index.find(pattern, &[]).unwrap()),
                paths(find::find(dir.path(), pattern).unwrap()),
                "{pattern}"
            );
        }
    }

    #[test]
    fn unfiled_and_inserted_names_are_found_and_removed_leaves_are_not() {
        let dir = tree(&["a/b.wsp"]);
        let index = NameIndex::new(dir.path());
        index.rescan().unwrap();
        let unfiled: Vec<Arc<str>> = vec!["a.cached".into(), "a.b".into()];
        index.insert("a.c.d");
        assert_eq!(
            paths(index.find("a.*", &unfiled).unwrap()),
            vec![
                ("a.b".into(), true),
                ("a.c".into(), false),
                ("a.cached".into(), true)
            ]
        );
        index.remove("a.c.d");
        assert_eq!(
            paths(index.find("a.*", &[]).unwrap()),
            vec![("a.b".into(), true), ("a.c".into(), false)],
            "a branch stays as its directory would"
        );
    }

    #[test]
    fn a_literal_name_is_looked_for_on_disk_and_globs_see_it_after_a_rescan() {
        let dir = tree(&["a/b.wsp"]);
        let index = NameIndex::new(dir.path());
        index.rescan().unwrap();
        fs::create_dir_all(dir.path().join("copied/in")).unwrap();
        fs::write(dir.path().join("copied/in/x.wsp"), b"").unwrap();
        assert_eq!(
            paths(index.find("copied.in.x", &[]).unwrap()),
            vec![("copied.in.x".into(), true)]
        );
        assert!(index.find("copied.*.x", &[]).unwrap().is_empty());
        fs::remove_file(dir.path().join("a/b.wsp")).unwrap();
        index.rescan().unwrap();
        assert_eq!(
            paths(index.find("*.*.*", &[]).unwrap()),
            vec![("copied.in.x".into(), true)]
        );
        assert_eq!(paths(index.find("a.*", &[]).unwrap()), vec![]);
    }

    #[test]
    fn changes_during_a_rescan_survive_it() {
        let dir = tree(&["on/disk.wsp"]);
        let index = NameIndex::new(dir.path());
        index.rescan().unwrap();
        index
            .rescan_with(|| {
                // As a receiver would while the disk is read.
                index.insert("arrived.meanwhile");
                index.remove("on.disk");
            })
            .unwrap();
        assert_eq!(
            paths(index.find("*.*", &[]).unwrap()),
            vec![("arrived.meanwhile".into(), true)]
        );
    }

    #[test]
    fn a_link_loop_is_read_once() {
        let dir = tree(&["a/m.wsp"]);
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("a/loop")).unwrap();
        let index = NameIndex::new(dir.path());
        assert_eq!(index.rescan().unwrap(), 1);
        assert_eq!(
            paths(index.find("a.m", &[]).unwrap()),
            vec![("a.m".into(), true)]
        );
    }

    #[test]
    fn names_of_files() {
        let index = NameIndex::new(Path::new("/data/whisper"));
        assert_eq!(
            index.name_of(Path::new("/data/whisper/a/b/c.wsp")),
            Some("a.b.c".into())
        );
        assert_eq!(index.name_of(Path::new("/elsewhere/c.wsp")), None);
        assert_eq!(index.name_of(Path::new("/data/whisper/a/b/c.txt")), None);
    }
}

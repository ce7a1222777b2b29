//! Finding metrics by graphite path expression, as graphite-web's standard
//! finder does over a whisper tree: the expression is split at `.`, each node
//! has its `{a,b}` alternatives expanded, then matched with Python's
//! `fnmatch` rules (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`) against directory
//! entries; `**` matches any number of levels. Directories are branches,
//! `.wsp` files leaves; a name can be both.
//!
//! The matcher is written here rather than taken from globset because it must
//! reproduce Python's `fnmatch` exactly (an unclosed `[` is a literal, `[!`
//! negates, `[]` starts a class with `]`), node by node.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

/// A found node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    /// Dotted path, `a.b.c`.
    pub path: String,
    /// True for a metric (a `.wsp` file), false for a branch (a directory).
    pub is_leaf: bool,
}

impl Node {
    /// The last component of the path.
    pub fn name(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }
}

/// Expands `{a,b}` alternatives, innermost-last as graphite-web does; the
/// result has no duplicates.
pub fn expand_braces(pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    expand_into(pattern, &mut out);
    out.sort();
    out.dedup();
    out
}

fn expand_into(pattern: &str, out: &mut Vec<String>) {
    // The last `{` that has a `}` after it.
    let open = pattern
        .char_indices()
        .rev()
        .find(|&(i, c)| c == '{' && pattern[i..].contains('}'));
    let Some((open, _)) = open else {
        out.push(pattern.to_string());
        return;
    };
    let close = open + pattern[open..].find('}').expect("checked above");
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    for alt in body.split(',') {
        expand_into(&format!("{head}{alt}{tail}"), out);
    }
}

/// Python's `fnmatch.fnmatchcase(name, pattern)`.
pub fn fnmatch(name: &str, pattern: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    matches(&name, &pattern)
}

/// Tests `c` against the `[...]` class at `p[0] == '['`: `Some((matched,
/// class length))`, or `None` when unclosed (then `[` is a literal).
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = p.get(i) == Some(&'!');
    if negate {
        i += 1;
    }
    let body_start = i;
    // A `]` right after `[` or `[!` is part of the class.
    if p.get(i) == Some(&']') {
        i += 1;
    }
    while i < p.len() && p[i] != ']' {
        i += 1;
    }
    if i >= p.len() {
        return None;
    }
    let body = &p[body_start..i];
    let mut j = 0;
    let mut hit = false;
    while j < body.len() {
        if j + 2 < body.len() && body[j + 1] == '-' {
            hit |= body[j] <= c && c <= body[j + 2];
            j += 3;
        } else {
            hit |= body[j] == c;
            j += 1;
        }
    }
    Some((hit != negate, i + 1))
}

/// Wildcard matching with one backtrack point (the last `*`): linear-ish,
/// so a pattern such as `*a*a*a*a*b` cannot make a request take exponential time.
fn matches(name: &[char], p: &[char]) -> bool {
    let (mut n, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if i < p.len() {
            let step = match p[i] {
                '*' => {
                    star = Some((i + 1, n));
                    i += 1;
                    continue;
                }
                '?' => Some(1),
                '[' => match class(&p[i..], name[n]) {
                    Some((hit, len)) => hit.then_some(len),
                    None => (name[n] == '[').then_some(1),
                },
                c => (c == name[n]).then_some(1),
            };
            if let Some(len) = step {
                i += len;
                n += 1;
                continue;
            }
        }
        match star {
            Some((after, from)) => {
                i = after;
                n = from + 1;
                star = Some((after, from + 1));
            }
            None => return false,
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

fn has_wildcard(node: &str) -> bool {
    node.contains(['*', '?', '['])
}

/// One level of a tree of names being matched: a directory on disk, or a
/// branch of the in-memory index ([`crate::names`]).
pub(crate) trait Level: Sized {
    /// Every entry as (node name, true for a branch); a name that is both
    /// a branch and a leaf is listed twice.
    fn entries(&self) -> io::Result<Vec<(String, bool)>>;
    /// Whether `name` is a branch here.
    fn is_branch(&self, name: &str) -> bool;
    /// Whether `name` is a leaf here.
    fn is_leaf(&self, name: &str) -> bool;
    /// The level below `name` (empty when there is none).
    fn down(&self, name: &str) -> Self;
}

/// A directory of the whisper tree.
struct Dir(std::path::PathBuf);

impl Level for Dir {
    fn entries(&self) -> io::Result<Vec<(String, bool)>> {
        Ok(entries(&self.0)?
            .into_iter()
            .filter_map(|(entry, is_dir)| {
                if is_dir {
                    Some((entry, true))
                } else {
                    Some((entry.strip_suffix(".wsp")?.to_string(), false))
                }
            })
            .collect())
    }

    fn is_branch(&self, name: &str) -> bool {
        self.0.join(name).is_dir()
    }

    fn is_leaf(&self, name: &str) -> bool {
        self.0.join(format!("{name}.wsp")).is_file()
    }

    fn down(&self, name: &str) -> Self {
        Dir(self.0.join(name))
    }
}

/// Every node under `root` matching `pattern`, sorted by path, read from
/// the disk.
pub fn find(root: &Path, pattern: &str) -> io::Result<Vec<Node>> {
    find_in(Dir(root.to_path_buf()), pattern)
}

/// Every node under the level `top` matching `pattern`, sorted by path.
pub(crate) fn find_in(top: impl Level, pattern: &str) -> io::Result<Vec<Node>> {
    let pattern = pattern.replace('\\', "");
    let parts: Vec<&str> = pattern.split('.').collect();
    let mut found = BTreeMap::new();
    walk(&top, "", &parts, &mut found)?;
    Ok(found
        .into_iter()
        .map(|((path, is_leaf), ())| Node { path, is_leaf })
        .collect())
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn walk<L: Level>(
    level: &L,
    prefix: &str,
    parts: &[&str],
    found: &mut BTreeMap<(String, bool), ()>,
) -> io::Result<()> {
    let Some((raw, rest)) = parts.split_first() else {
        return Ok(());
    };
    if *raw == "**" {
        // Any depth, including none.
        walk(level, prefix, rest, found)?;
        for (name, is_branch) in level.entries()? {
            if is_branch {
                walk(&level.down(&name), &join(prefix, &name), parts, found)?;
            }
        }
        if rest.is_empty() {
            walk(level, prefix, &["*"], found)?;
        }
        return Ok(());
    }
    for node in expand_braces(raw) {
        // Entries of this level matching `node`: (name, is_branch).
        let matched: Vec<(String, bool)> = if has_wildcard(&node) {
            level
                .entries()?
                .into_iter()
                .filter(|(entry, _)| fnmatch(entry, &node))
                .collect()
        } else {
            let mut m = Vec::new();
            if node.is_empty() || node.contains('/') || node == ".." || node == "." {
                continue;
            }
            if level.is_branch(&node) {
                m.push((node.clone(), true));
            }
            // A leaf only counts as the last node; spare the stat otherwise.
            if rest.is_empty() && level.is_leaf(&node) {
                m.push((node.clone(), false));
            }
            m
        };
        for (name, is_branch) in matched {
            let path = join(prefix, &name);
            if rest.is_empty() {
                found.insert((path, !is_branch), ());
            } else if is_branch {
                walk(&level.down(&name), &path, rest, found)?;
            }
        }
    }
    Ok(())
}

/// Directory entries as (name, is_dir); a missing directory is empty.
fn entries(dir: &Path) -> io::Result<Vec<(String, bool)>> {
    let read = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let kind = entry.file_type()?;
        let is_dir = if kind.is_symlink() {
            entry.path().is_dir()
        } else {
            kind.is_dir()
        };
        out.push((name, is_dir));
    }
    Ok(out)
}

/// Nodes matching `pattern` among dotted metric `names` (the cache's, for
/// metrics not yet on disk): leaves for whole names, branches for prefixes.
pub fn find_in_names<'a>(names: impl IntoIterator<Item = &'a str>, pattern: &str) -> Vec<Node> {
    let parts: Vec<Vec<String>> = pattern
        .replace('\\', "")
        .split('.')
        .map(expand_braces)
        .collect();
    let node_matches = |node: &str, alts: &Vec<String>| alts.iter().any(|p| fnmatch(node, p));
    let mut found = BTreeMap::new();
    let deep = parts.iter().any(|p| p.len() == 1 && p[0] == "**");
    for name in names {
        let nodes: Vec<&str> = name.split('.').collect();
        if deep {
            // `**` spans any number of levels: every prefix of the name that
            // matches is a node (the whole name a leaf), as the disk walk finds.
            for end in 1..=nodes.len() {
                if matches_deep(&nodes[..end], &parts, &node_matches) {
                    found.insert((nodes[..end].join("."), end == nodes.len()), ());
                }
            }
            continue;
        }
        if nodes.len() < parts.len() || !nodes.iter().zip(&parts).all(|(n, p)| node_matches(n, p)) {
            continue;
        }
        let path = nodes[..parts.len()].join(".");
        found.insert((path, nodes.len() == parts.len()), ());
    }
    found
        .into_iter()
        .map(|((path, is_leaf), ())| Node { path, is_leaf })
        .collect()
}

/// Whether `nodes` match `parts` exactly, a `**` part matching any number
/// of nodes (none included, but at least one at the end: as the disk walk
/// reads `a.**`, the nodes under `a`).
fn matches_deep(
    nodes: &[&str],
    parts: &[Vec<String>],
    node_matches: &dyn Fn(&str, &Vec<String>) -> bool,
) -> bool {
    match parts.split_first() {
        None => nodes.is_empty(),
        Some((p, rest)) if p.len() == 1 && p[0] == "**" => {
            let least = usize::from(rest.is_empty());
            (least..=nodes.len()).any(|skip| matches_deep(&nodes[skip..], rest, node_matches))
        }
        Some((p, rest)) => match nodes.split_first() {
            Some((n, more)) => node_matches(n, p) && matches_deep(more, rest, node_matches),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_names_are_found_at_any_depth_by_double_star() {
        let names = ["a.b.c", "a.x", "q"];
        let leaves = |pattern: &str| -> Vec<String> {
            find_in_names(names, pattern)
                .into_iter()
                .filter(|n| n.is_leaf)
                .map(|n| n.path)
                .collect()
        };
        assert_eq!(leaves("**"), vec!["a.b.c", "a.x", "q"]);
        assert_eq!(leaves("a.**"), vec!["a.b.c", "a.x"]);
        assert_eq!(leaves("**.c"), vec!["a.b.c"]);
        assert_eq!(leaves("a.**.c"), vec!["a.b.c"]);
        let all: Vec<String> = find_in_names(names, "a.**")
            .into_iter()
            .map(|n| n.path)
            .collect();
        assert_eq!(all, vec!["a.b", "a.b.c", "a.x"], "not a itself");
    }

    #[test]
    fn fnmatch_like_python() {
        assert!(fnmatch("cpu0", "cpu?"));
        assert!(fnmatch("cpu0", "cpu[0-3]"));
        assert!(!fnmatch("cpu7", "cpu[0-3]"));
        assert!(fnmatch("cpu7", "cpu[!0-3]"));
        assert!(fnmatch("a]b", "a[]]b"));
        assert!(fnmatch("a[b", "a[b"), "an unclosed class is a literal");
        assert!(fnmatch("anything", "*"));
        assert!(fnmatch("", "*"));
        assert!(fnmatch("web-01", "web-*1"));
        assert!(!fnmatch("web", "web?"));
        assert!(fnmatch("xaYb", "*a*b"));
        assert!(
            !fnmatch(&"a".repeat(60), "*a*a*a*a*a*a*a*a*a*a*a*a*b"),
            "must not take exponential time"
        );
    }

    #[test]
    fn braces_expand_like_graphite() {
        assert_eq!(expand_braces("a{b,c}d"), vec!["abd", "acd"]);
        assert_eq!(expand_braces("{a,b}{c,d}"), vec!["ac", "ad", "bc", "bd"]);
        assert_eq!(expand_braces("x{a,a}"), vec!["xa"]);
        assert_eq!(expand_braces("plain"), vec!["plain"]);
    }

    #[test]
    fn finds_in_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "servers/web1/cpu.wsp",
            "servers/web2/cpu.wsp",
            "servers/web2/mem.wsp",
            "servers/db1/cpu.wsp",
            "servers.wsp",
        ] {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"").unwrap();
        }
        fs::write(root.join("servers/web1/notes.txt"), b"").unwrap();
        let paths = |pattern: &str| -> Vec<(String, bool)> {
            find(root, pattern)
                .unwrap()
                .into_iter()
                .map(|n| (n.path, n.is_leaf))
                .collect()
        };
        assert_eq!(
            paths("servers.*"),
            vec![
                ("servers.db1".into(), false),
                ("servers.web1".into(), false),
                ("servers.web2".into(), false)
            ]
        );
        assert_eq!(
            paths("servers"),
            vec![("servers".into(), false), ("servers".into(), true)]
        );
        assert_eq!(paths("servers.web{1,2}.cpu").len(), 2);
        assert_eq!(
            paths("servers.web[2].*"),
            vec![
                ("servers.web2.cpu".into(), true),
                ("servers.web2.mem".into(), true)
            ]
        );
        assert_eq!(paths("servers.**.cpu").len(), 3);
        assert_eq!(paths("servers.web1.notes"), vec![]);
        assert_eq!(paths("servers.nope.*"), vec![]);
        assert_eq!(paths("servers...cpu"), vec![]);
    }

    #[test]
    fn finds_in_names() {
        let names = ["a.b.c", "a.b.d", "a.x"];
        let got = find_in_names(names, "a.*");
        assert_eq!(
            got,
            vec![
                Node {
                    path: "a.b".into(),
                    is_leaf: false
                },
                Node {
                    path: "a.x".into(),
                    is_leaf: true
                }
            ]
        );
        assert_eq!(find_in_names(names, "a.{b,x}.c").len(), 1);
    }
}

//! graphite-web's events (annotations such as deploys): the event record,
//! the set of events with graphite-web 1.1.10's lookups (time range, tags
//! with its three set operations, django-tagging's tag parsing), bounded in
//! count and bytes, and its durable file (`events.json`, replaced whole and
//! fsynced on every change: events are rare next to datapoints).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Events kept at most: past it the oldest (by `when`) are forgotten.
pub const MAX_EVENTS: usize = 50_000;

/// Bytes of `what`, `data` and tags kept at most over all events (the
/// oldest are forgotten past it), so the file and its replicas stay small.
pub const MAX_BYTES: usize = 32 << 20;

/// Bytes one event's `what`, `data` and tags may hold.
pub const MAX_EVENT_BYTES: usize = 64 << 10;

/// Tag names remembered as known, at most.
pub const MAX_KNOWN_TAGS: usize = 100_000;

/// Python's `str.isspace` (Rust's whitespace and the four ASCII separators
/// U+001C to U+001F, which Python's `split()` and `strip()` also take).
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// One event as graphite-web stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its id (1, 2, … in the order events were added).
    pub id: u64,
    /// When it happened, microseconds since the epoch (graphite-web keeps a
    /// datetime with microseconds).
    pub when_us: i64,
    /// What happened.
    pub what: String,
    /// Free text.
    pub data: String,
    /// The tags as they were given (a list joined with spaces), or `None`.
    /// graphite-web shows this text split on whitespace, but matches the
    /// tags django-tagging parses from it ([`parse_tag_input`]).
    pub tags: Option<String>,
}

impl Event {
    /// `when` in whole seconds, as graphite-web answers it (truncated).
    pub fn when(&self) -> i64 {
        self.when_us.div_euclid(1_000_000)
    }

    /// The tags graphite-web shows: the given text split on whitespace.
    pub fn shown_tags(&self) -> Vec<&str> {
        self.tags
            .as_deref()
            .map(|t| t.split(py_space).filter(|w| !w.is_empty()).collect())
            .unwrap_or_default()
    }

    /// The tags it matches by.
    pub fn tag_set(&self) -> Vec<String> {
        self.tags
            .as_deref()
            .map(parse_tag_input)
            .unwrap_or_default()
    }

    fn bytes(&self) -> usize {
        self.what.len() + self.data.len() + self.tags.as_deref().map_or(0, str::len)
    }
}

/// An event to add: everything but its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// When, microseconds since the epoch.
    pub when_us: i64,
    /// What happened.
    pub what: String,
    /// Free text.
    pub data: String,
    /// Tags as given, or `None`.
    pub tags: Option<String>,
}

impl NewEvent {
    /// Refuses an event larger than [`MAX_EVENT_BYTES`].
    pub fn check(&self) -> Result<(), String> {
        let bytes = self.what.len() + self.data.len() + self.tags.as_deref().map_or(0, str::len);
        if bytes > MAX_EVENT_BYTES {
            return Err(format!(
                "the event holds {bytes} bytes of what, data and tags; at most {MAX_EVENT_BYTES} are kept"
            ));
        }
        Ok(())
    }
}

/// How a lookup's tags combine (graphite-web's `set` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetOperation {
    /// Events with every known tag asked for (the default).
    #[default]
    All,
    /// Events with any of them (`set=union`).
    Union,
    /// Events with every known tag that also show every tag asked for
    /// (`set=intersection`).
    Intersection,
}

impl SetOperation {
    /// graphite-web's reading of `set`: anything else is [`SetOperation::All`].
    pub fn parse(s: Option<&str>) -> SetOperation {
        match s {
            Some("union") => SetOperation::Union,
            Some("intersection") => SetOperation::Intersection,
            _ => SetOperation::All,
        }
    }
}

/// The events of a node or of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored")]
pub struct Events {
    events: BTreeMap<u64, Event>,
    next_id: u64,
    /// The raft log index of the last change applied, where the events are
    /// the cluster's: a change at or below it is not applied twice.
    #[serde(default)]
    pub applied: Option<u64>,
    /// Every tag an event was given, kept when its events go (graphite-web's
    /// tag table never forgets one): a lookup is narrowed to these.
    known: BTreeSet<String>,
    #[serde(skip)]
    bytes: usize,
}

impl Events {
    /// Events kept.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// No events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// One event by id.
    pub fn get(&self, id: u64) -> Option<&Event> {
        self.events.get(&id)
    }

    /// Adds an event with the next id; forgets the oldest past the bounds.
    /// Returns the id.
    pub fn add(&mut self, new: NewEvent) -> u64 {
        self.next_id = self
            .next_id
            .max(self.events.keys().last().copied().unwrap_or(0))
            + 1;
        let event = Event {
            id: self.next_id,
            when_us: new.when_us,
            what: new.what,
            data: new.data,
            tags: new.tags,
        };
        self.count(&event, true);
        self.events.insert(event.id, event);
        while self.events.len() > MAX_EVENTS || self.bytes > MAX_BYTES {
            let Some(oldest) = self
                .events
                .values()
                .min_by_key(|e| (e.when_us, e.id))
                .map(|e| e.id)
            else {
                break;
            };
            self.remove(oldest);
        }
        self.next_id
    }

    /// Removes an event; whether it was there.
    pub fn remove(&mut self, id: u64) -> bool {
        match self.events.remove(&id) {
            Some(e) => {
                self.count(&e, false);
                true
            }
            None => false,
        }
    }

    fn count(&mut self, e: &Event, add: bool) {
        if add {
            self.bytes += e.bytes();
            for tag in e.tag_set() {
                if self.known.len() < MAX_KNOWN_TAGS {
                    self.known.insert(tag);
                }
            }
        } else {
            self.bytes -= e.bytes();
        }
    }

    /// graphite-web's `find_events`: events with `from_us <= when <=
    /// until_us`, narrowed by `tags` as django-tagging does (tags no event
    /// has are left out of the lookup; none left: no events), oldest first.
    pub fn find(
        &self,
        from_us: i64,
        until_us: i64,
        tags: Option<&[String]>,
        op: SetOperation,
    ) -> Vec<&Event> {
        let wanted: Option<BTreeSet<&str>> = tags.map(|tags| {
            tags.iter()
                .map(String::as_str)
                .filter(|t| self.known.contains(*t))
                .collect()
        });
        let mut out: Vec<&Event> = self
            .events
            .values()
            .filter(|e| e.when_us >= from_us && e.when_us <= until_us)
            .filter(|e| {
                let Some(wanted) = &wanted else {
                    return true;
                };
                if wanted.is_empty() {
                    return false;
                }
                let has = e.tag_set();
                match op {
                    SetOperation::Union => has.iter().any(|t| wanted.contains(t.as_str())),
                    SetOperation::All | SetOperation::Intersection => {
                        wanted.iter().all(|w| has.iter().any(|t| t == w))
                    }
                }
            })
            .collect();
        if let (SetOperation::Intersection, Some(tags)) = (op, tags) {
            // graphite-web's own check after django-tagging's: every tag
            // asked for among the tags shown (a repeated tag never passes).
            out.retain(|e| {
                let shown: BTreeSet<&str> = e.shown_tags().into_iter().collect();
                let asked: BTreeSet<&str> = tags.iter().map(String::as_str).collect();
                asked.intersection(&shown).count() == tags.len()
            });
        }
        out.sort_by_key(|e| (e.when_us, e.id));
        out
    }

    /// Reads `path` (no file: no events).
    pub fn load(path: &Path) -> std::io::Result<Events> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::other(format!(
                    "{}: {e} (move the file aside to start without events)",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Events::default()),
            Err(e) => Err(e),
        }
    }

    /// Replaces `path` with these events, durably (a temporary file,
    /// fsynced, renamed over it, the directory fsynced).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// What is written of [`Events`]; the counts are rebuilt on reading.
#[derive(Deserialize)]
struct Stored {
    events: BTreeMap<u64, Event>,
    next_id: u64,
    #[serde(default)]
    applied: Option<u64>,
    #[serde(default)]
    known: BTreeSet<String>,
}

impl From<Stored> for Events {
    fn from(s: Stored) -> Events {
        let mut events = Events {
            events: BTreeMap::new(),
            next_id: s.next_id,
            applied: s.applied,
            known: s.known,
            bytes: 0,
        };
        for e in s.events.into_values() {
            events.count(&e, true);
            events.events.insert(e.id, e);
        }
        events
    }
}

/// django-tagging's `parse_tag_input`: tags separated by commas when there
/// is a comma outside double quotes, else by spaces; double quotes group a
/// tag; blanks trimmed, empty tags dropped; sorted and unique.
pub fn parse_tag_input(input: &str) -> Vec<String> {
    fn split_strip(s: &str, delimiter: char) -> impl Iterator<Item = String> + '_ {
        s.split(delimiter)
            .map(|w| w.trim_matches(py_space))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
    }
    let mut words: Vec<String> = Vec::new();
    if !input.contains(',') && !input.contains('"') {
        words.extend(split_strip(input, ' '));
    } else {
        let mut buffer = String::new();
        let mut to_split: Vec<String> = Vec::new();
        let mut loose_comma = false;
        let mut chars = input.chars();
        // Ends where Python's loop meets StopIteration: inside quotes or not.
        let open_quote = loop {
            let Some(c) = chars.next() else { break false };
            if c != '"' {
                loose_comma |= c == ',';
                buffer.push(c);
                continue;
            }
            if !buffer.is_empty() {
                to_split.push(std::mem::take(&mut buffer));
            }
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                buffer.push(c);
            }
            if !closed {
                break true;
            }
            let word = buffer.trim_matches(py_space);
            if !word.is_empty() {
                words.push(word.to_string());
            }
            buffer.clear();
        };
        if !buffer.is_empty() {
            if open_quote && buffer.contains(',') {
                loose_comma = true;
            }
            to_split.push(buffer);
        }
        let delimiter = if loose_comma { ',' } else { ' ' };
        for chunk in &to_split {
            words.extend(split_strip(chunk, delimiter));
        }
    }
    words.sort();
    words.dedup();
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(when: i64, what: &str, tags: Option<&str>) -> NewEvent {
        NewEvent {
            when_us: when * 1_000_000,
            what: what.into(),
            data: String::new(),
            tags: tags.map(str::to_string),
        }
    }

    #[test]
    fn tags_parse_as_django_tagging() {
        assert_eq!(parse_tag_input("b a  b"), ["a", "b"]);
        assert_eq!(parse_tag_input("db, prod x"), ["db", "prod x"]);
        assert_eq!(parse_tag_input("\"a, b\" c d"), ["a, b", "c", "d"]);
        assert_eq!(parse_tag_input("\"a b\", c"), ["a b", "c"]);
        // An open quote with a comma in it: the rest splits on commas.
        assert_eq!(parse_tag_input("x \"y, z"), ["x", "y", "z"]);
        assert_eq!(parse_tag_input(""), Vec::<String>::new());
        assert_eq!(parse_tag_input("p\u{1c}q, r"), ["p\u{1c}q", "r"]);
        assert_eq!(parse_tag_input("a,\u{1f}b\u{1f}"), ["a", "b"]);
        assert_eq!(parse_tag_input("\"\""), Vec::<String>::new());
    }

    #[test]
    fn lookups_narrow_to_known_tags_as_graphite_web() {
        let mut ev = Events::default();
        ev.add(new(100, "deploy", Some("web prod web")));
        ev.add(new(200, "restart", Some("db, prod x")));
        ev.add(new(300, "none", None));
        let ids = |v: Vec<&Event>| v.iter().map(|e| e.id).collect::<Vec<_>>();
        let tags = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            ids(ev.find(i64::MIN, i64::MAX, None, SetOperation::All)),
            [1, 2, 3]
        );
        assert_eq!(
            ids(ev.find(150_000_000, 300_000_000, None, SetOperation::All)),
            [2, 3]
        );
        let q = tags("prod zzz");
        assert_eq!(ids(ev.find(0, i64::MAX, Some(&q), SetOperation::All)), [1]);
        let q = tags("prod x");
        assert_eq!(
            ids(ev.find(0, i64::MAX, Some(&q), SetOperation::Intersection)),
            Vec::<u64>::new()
        );
        let q = tags("web db");
        assert_eq!(
            ids(ev.find(0, i64::MAX, Some(&q), SetOperation::Union)),
            [1, 2]
        );
        let q = tags("zzz");
        assert!(ev.find(0, i64::MAX, Some(&q), SetOperation::All).is_empty());
        assert!(ev.remove(1));
        let q = tags("web");
        assert!(ev.find(0, i64::MAX, Some(&q), SetOperation::All).is_empty());
        // `web` stays known with its events gone, as graphite-web's tag
        // table keeps it: a lookup still needs it.
        let q = tags("web prod");
        assert!(ev.find(0, i64::MAX, Some(&q), SetOperation::All).is_empty());
        assert_eq!(ev.add(new(50, "again", None)), 4, "ids are not reused");
    }

    #[test]
    fn events_survive_a_reload_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        let mut ev = Events::default();
        for i in 0..(MAX_EVENTS as i64 + 10) {
            ev.add(new(1_000_000 - i, "e", Some("t")));
        }
        assert_eq!(ev.len(), MAX_EVENTS);
        // The oldest (the last added here) were forgotten.
        assert!(ev.get(MAX_EVENTS as u64 + 10).is_none());
        assert!(ev.get(1).is_some());
        ev.save(&path).unwrap();
        let back = Events::load(&path).unwrap();
        assert_eq!(back.len(), MAX_EVENTS);
        let q = vec!["t".to_string()];
        assert_eq!(
            back.find(0, i64::MAX, Some(&q), SetOperation::All).len(),
            MAX_EVENTS
        );
        assert!(Events::load(&dir.path().join("none.json"))
            .unwrap()
            .is_empty());
    }
}

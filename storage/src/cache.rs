//! The write-back cache: points received but not yet in whisper, per metric.
//!
//! Sharded by name hash so receivers on several threads rarely contend.
//! The writer checks a metric's points out (they stay readable as "in
//! flight" until written), writes them, then completes or requeues them, so
//! a point is visible to reads from the moment it is accepted until whisper
//! holds it. Each entry remembers the oldest write-ahead-log segment its
//! points came from, which tells the log which segments may be deleted.
//! A shard keeps its points in a slab of fixed chunks, not a list per metric.

mod entries;

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use entries::Entries;

/// One received point.
#[derive(Debug, Clone, PartialEq)]
pub struct Datapoint {
    /// Metric name (already validated).
    pub name: String,
    /// Epoch seconds.
    pub timestamp: i64,
    /// Value.
    pub value: f64,
}

/// A point as the cache holds it: 12 bytes. Whisper's timestamps are
/// unsigned 32-bit, and [`crate::store::Store::accept`] takes no other.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
struct Held {
    timestamp: u32,
    value: f64,
}

impl Held {
    fn new(timestamp: i64, value: f64) -> Held {
        Held {
            // Checked by the store; a caller that did not check gets the
            // nearest time whisper could hold rather than a wrapped one.
            timestamp: timestamp.clamp(0, i64::from(u32::MAX)) as u32,
            value,
        }
    }

    fn point(self) -> (i64, f64) {
        (i64::from(self.timestamp), self.value)
    }
}

/// Points per chunk: five 12-byte points and a link make 64 bytes.
const CHUNK: usize = 5;

/// No chunk: the end of a list.
const END: u32 = u32::MAX;

/// A run of points in a shard's slab, linked to the next.
#[derive(Clone, Copy)]
struct Chunk {
    points: [Held; CHUNK],
    next: u32,
}

/// Points in arrival order: a chain of chunks, all full but the last.
#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: u32,
}

impl List {
    const EMPTY: List = List {
        head: END,
        tail: END,
        len: 0,
    };

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for List {
    fn default() -> Self {
        List::EMPTY
    }
}

/// Chunks per slab page: 16 KiB, so a shard's slab grows without copying
/// and has at most one page's worth of chunks not yet made.
const PAGE_CHUNKS: usize = 256;

/// A shard's chunks, used and free.
///
/// Points live in fixed chunks rather than in a list allocated per metric:
/// the cache holds many short lists, and lists grown and freed in
/// lock-step left the allocator's pages part used (8 of 39 bytes a cached
/// point, measured with the system allocator; see docs/BENCHMARKS.md).
struct Slab {
    pages: Vec<Box<[Chunk]>>,
    /// Chunks made so far (every one used or free).
    len: usize,
    /// Chunks no list holds, linked through `next`.
    free: u32,
    free_count: usize,
}

impl Slab {
    fn new() -> Slab {
        Slab {
            pages: Vec::new(),
            len: 0,
            free: END,
            free_count: 0,
        }
    }

    fn at(&self, i: u32) -> &Chunk {
        &self.pages[i as usize / PAGE_CHUNKS][i as usize % PAGE_CHUNKS]
    }

    fn at_mut(&mut self, i: u32) -> &mut Chunk {
        &mut self.pages[i as usize / PAGE_CHUNKS][i as usize % PAGE_CHUNKS]
    }

    fn take_chunk(&mut self) -> u32 {
        if self.free != END {
            let at = self.free;
            self.free = self.at(at).next;
            self.free_count -= 1;
            self.at_mut(at).next = END;
            return at;
        }
        if self.len.is_multiple_of(PAGE_CHUNKS) {
            let empty = Chunk {
                points: [Held::new(0, 0.0); CHUNK],
                next: END,
            };
            self.pages.push(vec![empty; PAGE_CHUNKS].into_boxed_slice());
        }
        self.len += 1;
        (self.len - 1) as u32
    }

    fn push(&mut self, list: &mut List, point: Held) {
        let slot = list.len as usize % CHUNK;
        if slot == 0 {
            let at = self.take_chunk();
            if list.head == END {
                list.head = at;
            } else {
                self.at_mut(list.tail).next = at;
            }
            list.tail = at;
        }
        self.at_mut(list.tail).points[slot] = point;
        list.len += 1;
    }

    fn points<'s>(&'s self, list: &List) -> impl Iterator<Item = Held> + 's {
        let (mut at, mut left) = (list.head, list.len as usize);
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let chunk = self.at(at);
            let n = left.min(CHUNK);
            left -= n;
            at = chunk.next;
            Some(chunk.points[..n].iter().copied())
        })
        .flatten()
    }

    /// Gives a list's chunks back to the free chain in one step.
    fn release(&mut self, list: List) {
        if list.head == END {
            return;
        }
        self.at_mut(list.tail).next = self.free;
        self.free = list.head;
        self.free_count += (list.len as usize).div_ceil(CHUNK);
    }

    /// `first` then `then` as one list (a requeue: points back ahead of
    /// those that came meanwhile).
    fn concat(&mut self, first: List, then: List) -> List {
        if first.is_empty() {
            return then;
        }
        if then.is_empty() {
            return first;
        }
        if (first.len as usize).is_multiple_of(CHUNK) {
            // Every chunk of the first list is full: link them as they are.
            self.at_mut(first.tail).next = then.head;
            return List {
                head: first.head,
                tail: then.tail,
                len: first.len + then.len,
            };
        }
        let mut joined = first;
        let moved: Vec<Held> = self.points(&then).collect();
        for p in moved {
            self.push(&mut joined, p);
        }
        self.release(then);
        joined
    }

    /// A copy here of `list`, which lives in `from`.
    fn copy(&mut self, from: &Slab, list: &List) -> List {
        let mut copied = List::EMPTY;
        for p in from.points(list) {
            self.push(&mut copied, p);
        }
        copied
    }

    /// Whether three quarters of a sizeable slab are free.
    fn mostly_free(&self) -> bool {
        self.len >= 4 * PAGE_CHUNKS && self.free_count * 4 >= self.len * 3
    }
}

#[derive(Default)]
struct Entry {
    /// Points waiting for the writer.
    points: List,
    /// WAL segment of the oldest waiting point.
    segment: u64,
    /// Points checked out by the writer and their segment (boxed: most
    /// entries have none, and every entry pays for the field).
    in_flight: Option<Box<(List, u64)>>,
    /// A series whose file the name index may not hold yet: finds list it
    /// from here ([`Cache::unfiled`]) until [`Cache::filed`].
    unfiled: bool,
}

/// One shard: entries by metric name, their points in one slab.
struct Shard {
    /// Keyed by a name shared with the writer's order and the unfiled
    /// series a find lists, so they hold no copies of it.
    entries: Entries<Entry>,
    slab: Slab,
    /// Entries marked `unfiled`, so finds skip a shard without any.
    unfiled: usize,
}

impl Shard {
    /// Forgets `name`'s entry.
    fn remove(&mut self, name: &str) {
        if self.entries.remove(name).is_some_and(|e| e.unfiled) {
            self.unfiled -= 1;
        }
    }

    /// Rebuilds the entries and the slab, each when most of it is free, so a burst's memory
    /// goes back once the writer has caught up.
    fn compact(&mut self) {
        self.entries.compact();
        if !self.slab.mostly_free() {
            return;
        }
        let old = std::mem::replace(&mut self.slab, Slab::new());
        for entry in self.entries.values_mut() {
            entry.points = self.slab.copy(&old, &entry.points);
            if let Some(flight) = entry.in_flight.as_mut() {
                flight.0 = self.slab.copy(&old, &flight.0);
            }
        }
    }
}

/// Points checked out for writing: sorted by time, one per timestamp (the
/// last received wins, as in carbon's cache).
#[derive(Debug)]
pub struct Checkout {
    /// Metric name.
    pub name: String,
    /// Sorted, deduplicated points.
    pub points: Vec<(i64, f64)>,
    /// The series was [unfiled](Cache::unfiled) when checked out: whoever
    /// writes it into a file this node did not make puts the file in the
    /// name tree (see [`crate::store::Store::note_file`]) before the
    /// points leave the cache, or finds would lose it until a rescan.
    pub unfiled: bool,
}

/// Sizes reported by [`Cache::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Points held, waiting or in flight.
    pub points: usize,
    /// Metrics with points held.
    pub metrics: usize,
}

/// The sharded cache. See the module docs.
pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    size: AtomicUsize,
    max_size: usize,
}

/// Sorts by time and keeps the last point given for each timestamp.
fn sort_dedup(points: &mut Vec<(i64, f64)>) {
    points.reverse();
    // Stable: after the reverse, the last received comes first within a timestamp.
    points.sort_by_key(|p| p.0);
    points.dedup_by_key(|p| p.0);
}

impl Cache {
    /// A cache holding at most about `max_size` points (0: unbounded).
    pub fn new(max_size: usize, shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| {
                Mutex::new(Shard {
                    entries: Entries::new(),
                    slab: Slab::new(),
                    unfiled: 0,
                })
            })
            .collect();
        Cache {
            shards,
            hasher: RandomState::new(),
            size: AtomicUsize::new(0),
            max_size,
        }
    }

    fn shard(&self, name: &str) -> &Mutex<Shard> {
        let i = self.hasher.hash_one(name) as usize % self.shards.len();
        &self.shards[i]
    }

    fn lock<'a>(m: &'a Mutex<Shard>) -> std::sync::MutexGuard<'a, Shard> {
        // A panic while holding a shard leaves plain data behind; keep going.
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Points held, waiting or in flight.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Whether another batch may be added without passing `max_size`.
    pub fn has_room(&self) -> bool {
        self.max_size == 0 || self.size() < self.max_size
    }

    /// Adds points that the write-ahead log stored in `segment`.
    pub fn add(&self, points: &[Datapoint], segment: u64) {
        self.add_noting(points, segment, |_| {});
    }

    /// Adds points as [`Self::add`], calling `new_name` with each name the
    /// cache did not hold. Such a series is [unfiled](Self::unfiled) (found
    /// from the cache) unless it is tagged (tagged names are not part of
    /// the name tree), until [`Self::filed`] says the tree holds it.
    pub fn add_noting(
        &self,
        points: &[Datapoint],
        segment: u64,
        mut new_name: impl FnMut(&Arc<str>),
    ) {
        for p in points {
            let mut guard = Self::lock(self.shard(&p.name));
            let Shard {
                entries,
                slab,
                unfiled,
            } = &mut *guard;
            let mut fresh = None;
            let entry = entries.get_or_insert(&p.name, |name| fresh = Some(name.clone()));
            if let Some(name) = fresh {
                if !crate::tags::is_tagged(&name) {
                    entry.unfiled = true;
                    *unfiled += 1;
                }
                new_name(&name);
            }
            if entry.points.is_empty() {
                entry.segment = segment;
            }
            slab.push(&mut entry.points, Held::new(p.timestamp, p.value));
        }
        self.size.fetch_add(points.len(), Ordering::Relaxed);
    }

    /// The points held for `name` (in flight first, then waiting), sorted
    /// by time with the last received winning per timestamp.
    pub fn get(&self, name: &str) -> Vec<(i64, f64)> {
        let shard = Self::lock(self.shard(name));
        let Some(entry) = shard.entries.get(name) else {
            return Vec::new();
        };
        let mut points: Vec<(i64, f64)> = entry
            .in_flight
            .iter()
            .flat_map(|f| shard.slab.points(&f.0))
            .chain(shard.slab.points(&entry.points))
            .map(Held::point)
            .collect();
        drop(shard);
        sort_dedup(&mut points);
        points
    }

    /// Names of metrics with waiting points, the largest backlog first
    /// (carbon's `max` strategy), in the `mine` parts of `parts` disjoint
    /// parts of the names (by shard), so several writers never take the
    /// same metric.
    pub fn order_by_size_in(&self, mine: &[usize], parts: usize) -> Vec<Arc<str>> {
        let parts = parts.max(1);
        let shards: Vec<&Mutex<Shard>> = self
            .shards
            .iter()
            .enumerate()
            .filter(|(i, _)| mine.iter().any(|part| i % parts == part % parts))
            .map(|(_, shard)| shard)
            .collect();
        // Sized once: a writer behind holds this for every waiting metric,
        // and a list grown by doubling would keep up to twice that, plus
        // the copies made while it grew, in the allocator.
        let count = shards.iter().map(|s| Self::lock(s).entries.len()).sum();
        let mut sizes: Vec<(u32, Arc<str>)> = Vec::with_capacity(count);
        for shard in shards {
            let shard = Self::lock(shard);
            sizes.extend(
                shard
                    .entries
                    .iter()
                    .filter(|(_, e)| !e.points.is_empty())
                    .map(|(n, e)| (e.points.len, n.clone())),
            );
        }
        sizes.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
        // Collected in place, into the same allocation.
        sizes.into_iter().map(|(_, n)| n).collect()
    }

    /// Moves `name`'s waiting points in flight for the writer. `None` when
    /// nothing waits or a previous checkout is still in flight.
    pub fn checkout(&self, name: &str) -> Option<Checkout> {
        let mut shard = Self::lock(self.shard(name));
        let entry = shard.entries.get_mut(name)?;
        if entry.points.is_empty() || entry.in_flight.is_some() {
            return None;
        }
        let points = std::mem::take(&mut entry.points);
        entry.in_flight = Some(Box::new((points, entry.segment)));
        let unfiled = entry.unfiled;
        Some(Self::checked_out(shard, name, &points, unfiled))
    }

    /// The checkout of `points`, now in flight: copied out under the
    /// shard's lock, sorted after it is released so receivers wait less.
    fn checked_out(
        shard: MutexGuard<'_, Shard>,
        name: &str,
        points: &List,
        unfiled: bool,
    ) -> Checkout {
        let mut sorted: Vec<(i64, f64)> = shard.slab.points(points).map(Held::point).collect();
        drop(shard);
        sort_dedup(&mut sorted);
        Checkout {
            name: name.to_string(),
            points: sorted,
            unfiled,
        }
    }

    /// Keeps the writer off `name` while its file is read or replaced
    /// elsewhere (a rebalance copying it, a resize): its waiting points go
    /// in flight as for a writer's checkout, even when there are none, so
    /// the writer leaves the file alone until [`Cache::release`]. `None`
    /// while the writer has it in flight (try again in a moment).
    pub fn hold(&self, name: &str) -> Option<Checkout> {
        let mut shard = Self::lock(self.shard(name));
        let entry = shard.entries.get_or_insert(name, |_| {});
        if entry.in_flight.is_some() {
            return None;
        }
        let points = std::mem::take(&mut entry.points);
        // An empty hold must not pin the write-ahead log's oldest segment.
        let segment = if points.is_empty() {
            u64::MAX
        } else {
            entry.segment
        };
        entry.in_flight = Some(Box::new((points, segment)));
        let unfiled = entry.unfiled;
        Some(Self::checked_out(shard, name, &points, unfiled))
    }

    /// Ends a [`Cache::hold`]: the held points go back ahead of any that
    /// arrived since (`keep`, for the writer to write here) or leave the
    /// cache (they went elsewhere).
    pub fn release(&self, name: &str, keep: bool) {
        if keep {
            self.requeue(name);
            let mut shard = Self::lock(self.shard(name));
            if shard
                .entries
                .get(name)
                .is_some_and(|e| e.points.is_empty() && e.in_flight.is_none())
            {
                shard.remove(name);
            }
        } else {
            self.complete(name);
        }
    }

    /// The writer finished with `name`'s in-flight points: they leave the cache.
    pub fn complete(&self, name: &str) {
        let mut guard = Self::lock(self.shard(name));
        let shard = &mut *guard;
        let Some(entry) = shard.entries.get_mut(name) else {
            return;
        };
        if let Some(flight) = entry.in_flight.take() {
            self.size
                .fetch_sub(flight.0.len as usize, Ordering::Relaxed);
            shard.slab.release(flight.0);
        }
        if entry.points.is_empty() {
            shard.remove(name);
        }
        shard.compact();
    }

    /// The writer could not write `name` yet (creation rate limit): its
    /// in-flight points go back ahead of any that arrived since.
    pub fn requeue(&self, name: &str) {
        let mut guard = Self::lock(self.shard(name));
        let Shard { entries, slab, .. } = &mut *guard;
        let Some(entry) = entries.get_mut(name) else {
            return;
        };
        if let Some(flight) = entry.in_flight.take() {
            let (points, segment) = *flight;
            // The oldest of both: points that arrived meanwhile may come
            // from an older segment than an empty hold's.
            let waiting = (!entry.points.is_empty()).then_some(entry.segment);
            entry.points = slab.concat(points, entry.points);
            entry.segment = waiting.map_or(segment, |w| w.min(segment));
        }
    }

    /// The oldest WAL segment any held point came from, if any point is held.
    pub fn oldest_segment(&self) -> Option<u64> {
        let mut oldest: Option<u64> = None;
        for shard in self.shards.iter() {
            for (_, entry) in Self::lock(shard).entries.iter() {
                let waiting = (!entry.points.is_empty()).then_some(entry.segment);
                let flying = entry.in_flight.as_ref().map(|f| f.1);
                for s in waiting.into_iter().chain(flying) {
                    oldest = Some(oldest.map_or(s, |o| o.min(s)));
                }
            }
        }
        oldest
    }

    /// Series received whose files the name index may not hold yet (see
    /// [`Self::add_noting`]). A find reads these before the tree, and a
    /// series leaves them only after the tree has it, so a find always
    /// sees a series whose file is being made in one or the other.
    pub fn unfiled(&self) -> Vec<Arc<str>> {
        let mut names = Vec::new();
        for shard in self.shards.iter() {
            let shard = Self::lock(shard);
            if shard.unfiled > 0 {
                names.extend(
                    shard
                        .entries
                        .iter()
                        .filter(|(_, e)| e.unfiled)
                        .map(|(n, _)| n.clone())
                        .take(shard.unfiled),
                );
            }
        }
        names
    }

    /// The name index holds `name`: it is no longer [unfiled](Self::unfiled).
    pub fn filed(&self, name: &str) {
        let mut guard = Self::lock(self.shard(name));
        let shard = &mut *guard;
        if let Some(entry) = shard.entries.get_mut(name).filter(|e| e.unfiled) {
            entry.unfiled = false;
            shard.unfiled -= 1;
        }
    }

    /// Names of every metric with points held.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for shard in self.shards.iter() {
            names.extend(Self::lock(shard).entries.iter().map(|(k, _)| k.to_string()));
        }
        names
    }

    /// Points and metrics held.
    pub fn stats(&self) -> CacheStats {
        let metrics = self
            .shards
            .iter()
            .map(|s| Self::lock(s).entries.len())
            .sum();
        CacheStats {
            points: self.size(),
            metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dp(name: &str, ts: i64, value: f64) -> Datapoint {
        Datapoint {
            name: name.into(),
            timestamp: ts,
            value,
        }
    }

    #[test]
    fn checkout_keeps_points_readable_until_complete() {
        let cache = Cache::new(0, 4);
        cache.add(
            &[
                dp("a", 20, 2.0),
                dp("a", 10, 1.0),
                dp("a", 20, 3.0),
                dp("b", 5, 9.0),
            ],
            1,
        );
        assert_eq!(cache.size(), 4);
        assert_eq!(
            cache.order_by_size_in(&[0], 1),
            vec![Arc::from("a"), Arc::from("b")]
        );
        let c = cache.checkout("a").unwrap();
        assert_eq!(c.points, vec![(10, 1.0), (20, 3.0)]);
        assert!(cache.checkout("a").is_none());
        cache.add(&[dp("a", 30, 4.0)], 2);
        assert_eq!(cache.get("a"), vec![(10, 1.0), (20, 3.0), (30, 4.0)]);
        assert_eq!(cache.oldest_segment(), Some(1));
        cache.complete("a");
        assert_eq!(cache.get("a"), vec![(30, 4.0)]);
        assert_eq!(cache.size(), 2);
        assert_eq!(
            cache.stats(),
            CacheStats {
                points: 2,
                metrics: 2
            }
        );
    }

    #[test]
    fn an_empty_hold_keeps_the_log_segment_of_points_that_came_meanwhile() {
        let cache = Cache::new(0, 1);
        assert!(cache.hold("a").unwrap().points.is_empty());
        cache.add(&[dp("a", 10, 1.0)], 5);
        assert!(cache.checkout("a").is_none(), "the writer is held off");
        cache.release("a", true);
        assert_eq!(cache.oldest_segment(), Some(5));
        assert_eq!(cache.checkout("a").unwrap().points, vec![(10, 1.0)]);
        cache.complete("a");
        assert!(cache.hold("b").is_some());
        cache.release("b", true);
        assert!(
            cache.names().is_empty(),
            "an empty hold leaves nothing behind"
        );
    }

    #[test]
    fn requeue_puts_points_back_first() {
        let cache = Cache::new(3, 1);
        cache.add(&[dp("a", 10, 1.0), dp("a", 20, 2.0)], 7);
        assert!(cache.has_room());
        cache.checkout("a").unwrap();
        cache.add(&[dp("a", 20, 5.0)], 8);
        assert!(!cache.has_room());
        cache.requeue("a");
        assert_eq!(
            cache.checkout("a").unwrap().points,
            vec![(10, 1.0), (20, 5.0)]
        );
        assert_eq!(cache.oldest_segment(), Some(7));
        cache.complete("a");
        assert_eq!(cache.size(), 0);
        assert_eq!(cache.oldest_segment(), None);
        assert_eq!(cache.stats().metrics, 0);
    }

    #[test]
    fn a_requeue_keeps_order_across_chunks() {
        let cache = Cache::new(0, 1);
        let first: Vec<Datapoint> = (0..7).map(|i| dp("a", 10 * i, i as f64)).collect();
        cache.add(&first, 1);
        assert_eq!(cache.checkout("a").unwrap().points.len(), 7);
        // Meanwhile: a later value for a timestamp already in flight, and
        // new ones; after the requeue the later value still wins.
        let meanwhile: Vec<Datapoint> =
            (5..12).map(|i| dp("a", 10 * i, 100.0 + i as f64)).collect();
        cache.add(&meanwhile, 2);
        cache.requeue("a");
        let points = cache.checkout("a").unwrap().points;
        let want: Vec<(i64, f64)> = (0..12)
            .map(|i| (10 * i, if i < 5 { i as f64 } else { 100.0 + i as f64 }))
            .collect();
        assert_eq!(points, want);
        assert_eq!(cache.size(), 14);
        cache.complete("a");
        assert_eq!(cache.size(), 0);
    }

    #[test]
    fn a_drained_slab_is_compacted_and_what_stays_is_intact() {
        let cache = Cache::new(0, 1);
        // 2,000 metrics of 6 points (two chunks each), then all but ten
        // written: the slab was rebuilt once three quarters were free.
        for m in 0..2000 {
            let points: Vec<Datapoint> = (0..6)
                .map(|i| dp(&format!("m{m}"), 10 * i, (m * 10 + i) as f64))
                .collect();
            cache.add(&points, 1);
        }
        let chunks = |c: &Cache| Cache::lock(&c.shards[0]).slab.len;
        assert_eq!(chunks(&cache), 4000);
        for m in 10..2000 {
            cache.checkout(&format!("m{m}")).unwrap();
            cache.complete(&format!("m{m}"));
        }
        assert!(chunks(&cache) <= 1000, "{} chunks left", chunks(&cache));
        for m in 0..10 {
            let want: Vec<(i64, f64)> = (0..6).map(|i| (10 * i, (m * 10 + i) as f64)).collect();
            assert_eq!(cache.get(&format!("m{m}")), want);
        }
        assert_eq!(cache.size(), 60);
        // Freed chunks are taken again before the slab grows.
        cache.add(&[dp("n", 10, 1.0)], 2);
        let before = chunks(&cache);
        cache.checkout("n").unwrap();
        cache.complete("n");
        cache.add(&[dp("o", 10, 1.0)], 2);
        assert_eq!(chunks(&cache), before);
    }

    #[test]
    fn new_untagged_series_are_unfiled_until_filed_or_gone() {
        let cache = Cache::new(0, 4);
        let unfiled = |cache: &Cache| {
            let mut names: Vec<String> = cache.unfiled().iter().map(|n| n.to_string()).collect();
            names.sort();
            names
        };
        cache.add(
            &[
                dp("a.new", 10, 1.0),
                dp("a.known", 10, 1.0),
                dp("a.tagged;dc=x", 10, 1.0),
                dp("a.new", 20, 2.0),
            ],
            1,
        );
        assert_eq!(unfiled(&cache), vec!["a.known", "a.new"]);
        cache.filed("a.known");
        cache.filed("a.known");
        cache.filed("not.held");
        assert_eq!(unfiled(&cache), vec!["a.new"]);
        // Written and gone from the cache: nothing to list.
        assert!(cache.checkout("a.new").is_some());
        cache.complete("a.new");
        assert!(unfiled(&cache).is_empty());
        // Back with a new point: new to the cache again.
        cache.add(&[dp("a.new", 30, 3.0)], 2);
        assert_eq!(unfiled(&cache), vec!["a.new"]);
        // Every shard's count came back to what its entries say.
        let counted = |cache: &Cache| {
            for shard in cache.shards.iter() {
                let shard = Cache::lock(shard);
                let marked = shard.entries.iter().filter(|(_, e)| e.unfiled).count();
                assert_eq!(shard.unfiled, marked);
            }
        };
        counted(&cache);
        // Through a compaction of the entries, a hold and a requeue.
        let cache = Cache::new(0, 1);
        let names: Vec<String> = (0..3000).map(|i| format!("b.m{i}")).collect();
        for name in &names {
            cache.add(&[dp(name, 10, 1.0)], 1);
        }
        for name in names.iter().filter(|n| !n.ends_with('7')) {
            let checkout = cache.checkout(name);
            assert!(checkout.is_some_and(|c| c.unfiled), "{name}");
            cache.complete(name);
        }
        cache.filed("b.m17");
        assert!(cache.hold("b.m27").is_some());
        cache.release("b.m27", true);
        assert!(cache.checkout("b.m37").is_some());
        cache.requeue("b.m37");
        counted(&cache);
        let mut left: Vec<String> = cache.unfiled().iter().map(|n| n.to_string()).collect();
        left.sort();
        let mut want: Vec<String> = names
            .iter()
            .filter(|n| n.ends_with('7') && *n != "b.m17")
            .cloned()
            .collect();
        want.sort();
        assert_eq!(left, want);
    }
}

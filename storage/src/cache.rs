//! The write-back cache: points received but not yet in whisper, per metric.
//!
//! Sharded by name hash so receivers on several threads rarely contend.
//! The writer checks a metric's points out (they stay readable as "in
//! flight" until written), writes them, then completes or requeues them, so
//! a point is visible to reads from the moment it is accepted until whisper
//! holds it. Each entry remembers the oldest write-ahead-log segment its
//! points came from, which tells the log which segments may be deleted.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// Appends with growth by half rather than doubling: the cache holds many
/// short lists, where doubling leaves a third of them empty on average.
fn push(points: &mut Vec<Held>, point: Held) {
    if points.len() == points.capacity() {
        points.reserve_exact((points.capacity() / 2).max(4));
    }
    points.push(point);
}

#[derive(Default)]
struct Entry {
    /// Points waiting for the writer, in arrival order.
    points: Vec<Held>,
    /// WAL segment of the oldest waiting point.
    segment: u64,
    /// Points checked out by the writer and their segment (boxed: most
    /// entries have none, and every entry pays for the field).
    in_flight: Option<Box<(Vec<Held>, u64)>>,
}

/// Points checked out for writing: sorted by time, one per timestamp (the
/// last received wins, as in carbon's cache).
#[derive(Debug)]
pub struct Checkout {
    /// Metric name.
    pub name: String,
    /// Sorted, deduplicated points.
    pub points: Vec<(i64, f64)>,
}

/// Sizes reported by [`Cache::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Points held, waiting or in flight.
    pub points: usize,
    /// Metrics with points held.
    pub metrics: usize,
}

/// One shard: entries by metric name.
type Shard = HashMap<Box<str>, Entry>;

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
            .map(|_| Mutex::new(HashMap::new()))
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
    /// cache did not hold (the name index learns of new series there, once
    /// per name and write-back rather than once per point).
    pub fn add_noting<'p>(
        &self,
        points: &'p [Datapoint],
        segment: u64,
        mut new_name: impl FnMut(&'p str),
    ) {
        for p in points {
            let mut shard = Self::lock(self.shard(&p.name));
            let entry = match shard.get_mut(p.name.as_str()) {
                Some(e) => e,
                None => {
                    new_name(&p.name);
                    shard.entry(p.name.as_str().into()).or_default()
                }
            };
            if entry.points.is_empty() {
                entry.segment = segment;
            }
            push(&mut entry.points, Held::new(p.timestamp, p.value));
        }
        self.size.fetch_add(points.len(), Ordering::Relaxed);
    }

    /// The points held for `name` (in flight first, then waiting), sorted
    /// by time with the last received winning per timestamp.
    pub fn get(&self, name: &str) -> Vec<(i64, f64)> {
        let shard = Self::lock(self.shard(name));
        let Some(entry) = shard.get(name) else {
            return Vec::new();
        };
        let mut points: Vec<(i64, f64)> = entry
            .in_flight
            .iter()
            .flat_map(|f| f.0.iter())
            .chain(&entry.points)
            .map(|h| h.point())
            .collect();
        drop(shard);
        sort_dedup(&mut points);
        points
    }

    /// Names of metrics with waiting points, the largest backlog first
    /// (carbon's `max` strategy), in one of `parts` disjoint parts of the
    /// names (by shard), so several writers never take the same metric.
    pub fn order_by_size_in(&self, part: usize, parts: usize) -> Vec<String> {
        let mut sizes: Vec<(usize, String)> = Vec::new();
        let parts = parts.max(1);
        for (_, shard) in self
            .shards
            .iter()
            .enumerate()
            .filter(|(i, _)| i % parts == part % parts)
        {
            let shard = Self::lock(shard);
            sizes.extend(
                shard
                    .iter()
                    .filter(|(_, e)| !e.points.is_empty())
                    .map(|(n, e)| (e.points.len(), n.to_string())),
            );
        }
        sizes.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
        sizes.into_iter().map(|(_, n)| n).collect()
    }

    /// Moves `name`'s waiting points in flight for the writer. `None` when
    /// nothing waits or a previous checkout is still in flight.
    pub fn checkout(&self, name: &str) -> Option<Checkout> {
        let mut shard = Self::lock(self.shard(name));
        let entry = shard.get_mut(name)?;
        if entry.points.is_empty() || entry.in_flight.is_some() {
            return None;
        }
        let points = std::mem::take(&mut entry.points);
        let mut sorted: Vec<(i64, f64)> = points.iter().map(|h| h.point()).collect();
        entry.in_flight = Some(Box::new((points, entry.segment)));
        drop(shard);
        sort_dedup(&mut sorted);
        Some(Checkout {
            name: name.to_string(),
            points: sorted,
        })
    }

    /// Keeps the writer off `name` while its file is read or replaced
    /// elsewhere (a rebalance copying it, a resize): its waiting points go
    /// in flight as for a writer's checkout, even when there are none, so
    /// the writer leaves the file alone until [`Cache::release`]. `None`
    /// while the writer has it in flight (try again in a moment).
    pub fn hold(&self, name: &str) -> Option<Checkout> {
        let mut shard = Self::lock(self.shard(name));
        let entry = shard.entry(name.into()).or_default();
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
        let mut sorted: Vec<(i64, f64)> = points.iter().map(|h| h.point()).collect();
        entry.in_flight = Some(Box::new((points, segment)));
        drop(shard);
        sort_dedup(&mut sorted);
        Some(Checkout {
            name: name.to_string(),
            points: sorted,
        })
    }

    /// Ends a [`Cache::hold`]: the held points go back ahead of any that
    /// arrived since (`keep`, for the writer to write here) or leave the
    /// cache (they went elsewhere).
    pub fn release(&self, name: &str, keep: bool) {
        if keep {
            self.requeue(name);
            let mut shard = Self::lock(self.shard(name));
            if shard
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
        let mut shard = Self::lock(self.shard(name));
        let Some(entry) = shard.get_mut(name) else {
            return;
        };
        if let Some(flight) = entry.in_flight.take() {
            self.size.fetch_sub(flight.0.len(), Ordering::Relaxed);
        }
        if entry.points.is_empty() {
            shard.remove(name);
        }
    }

    /// The writer could not write `name` yet (creation rate limit): its
    /// in-flight points go back ahead of any that arrived since.
    pub fn requeue(&self, name: &str) {
        let mut shard = Self::lock(self.shard(name));
        let Some(entry) = shard.get_mut(name) else {
            return;
        };
        if let Some(flight) = entry.in_flight.take() {
            let (mut points, segment) = *flight;
            // The oldest of both: points that arrived meanwhile may come
            // from an older segment than an empty hold's.
            let waiting = (!entry.points.is_empty()).then_some(entry.segment);
            points.append(&mut entry.points);
            entry.points = points;
            entry.segment = waiting.map_or(segment, |w| w.min(segment));
        }
    }

    /// The oldest WAL segment any held point came from, if any point is held.
    pub fn oldest_segment(&self) -> Option<u64> {
        let mut oldest: Option<u64> = None;
        for shard in self.shards.iter() {
            for entry in Self::lock(shard).values() {
                let waiting = (!entry.points.is_empty()).then_some(entry.segment);
                let flying = entry.in_flight.as_ref().map(|f| f.1);
                for s in waiting.into_iter().chain(flying) {
                    oldest = Some(oldest.map_or(s, |o| o.min(s)));
                }
            }
        }
        oldest
    }

    /// Names of every metric with points held.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for shard in self.shards.iter() {
            names.extend(Self::lock(shard).keys().map(|k| k.to_string()));
        }
        names
    }

    /// Points and metrics held.
    pub fn stats(&self) -> CacheStats {
        let metrics = self.shards.iter().map(|s| Self::lock(s).len()).sum();
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
            cache.order_by_size_in(0, 1),
            vec!["a".to_string(), "b".to_string()]
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
}

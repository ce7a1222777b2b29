//! A shard's metrics by name: each value in a fixed page where it stays,
//! found through a table of 4-byte indices.
//!
//! A `HashMap` keeps its 48-byte slots in one table that it copies into a
//! new one twice the size as it grows. The tables it leaves behind are
//! never asked for again at their size, so with receivers on several
//! threads the allocator kept them: 6–8 bytes a cached point (see
//! docs/BENCHMARKS.md, "Bytes per cached point: a table of indices").
//! Here only the index table is copied as it grows, and it is a twelfth
//! of the size.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

/// Slots per page: 256 of the cache's 48-byte entries make 12 KiB.
const PAGE_SLOTS: usize = 256;

/// A name and its value; a free slot holds the map's `vacant` name.
type Slot<V> = (Arc<str>, V);

/// Values by metric name. Names are shared (`Arc<str>`) so that those who
/// list them (the writer's order, a find's unfiled series) do not copy them.
pub(super) struct Entries<V> {
    /// Indices of the used slots, by the hash of their name.
    table: HashTable<u32>,
    /// The slots, used and free; a free slot holds `vacant` and a default value.
    pages: Vec<Box<[Slot<V>]>>,
    /// Slots made so far (used or free).
    made: usize,
    /// Slots no name holds, to be used first.
    free: Vec<u32>,
    /// The name every free slot holds, so a slot is always a name and a value.
    vacant: Arc<str>,
    hasher: RandomState,
}

impl<V: Default> Entries<V> {
    /// An empty map.
    pub(super) fn new() -> Self {
        Entries {
            table: HashTable::new(),
            pages: Vec::new(),
            made: 0,
            free: Vec::new(),
            vacant: Arc::from(""),
            hasher: RandomState::new(),
        }
    }

    /// Names held.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    fn slot(&self, i: u32) -> &Slot<V> {
        slot(&self.pages, i)
    }

    fn slot_mut(&mut self, i: u32) -> &mut Slot<V> {
        &mut self.pages[i as usize / PAGE_SLOTS][i as usize % PAGE_SLOTS]
    }

    fn index(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.table
            .find(hash, |&i| &*slot(&self.pages, i).0 == name)
            .copied()
    }

    /// The value for `name`.
    pub(super) fn get(&self, name: &str) -> Option<&V> {
        self.index(name).map(|i| &self.slot(i).1)
    }

    /// The value for `name`, to change.
    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        let i = self.index(name)?;
        Some(&mut self.slot_mut(i).1)
    }

    /// The value for `name`, a default one put there first if the map did
    /// not hold the name; `new_name` sees the name so made.
    pub(super) fn get_or_insert(&mut self, name: &str, new_name: impl FnOnce(&Arc<str>)) -> &mut V {
        let i = match self.index(name) {
            Some(i) => i,
            None => {
                let name: Arc<str> = name.into();
                new_name(&name);
                self.insert_new(name, V::default())
            }
        };
        &mut self.slot_mut(i).1
    }

    /// Puts a name the map does not hold in a slot; answers the slot.
    fn insert_new(&mut self, name: Arc<str>, value: V) -> u32 {
        let hash = self.hasher.hash_one(&*name);
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.made.is_multiple_of(PAGE_SLOTS) {
                    let page: Vec<Slot<V>> = (0..PAGE_SLOTS)
                        .map(|_| (self.vacant.clone(), V::default()))
                        .collect();
                    self.pages.push(page.into_boxed_slice());
                }
                self.made += 1;
                (self.made - 1) as u32
            }
        };
        *self.slot_mut(i) = (name, value);
        let Entries {
            table,
            pages,
            hasher,
            ..
        } = self;
        table.insert_unique(hash, i, |&j| hasher.hash_one(&*slot(pages, j).0));
        i
    }

    /// Forgets `name`; answers its value.
    pub(super) fn remove(&mut self, name: &str) -> Option<V> {
        let hash = self.hasher.hash_one(name);
        let Entries {
            table, pages, free, ..
        } = self;
        let (i, _) = table
            .find_entry(hash, |&i| &*slot(pages, i).0 == name)
            .ok()?
            .remove();
        free.push(i);
        let vacant = (self.vacant.clone(), V::default());
        Some(std::mem::replace(self.slot_mut(i), vacant).1)
    }

    /// Every name held and its value.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.pages
            .iter()
            .flat_map(|page| page.iter())
            .filter(|(name, _)| !Arc::ptr_eq(name, &self.vacant))
            .map(|(name, value)| (name, value))
    }

    /// Every value held, to change.
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        let vacant = &self.vacant;
        self.pages
            .iter_mut()
            .flat_map(|page| page.iter_mut())
            .filter(move |(name, _)| !Arc::ptr_eq(name, vacant))
            .map(|(_, value)| value)
    }

    /// Moves the names into as few pages as they need when three quarters
    /// of many slots are free, so a burst's slots go back once the writer
    /// has caught up.
    pub(super) fn compact(&mut self) {
        if self.made < 4 * PAGE_SLOTS || self.len() * 4 > self.made {
            return;
        }
        let old = std::mem::take(&mut self.pages);
        self.table = HashTable::with_capacity(self.len());
        self.made = 0;
        self.free = Vec::new();
        for page in old {
            for (name, value) in page.into_vec() {
                if !Arc::ptr_eq(&name, &self.vacant) {
                    self.insert_new(name, value);
                }
            }
        }
    }
}

fn slot<V>(pages: &[Box<[Slot<V>]>], i: u32) -> &Slot<V> {
    &pages[i as usize / PAGE_SLOTS][i as usize % PAGE_SLOTS]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_back_with_their_values_after_removals_and_compaction() {
        let mut map: Entries<u64> = Entries::new();
        let mut made = Vec::new();
        for n in 0..3000u64 {
            *map.get_or_insert(&format!("m.{n}"), |name| made.push(name.to_string())) = n;
        }
        assert_eq!(made.len(), 3000);
        // Held already: not new, the value stays.
        assert_eq!(*map.get_or_insert("m.7", |_| panic!("m.7 is held")), 7);
        for n in (0..3000u64).filter(|n| n % 10 != 0) {
            map.remove(&format!("m.{n}"));
        }
        map.remove("never.held");
        assert_eq!(map.len(), 300);
        // The freed slots are used again before new ones are made.
        let made_before = map.made;
        *map.get_or_insert("again", |_| {}) = 1;
        assert_eq!(map.made, made_before);
        map.remove("again");
        map.compact();
        assert!(map.made < 3000, "{} slots after compaction", map.made);
        assert_eq!(map.len(), 300);
        for n in 0..3000u64 {
            let want = (n % 10 == 0).then_some(n);
            assert_eq!(map.get(&format!("m.{n}")).copied(), want, "m.{n}");
        }
        let mut listed: Vec<u64> = map.iter().map(|(_, v)| *v).collect();
        listed.sort_unstable();
        assert_eq!(listed, (0..3000).step_by(10).collect::<Vec<_>>());
        for v in map.values_mut() {
            *v += 1;
        }
        assert_eq!(map.get("m.10"), Some(&11));
        assert_eq!(map.get_mut("m.1"), None);
    }
}

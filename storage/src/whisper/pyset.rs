//! The iteration order of a CPython 3 `set` built from a list of ints.
//!
//! Whisper's `update_many` propagates a batch into coarser archives by walking
//! `set(lowerIntervals)`. When the coarser archive is still empty, the first
//! interval visited becomes its base point and fixes where every other slot
//! lands, so a byte-identical file needs the same visiting order. CPython's
//! order is its hash-table slot order: int hashes, open addressing with nine
//! linear probes then perturbation, and growth at 60% fill. This reproduces
//! that table (setobject.c, stable since 3.7) for the ints whisper uses.

const MIN_SIZE: usize = 8;
const LINEAR_PROBES: usize = 9;
const PERTURB_SHIFT: u32 = 5;

/// Python's `hash()` of an int.
fn py_hash(x: i64) -> u64 {
    const MODULUS: i128 = (1 << 61) - 1;
    // Every timestamp: an int below the modulus is its own hash.
    if (0..MODULUS as i64).contains(&x) {
        return x as u64;
    }
    let h = (i128::from(x).abs() % MODULUS) as i64;
    let h = if x < 0 { -h } else { h };
    (if h == -1 { -2 } else { h }) as u64
}

/// Finds `key`'s slot: `Ok` if present, `Err(free slot)` if not.
fn probe(table: &[Option<(i64, u64)>], key: i64, hash: u64) -> Result<usize, usize> {
    let mask = table.len() - 1;
    let mut i = (hash as usize) & mask;
    let mut perturb = hash;
    loop {
        let probes = if i + LINEAR_PROBES <= mask {
            LINEAR_PROBES
        } else {
            0
        };
        for (slot, entry) in table.iter().enumerate().skip(i).take(probes + 1) {
            match entry {
                None => return Err(slot),
                Some((k, h)) if *h == hash && *k == key => return Ok(slot),
                Some(_) => {}
            }
        }
        perturb >>= PERTURB_SHIFT;
        i = (i
            .wrapping_mul(5)
            .wrapping_add(1)
            .wrapping_add(perturb as usize))
            & mask;
    }
}

/// Distinct values of `items` in the order `for x in set(items)` visits them
/// on CPython 3.7 to 3.13.
pub fn set_iteration_order(items: &[i64]) -> Vec<i64> {
    let mut table: Vec<Option<(i64, u64)>> = vec![None; MIN_SIZE];
    let mut used = 0usize;
    let mut previous = None;
    for &key in items {
        // A repeat adds nothing to a set; batches repeat an interval per point.
        if previous.replace(key) == Some(key) {
            continue;
        }
        let hash = py_hash(key);
        let Err(slot) = probe(&table, key, hash) else {
            continue;
        };
        table[slot] = Some((key, hash));
        used += 1;
        let mask = table.len() - 1;
        if used * 5 >= mask * 3 {
            let min_used = if used > 50_000 { used * 2 } else { used * 4 };
            let mut size = MIN_SIZE;
            while size <= min_used {
                size <<= 1;
            }
            let old = std::mem::replace(&mut table, vec![None; size]);
            for (k, h) in old.into_iter().flatten() {
                if let Err(slot) = probe(&table, k, h) {
                    table[slot] = Some((k, h));
                }
            }
        }
    }
    table.into_iter().flatten().map(|(k, _)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ints_come_out_by_slot() {
        // CPython: list(set([10, 3, 8])) == [8, 10, 3] (8 % 8 = 0, 10 % 8 = 2, 3).
        assert_eq!(set_iteration_order(&[10, 3, 8]), vec![8, 10, 3]);
        assert_eq!(set_iteration_order(&[5, 5, 5]), vec![5]);
        assert_eq!(py_hash(-1), (-2i64) as u64);
    }
}

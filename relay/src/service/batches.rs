//! A FIFO of points kept as the batches they arrived in: a batch is queued
//! without copying its points, and a burst of millions grows a list of
//! batches rather than reallocating (and copying) one huge buffer.

use std::collections::VecDeque;

use crate::codec::Point;

/// Queued points, oldest first.
#[derive(Debug, Default)]
pub struct Batches {
    batches: VecDeque<VecDeque<Point>>,
    len: usize,
}

impl Batches {
    /// Points queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Queues a batch after the others.
    pub fn push(&mut self, points: Vec<Point>) {
        if !points.is_empty() {
            self.len += points.len();
            self.batches.push_back(points.into());
        }
    }

    /// Takes all points, oldest first.
    #[cfg(test)]
    pub fn drain_all(&mut self) -> Vec<Point> {
        self.len = 0;
        let mut all = Vec::new();
        for b in self.batches.drain(..) {
            all.extend(b);
        }
        all
    }

    /// Takes up to `n` points, fewer if their names and encoding would pass
    /// `max_bytes` (at least one if any are queued).
    pub fn take(&mut self, n: usize, max_bytes: usize) -> Vec<Point> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < n {
            let Some(front) = self.batches.front_mut() else {
                break;
            };
            let (mut k, mut full) = (0, false);
            for p in front.iter() {
                if out.len() + k == n {
                    break;
                }
                let b = p.name.len() + 32;
                if bytes + b > max_bytes && !(out.is_empty() && k == 0) {
                    full = true;
                    break;
                }
                bytes += b;
                k += 1;
            }
            out.extend(front.drain(..k));
            if front.is_empty() {
                self.batches.pop_front();
            }
            if full {
                break;
            }
        }
        self.len -= out.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(from: usize, to: usize, name_len: usize) -> Vec<Point> {
        (from..to)
            .map(|i| Point {
                name: format!("{i:0name_len$}"),
                timestamp: i as i64,
                value: i as f64,
            })
            .collect()
    }

    #[test]
    fn takes_across_batches_in_order_and_by_size() {
        let mut q = Batches::default();
        q.push(points(0, 3, 4));
        q.push(Vec::new());
        q.push(points(3, 10, 4));
        assert_eq!(q.len(), 10);
        let got: Vec<i64> = q.take(5, 1 << 20).iter().map(|p| p.timestamp).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        // Each point counts 32 + 4 bytes: 100 bytes allow two.
        let got: Vec<i64> = q.take(5, 100).iter().map(|p| p.timestamp).collect();
        assert_eq!(got, vec![5, 6]);
        // One point past the byte bound still goes, alone.
        assert_eq!(q.take(5, 1).len(), 1);
        assert_eq!(q.len(), 2);
        let rest: Vec<i64> = q.drain_all().iter().map(|p| p.timestamp).collect();
        assert_eq!(rest, vec![8, 9]);
        assert_eq!(q.len(), 0);
        assert!(q.take(5, 100).is_empty());
    }
}

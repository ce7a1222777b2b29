//! Series as members send them to each other (`/cluster/fetch`, and the
//! series of a `/cluster/fold` that did not fold), and a reader that
//! decodes them piece by piece as a peer's answer arrives, noting whether
//! each copy is whole, so a large answer is never gathered and scanned
//! again first.
//!
//! Per series: a `u32` name length, the name, `start`, `end`, `step` as
//! `i64`, a `u32` count and the values as `f64` (NaN for an empty slot:
//! stored values are always finite), all little-endian. JSON of a thousand
//! day-long series was most of a cluster read's time.

use graunt_query::series::Series;

/// Empty slots at the end of a copy taken as not yet arrived anywhere
/// rather than missing from this copy.
const FRESH_SLOTS: usize = 2;

/// A name longer than this is a damaged answer (names are far shorter).
const MAX_NAME: usize = 1 << 16;

/// Values reserved ahead for a series; more grow as they arrive, so a
/// damaged count cannot make a huge allocation.
const MAX_RESERVE: usize = 1 << 20;

/// A copy of a series from one member.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// The series.
    pub series: Series,
    /// Whether the copy is whole (see [`HoleCheck`]): when not, the other
    /// holders are asked too and the copies merged.
    pub whole: bool,
}

impl Replica {
    /// A copy read here, checked for holes.
    pub fn of(series: Series) -> Replica {
        let mut check = HoleCheck::default();
        check.see_all(&series.values);
        Replica {
            whole: check.whole(),
            series,
        }
    }
}

/// Whether a copy may lack what another has, seen slot by slot: an empty
/// slot between two values, more than [`FRESH_SLOTS`] empty slots at its end
/// (a replica catching up), or no value at all. Empty slots before the
/// first value are a series younger than the range (both copies alike).
#[derive(Debug, Default, Clone, Copy)]
pub struct HoleCheck {
    seen: bool,
    empty_run: usize,
    gap: bool,
}

impl HoleCheck {
    /// The next slot: known or empty.
    fn see(&mut self, known: bool) {
        if known {
            self.gap |= self.seen && self.empty_run > 0;
            self.seen = true;
            self.empty_run = 0;
        } else {
            self.empty_run += 1;
        }
    }

    /// The next slots, as [`HoleCheck::see`] one by one would.
    pub fn see_all(&mut self, values: &[Option<f64>]) {
        let Some(first) = values.iter().position(Option::is_some) else {
            self.empty_run += values.len();
            return;
        };
        let last = values.iter().rposition(Option::is_some).unwrap_or(first);
        self.empty_run += first;
        self.see(true);
        self.gap |= values[first..=last].iter().any(Option::is_none);
        self.empty_run = values.len() - 1 - last;
    }

    /// Whether the slots seen make a whole copy.
    pub fn whole(&self) -> bool {
        self.seen && !self.gap && self.empty_run <= FRESH_SLOTS
    }
}

/// Encodes series for a peer.
pub fn encode<'a, I>(series: I) -> Vec<u8>
where
    I: IntoIterator<Item = &'a Series>,
    I::IntoIter: Clone,
{
    encode_after(&[], series)
}

/// `prefix`, then [`encode`]'s bytes, in one buffer.
pub fn encode_after<'a, I>(prefix: &[u8], series: I) -> Vec<u8>
where
    I: IntoIterator<Item = &'a Series>,
    I::IntoIter: Clone,
{
    let series = series.into_iter();
    let mut out = Vec::with_capacity(
        prefix.len()
            + series
                .clone()
                .map(|s| 40 + s.name.len() + 8 * s.values.len())
                .sum::<usize>(),
    );
    out.extend_from_slice(prefix);
    for s in series {
        out.extend_from_slice(&(s.name.len() as u32).to_le_bytes());
        out.extend_from_slice(s.name.as_bytes());
        for v in [s.start, s.end, s.step] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(s.values.len() as u32).to_le_bytes());
        for v in &s.values {
            out.extend_from_slice(&v.unwrap_or(f64::NAN).to_le_bytes());
        }
    }
    out
}

/// Reads a peer's answer piece by piece as it arrives.
pub trait Reader: Send + 'static {
    /// What the answer reads as.
    type Answer: Send + 'static;
    /// Takes the next piece; `false` when the answer cannot be read.
    fn feed(&mut self, piece: &[u8]) -> bool;
    /// The answer once it has ended; `None` if it was cut or damaged.
    fn finish(self) -> Option<Self::Answer>;
}

/// The series of [`encode`] in one piece; `None` if cut or damaged.
pub fn decode(bytes: &[u8]) -> Option<Vec<Series>> {
    let mut reader = SeriesReader::default();
    if !reader.feed(bytes) {
        return None;
    }
    Some(reader.finish()?.into_iter().map(|r| r.series).collect())
}

/// The next `n` bytes of a peer's answer, or `None` when it is cut short.
pub(crate) fn take<'b>(bytes: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
    let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
    *bytes = rest;
    Some(head)
}

/// Decodes [`encode`]'s series from the pieces of an answer as they come.
#[derive(Default)]
pub struct SeriesReader {
    /// The current series' header, gathered until whole.
    head: Vec<u8>,
    /// The series whose values are arriving, with how many are left.
    filling: Option<Filling>,
    /// A value split between two pieces.
    split: Vec<u8>,
    done: Vec<Replica>,
}

struct Filling {
    series: Series,
    left: usize,
    check: HoleCheck,
}

impl Filling {
    /// Takes whole values (`raw` is a multiple of 8 bytes, at most `left`
    /// values).
    fn push(&mut self, raw: &[u8]) {
        let values = &mut self.series.values;
        let from = values.len();
        values.extend(raw.chunks_exact(8).map(|c| {
            let mut v = [0u8; 8];
            v.copy_from_slice(c);
            let v = f64::from_le_bytes(v);
            (!v.is_nan()).then_some(v)
        }));
        self.check.see_all(&values[from..]);
        self.left -= values.len() - from;
    }
}

impl Reader for SeriesReader {
    type Answer = Vec<Replica>;

    fn feed(&mut self, mut piece: &[u8]) -> bool {
        while !piece.is_empty() {
            let Some(filling) = self.filling.as_mut() else {
                match self.read_head(&mut piece) {
                    Some(()) => continue,
                    None => return false,
                }
            };
            if !self.split.is_empty() || piece.len() < 8 {
                let n = (8 - self.split.len()).min(piece.len());
                self.split.extend_from_slice(&piece[..n]);
                piece = &piece[n..];
                if self.split.len() == 8 {
                    filling.push(&self.split);
                    self.split.clear();
                }
            } else {
                let n = filling.left.min(piece.len() / 8);
                let (values, rest) = piece.split_at(n * 8);
                filling.push(values);
                piece = rest;
            }
            if filling.left == 0 {
                self.close();
            }
        }
        true
    }

    /// The series once the answer has ended; `None` if it stopped inside
    /// one.
    fn finish(self) -> Option<Vec<Replica>> {
        (self.filling.is_none() && self.head.is_empty()).then_some(self.done)
    }
}

impl SeriesReader {
    /// Gathers header bytes from `piece`; starts the series once the header
    /// is whole. `None` when it is damaged.
    fn read_head(&mut self, piece: &mut &[u8]) -> Option<()> {
        let want = if self.head.len() < 4 {
            4
        } else {
            let len = u32::from_le_bytes(self.head[..4].try_into().ok()?) as usize;
            if len > MAX_NAME {
                return None;
            }
            4 + len + 28
        };
        let n = (want - self.head.len()).min(piece.len());
        self.head.extend_from_slice(take(piece, n)?);
        if self.head.len() < want || want == 4 {
            return Some(());
        }
        let mut head = &self.head[4..];
        let name = std::str::from_utf8(take(&mut head, want - 32)?).ok()?;
        let i64_at = |b: &mut &[u8]| Some(i64::from_le_bytes(take(b, 8)?.try_into().ok()?));
        let (start, end, step) = (i64_at(&mut head)?, i64_at(&mut head)?, i64_at(&mut head)?);
        let count = u32::from_le_bytes(take(&mut head, 4)?.try_into().ok()?) as usize;
        let values = Vec::with_capacity(count.min(MAX_RESERVE));
        self.filling = Some(Filling {
            series: Series::new(name, start, end, step, values),
            left: count,
            check: HoleCheck::default(),
        });
        self.head.clear();
        if count == 0 {
            self.close();
        }
        Some(())
    }

    fn close(&mut self) {
        if let Some(f) = self.filling.take() {
            self.done.push(Replica {
                whole: f.check.whole(),
                series: f.series,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(values: &[Option<f64>]) -> bool {
        let s = Series::new("m", 0, 10 * values.len() as i64, 10, values.to_vec());
        Replica::of(s).whole
    }

    #[test]
    fn a_copy_is_whole_unless_a_slot_is_missing_between_values_or_late() {
        let (v, n) = (Some(1.0), None);
        // Slots seen in runs (as pieces of an answer) judge as one by one.
        let cases: [&[Option<f64>]; 7] = [
            &[n, n, v, v, v],
            &[v, v, v, n, n],
            &[v, n, v],
            &[v, n, n, n],
            &[n, n],
            &[n, v, n, n, v, n],
            &[v, v, n, n, n, v],
        ];
        for values in cases {
            let mut one_by_one = HoleCheck::default();
            values.iter().for_each(|v| one_by_one.see(v.is_some()));
            for split in 0..=values.len() {
                let mut runs = HoleCheck::default();
                runs.see_all(&values[..split]);
                runs.see_all(&values[split..]);
                assert_eq!(runs.whole(), one_by_one.whole(), "{values:?} at {split}");
            }
        }
        assert!(whole(&[n, n, v, v, v]), "younger than the range");
        assert!(whole(&[v, v, v, n, n]), "the newest slots not in yet");
        assert!(!whole(&[v, n, v]), "a slot missing between values");
        assert!(!whole(&[v, n, n, n]), "a replica behind by more than two");
        assert!(!whole(&[n, n]), "nothing at all");
    }

    #[test]
    fn series_read_piece_by_piece_are_the_series_sent() {
        let sent = vec![
            Series::new("a.b", 100, 160, 10, vec![Some(1.5), None, Some(-3.0)]),
            Series::new("ü", -5, 5, 10, vec![None]),
            Series::new("empty", 0, 0, 10, vec![]),
            Series::new("c", 0, 40, 10, vec![Some(1.0), Some(2.0), None, None]),
        ];
        let bytes = encode(&sent);
        for size in [1, 3, 7, 8, 9, 13, 64, bytes.len()] {
            let mut reader = SeriesReader::default();
            for piece in bytes.chunks(size) {
                assert!(reader.feed(piece));
            }
            let got = reader.finish().expect("whole answer");
            assert_eq!(
                got.iter().map(|r| &r.series).collect::<Vec<_>>(),
                sent.iter().collect::<Vec<_>>(),
                "pieces of {size}"
            );
            let wholes: Vec<bool> = got.iter().map(|r| r.whole).collect();
            assert_eq!(wholes, [false, false, false, true], "pieces of {size}");
        }
        // A cut between two series cannot be told from fewer series (the
        // answer's length is checked by HTTP); anywhere else it is seen.
        let ends: Vec<usize> = (1..=sent.len()).map(|n| encode(&sent[..n]).len()).collect();
        for cut in 1..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut]).is_some(),
                ends.contains(&cut),
                "cut at {cut}"
            );
        }
        let mut long_name = (MAX_NAME as u32 + 1).to_le_bytes().to_vec();
        long_name.extend_from_slice(b"abc");
        assert!(decode(&long_name).is_none(), "a damaged name length");
    }
}

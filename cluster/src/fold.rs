//! A member's side of a folded cluster read (`/cluster/folds`, one answer
//! per group of paths; `/cluster/fold`, one group, for askers of the
//! previous version): it reads the paths it was asked for and answers their
//! fold when it is exact and its copies are whole ([`graunt_query::fold`]);
//! a sum of fractions `Inexact` when the asker folds those by parts of the
//! range (`crate::slots`); or else the series themselves, so the asking
//! member can aggregate them as from `/cluster/fetch`.

use graunt_query::fold::{Fold, Folded};
use graunt_query::series::Series;

use crate::wire::{Reader, Replica, SeriesReader};

/// A member's answer to a fold.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Every path asked for, folded.
    Folded(Folded),
    /// The copies it has, as `/cluster/fetch` answers.
    Series(Vec<Replica>),
    /// A sum or average whose values do not fold exactly (fractions, seen
    /// in the first series or in all of them): the asker folds the group
    /// over parts of its range instead (`crate::slots`), so the series
    /// need not travel. Only to an asker that said it understands this.
    Inexact,
}

/// Folds what a member read for `paths` when every path is there, whole
/// (a copy with a hole would be completed from another member; a count
/// does not look at values) and foldable; else the series, or
/// [`Answer::Inexact`] for a sum or average whose copies share their times
/// but whose values stood in the way, when `refuse_inexact` says the asker
/// understands it.
pub fn answer(fold: Fold, series: Vec<Option<Series>>, refuse_inexact: bool) -> Answer {
    let all_there = series.iter().all(Option::is_some);
    let copies: Vec<Replica> = series.into_iter().flatten().map(Replica::of).collect();
    if all_there && (!fold.reads_values() || copies.iter().all(|r| r.whole)) {
        if let Some(folded) = Folded::of_each(fold, copies.iter().map(|r| Some(&r.series))) {
            return Answer::Folded(folded);
        }
        let times = |r: &Replica| (r.series.start, r.series.end, r.series.step);
        let same_times = copies.windows(2).all(|w| times(&w[0]) == times(&w[1]));
        if refuse_inexact && sums(fold) && same_times && !copies.is_empty() {
            return Answer::Inexact;
        }
    }
    Answer::Series(copies)
}

/// Whether parts of the range would help: only sums and averages are
/// inexact by series.
fn sums(fold: Fold) -> bool {
    matches!(fold, Fold::Sum | Fold::Average)
}

/// A member's answers for its share of each group: read from `source`
/// and [`answer`]ed, except that when `refuse_inexact`, a group whose
/// first series already has fractions to add is answered
/// [`Answer::Inexact`] without reading the rest (the asker folds it by
/// parts of the range). The first series of all groups are read together
/// (in parallel), and kept for the groups read whole.
pub fn answer_share(
    fold: Fold,
    source: &dyn graunt_query::eval::Source,
    groups: &[Vec<String>],
    (from, until, now): (i64, i64, i64),
    refuse_inexact: bool,
) -> Result<Vec<Answer>, graunt_query::eval::EvalError> {
    let probing = refuse_inexact && sums(fold);
    let mut firsts: Vec<Option<Option<Series>>> = vec![None; groups.len()];
    if probing {
        let paths: Vec<String> = groups.iter().filter_map(|g| g.first().cloned()).collect();
        let mut probed = source.fetch_many(&paths, from, until, now)?.into_iter();
        for (first, group) in firsts.iter_mut().zip(groups) {
            if !group.is_empty() {
                *first = probed.next();
            }
        }
    }
    // Fractions in the first series: no need to read the rest.
    let inexact = |first: &Option<Option<Series>>| matches!(first, Some(Some(s)) if Folded::of_each(fold, [Some(s)]).is_none());
    let rest = |g: &[String], first: &Option<Option<Series>>| -> std::ops::Range<usize> {
        usize::from(first.is_some())..g.len()
    };
    let read: Vec<String> = groups
        .iter()
        .zip(&firsts)
        .filter(|(_, f)| !inexact(f))
        .flat_map(|(g, f)| g[rest(g, f)].iter().cloned())
        .collect();
    let mut series = source.fetch_many(&read, from, until, now)?.into_iter();
    Ok(groups
        .iter()
        .zip(firsts)
        .map(|(g, first)| {
            if inexact(&first) {
                return Answer::Inexact;
            }
            let n = rest(g, &first).len();
            let mine = first.into_iter().chain(series.by_ref().take(n)).collect();
            answer(fold, mine, refuse_inexact)
        })
        .collect())
}

/// An [`Answer`] on the wire: `F` and a fold (a `u32` name count, each
/// name as a `u32` length and its bytes, `start`, `end`, `step` as `i64`,
/// the magnitude as `f64`, a `u32` slot count, each slot as `f64` and
/// `u32`), `S` and [`crate::wire::encode`]'s series, or `I` alone;
/// little-endian.
pub fn encode(answer: &Answer) -> Vec<u8> {
    match answer {
        Answer::Inexact => b"I".to_vec(),
        Answer::Series(copies) => crate::wire::encode_after(b"S", copies.iter().map(|r| &r.series)),
        Answer::Folded(f) => {
            let names: usize = f.names.iter().map(|n| 4 + n.len()).sum();
            let mut out = Vec::with_capacity(1 + 4 + names + 36 + 12 * f.slots.len());
            out.push(b'F');
            out.extend_from_slice(&(f.names.len() as u32).to_le_bytes());
            for n in &f.names {
                out.extend_from_slice(&(n.len() as u32).to_le_bytes());
                out.extend_from_slice(n.as_bytes());
            }
            for v in [f.start, f.end, f.step] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&f.magnitude.to_le_bytes());
            out.extend_from_slice(&(f.slots.len() as u32).to_le_bytes());
            for (v, n) in &f.slots {
                out.extend_from_slice(&v.to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
            }
            out
        }
    }
}

/// The answer of [`encode`]; `None` if the bytes are cut or damaged.
pub fn decode(bytes: &[u8]) -> Option<Answer> {
    let mut reader = AnswerReader::default();
    if !reader.feed(bytes) {
        return None;
    }
    reader.finish()
}

/// Reads an [`encode`]d answer piece by piece as it arrives: series as
/// they come, a fold (small) gathered first.
#[derive(Default)]
pub struct AnswerReader {
    kind: Option<u8>,
    series: SeriesReader,
    folded: Vec<u8>,
}

impl Reader for AnswerReader {
    type Answer = Answer;

    fn feed(&mut self, mut piece: &[u8]) -> bool {
        if self.kind.is_none() {
            let Some((&kind, rest)) = piece.split_first() else {
                return true;
            };
            self.kind = Some(kind);
            piece = rest;
        }
        match self.kind {
            Some(b'S') => self.series.feed(piece),
            Some(b'F') => {
                self.folded.extend_from_slice(piece);
                true
            }
            Some(b'I') => piece.is_empty(),
            _ => false,
        }
    }

    fn finish(self) -> Option<Answer> {
        match self.kind? {
            b'S' => self.series.finish().map(Answer::Series),
            b'F' => decode_folded(&self.folded),
            b'I' => Some(Answer::Inexact),
            _ => None,
        }
    }
}

/// Answers to several groups on the wire (`/cluster/folds`): each
/// [`encode`]d answer after its length as a little-endian `u64`.
pub fn encode_groups(answers: &[Answer]) -> Vec<u8> {
    let mut out = Vec::new();
    for answer in answers {
        let bytes = encode(answer);
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Reads [`encode_groups`]' answers piece by piece as they arrive.
#[derive(Default)]
pub struct GroupsReader {
    /// The bytes of the next answer's length read so far.
    length: Vec<u8>,
    /// The answer being read, and how many of its bytes are still to come.
    current: Option<(AnswerReader, u64)>,
    done: Vec<Answer>,
}

impl Reader for GroupsReader {
    type Answer = Vec<Answer>;

    fn feed(&mut self, mut piece: &[u8]) -> bool {
        while !piece.is_empty() {
            match &mut self.current {
                None => {
                    let n = (8 - self.length.len()).min(piece.len());
                    self.length.extend_from_slice(&piece[..n]);
                    piece = &piece[n..];
                    if let Ok(length) = <[u8; 8]>::try_from(self.length.as_slice()) {
                        self.current = Some((AnswerReader::default(), u64::from_le_bytes(length)));
                        self.length.clear();
                    }
                }
                Some((reader, left)) => {
                    let n = piece
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    if !reader.feed(&piece[..n]) {
                        return false;
                    }
                    piece = &piece[n..];
                    *left -= n as u64;
                }
            }
            if matches!(self.current, Some((_, 0))) {
                let Some((reader, _)) = self.current.take() else {
                    return false;
                };
                match reader.finish() {
                    Some(answer) => self.done.push(answer),
                    None => return false,
                }
            }
        }
        true
    }

    fn finish(self) -> Option<Vec<Answer>> {
        (self.current.is_none() && self.length.is_empty()).then_some(self.done)
    }
}

/// A fold's bytes after its `F`.
fn decode_folded(mut bytes: &[u8]) -> Option<Answer> {
    use crate::wire::take;
    // Bytes from the network: every conversion is checked.
    let u32_at = |b: &mut &[u8]| Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?));
    let u64_at = |b: &mut &[u8]| Some(u64::from_le_bytes(take(b, 8)?.try_into().ok()?));
    let count = u32_at(&mut bytes)? as usize;
    let mut names = Vec::with_capacity(count.min(bytes.len() / 4));
    for _ in 0..count {
        let len = u32_at(&mut bytes)? as usize;
        names.push(
            std::str::from_utf8(take(&mut bytes, len)?)
                .ok()?
                .to_string(),
        );
    }
    let (start, end, step) = (
        u64_at(&mut bytes)? as i64,
        u64_at(&mut bytes)? as i64,
        u64_at(&mut bytes)? as i64,
    );
    let magnitude = f64::from_bits(u64_at(&mut bytes)?);
    let len = u32_at(&mut bytes)? as usize;
    if bytes.len() != len.checked_mul(12)? {
        return None;
    }
    let slots = bytes
        .chunks_exact(12)
        .map(|c| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&c[..8]);
            let mut n = [0u8; 4];
            n.copy_from_slice(&c[8..]);
            (f64::from_le_bytes(v), u32::from_le_bytes(n))
        })
        .collect();
    Some(Answer::Folded(Folded {
        names,
        start,
        end,
        step,
        slots,
        magnitude,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, values: &[Option<f64>]) -> Option<Series> {
        Some(Series::new(
            name,
            100,
            100 + 10 * values.len() as i64,
            10,
            values.to_vec(),
        ))
    }

    #[test]
    fn whole_integral_copies_are_folded_and_travel_back_intact() {
        let a = answer(
            Fold::Sum,
            vec![
                series("a.1", &[Some(1.0), Some(2.0), Some(3.0)]),
                series("a.2", &[Some(4.0), Some(5.0), None]),
            ],
            false,
        );
        let Answer::Folded(f) = &a else {
            panic!("not folded: {a:?}")
        };
        assert_eq!(f.slots, vec![(5.0, 2), (7.0, 2), (3.0, 1)]);
        assert_eq!(decode(&encode(&a)), Some(a));
    }

    #[test]
    fn holes_gaps_and_fractions_travel_as_series() {
        let holed = series("a.1", &[Some(1.0), None, Some(3.0)]);
        for (fold, input) in [
            (Fold::Sum, vec![holed.clone()]),
            (Fold::Sum, vec![series("a.1", &[Some(1.5)])]),
            (Fold::Max, vec![series("a.1", &[Some(1.0)]), None]),
        ] {
            let a = answer(fold, input.clone(), false);
            assert!(matches!(a, Answer::Series(_)), "{a:?}");
            assert_eq!(decode(&encode(&a)), Some(a));
            // Refusing a fold is only for copies that are all there, whole.
            let refused = answer(fold, input, true);
            let fractions = fold == Fold::Sum && matches!(refused, Answer::Inexact);
            assert!(
                fractions || matches!(refused, Answer::Series(_)),
                "{refused:?}"
            );
        }
        let fractions = answer(Fold::Sum, vec![series("a.1", &[Some(1.5)])], true);
        assert_eq!(fractions, Answer::Inexact);
        assert_eq!(decode(&encode(&fractions)), Some(Answer::Inexact));
        assert_eq!(decode(b"Ix"), None, "an inexact answer has no body");
        // Parts of the range cannot help series of different times.
        let shifted = Some(Series::new("a.2", 110, 120, 10, vec![Some(2.5)]));
        let mixed = vec![series("a.1", &[Some(1.5)]), shifted];
        assert!(matches!(answer(Fold::Sum, mixed, true), Answer::Series(_)));
        let Answer::Folded(_) = answer(
            Fold::Max,
            vec![series("a.1", &[Some(1.5), Some(2.0)])],
            false,
        ) else {
            panic!("extremes of fractions fold")
        };
        let bytes = encode(&answer(Fold::Sum, vec![series("a", &[Some(1.0)])], false));
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn groups_travel_in_pieces_of_any_size_and_cut_answers_are_refused() {
        let answers = vec![
            answer(
                Fold::Sum,
                vec![
                    series("a.1", &[Some(1.0), Some(2.0)]),
                    series("a.2", &[Some(3.0), Some(4.0)]),
                ],
                false,
            ),
            answer(
                Fold::Sum,
                vec![series("b.1", &[Some(0.5), Some(1.0)])],
                false,
            ),
            answer(Fold::Sum, vec![None], false),
        ];
        assert!(matches!(answers[0], Answer::Folded(_)));
        assert!(matches!(&answers[1], Answer::Series(s) if s.len() == 1));
        assert!(matches!(&answers[2], Answer::Series(s) if s.is_empty()));
        let bytes = encode_groups(&answers);
        let read = |bytes: &[u8], piece: usize| {
            let mut reader = GroupsReader::default();
            for chunk in bytes.chunks(piece) {
                if !reader.feed(chunk) {
                    return None;
                }
            }
            reader.finish()
        };
        for piece in [1, 3, 8, 13, bytes.len()] {
            assert_eq!(
                read(&bytes, piece).as_ref(),
                Some(&answers),
                "pieces of {piece}"
            );
        }
        for cut in 1..bytes.len() {
            let read = read(&bytes[..cut], 5);
            assert!(
                read.as_ref().is_none_or(|r| r.len() < 3),
                "cut at {cut}: {read:?}"
            );
        }
        assert_eq!(read(&[], 5).map(|r| r.len()), Some(0));
    }
}

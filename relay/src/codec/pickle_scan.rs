//! A pre-flight scan of a pickle's opcodes before it is decoded.
//!
//! serde-pickle never runs code, but it copies shared references: a frame of
//! a few hundred bytes that memoizes a list and fetches it twice per level
//! doubles at every level and expands to terabytes. Plain carbon data never
//! needs shared mutable containers, so this scan refuses them, globals and
//! object construction, integers over 128 bits, and frames whose strings or
//! shared tuples would expand past a multiple of their own size, all in one
//! linear pass. Shared tuples are plain data: Python memoizes a tuple
//! constant that appears twice (`[("a", (t, 1.0)), ("b", (t, 1.0))]` in
//! source code shares one tuple), and a tuple cannot change after it is
//! memoized, so its expanded size is known and counted at each use.

use std::collections::HashMap;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A string, number or constant of this many bytes.
    Atom(usize),
    /// A tuple of atoms and tuples, this many bytes once expanded.
    Tuple(usize),
    /// A list, dict or anything holding one: may change after a PUT.
    Container,
    Mark,
}

impl Kind {
    /// The expanded size of something that may be shared.
    fn shareable(self) -> Option<usize> {
        match self {
            Kind::Atom(n) | Kind::Tuple(n) => Some(n),
            _ => None,
        }
    }
}

/// The kind of a tuple of `items`.
fn tuple_of(items: impl Iterator<Item = Kind>) -> Kind {
    let mut size = 1usize;
    for k in items {
        match k.shareable() {
            Some(n) => size = size.saturating_add(n),
            None => return Kind::Container,
        }
    }
    Kind::Tuple(size)
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Checks that `payload` is plain data safe to decode; `Err` says why not.
pub fn check_plain(payload: &[u8]) -> Result<(), String> {
    let budget = payload.len().saturating_mul(4).max(1 << 20);
    let mut expanded = 0usize;
    let mut stack: Vec<Kind> = Vec::new();
    let mut memo: HashMap<u64, Kind> = HashMap::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let bytes = payload
            .get(*at..at.saturating_add(n))
            .ok_or("truncated pickle")?;
        *at += n;
        Ok(bytes)
    };
    let line = |at: &mut usize| -> Result<&[u8], String> {
        let rest = payload.get(*at..).ok_or("truncated pickle")?;
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle line")?;
        *at += end + 1;
        Ok(&rest[..end])
    };
    let pop_mark = |stack: &mut Vec<Kind>| -> Result<Vec<Kind>, String> {
        let mut items = Vec::new();
        while let Some(k) = stack.pop() {
            if k == Kind::Mark {
                return Ok(items);
            }
            items.push(k);
        }
        Err("unbalanced MARK".into())
    };
    while at < payload.len() {
        let op = payload[at];
        at += 1;
        // Pushes `kind`, counting `size` more bytes of expansion.
        let mut grow = |kind: Kind, size: usize, stack: &mut Vec<Kind>| -> Result<(), String> {
            expanded = expanded.saturating_add(size);
            if expanded > budget {
                return Err("pickle expands far beyond its size".into());
            }
            stack.push(kind);
            Ok(())
        };
        let mut atom = |size: usize, stack: &mut Vec<Kind>| grow(Kind::Atom(size), size, stack);
        match op {
            b'.' => return Ok(()),
            b'(' => stack.push(Kind::Mark),
            b'N' | 0x88 | 0x89 => atom(1, &mut stack)?,
            b'I' | b'F' => {
                let l = line(&mut at)?;
                atom(l.len(), &mut stack)?
            }
            b'L' => {
                let l = line(&mut at)?;
                if l.len() > 40 {
                    return Err("integer too large".into());
                }
                atom(l.len(), &mut stack)?
            }
            b'S' | b'V' => {
                let l = line(&mut at)?;
                atom(l.len(), &mut stack)?
            }
            b'J' => atom(take(&mut at, 4)?.len(), &mut stack)?,
            b'K' => atom(take(&mut at, 1)?.len(), &mut stack)?,
            b'M' => atom(take(&mut at, 2)?.len(), &mut stack)?,
            b'G' => atom(take(&mut at, 8)?.len(), &mut stack)?,
            0x8a | 0x8b => {
                let n = le(take(&mut at, if op == 0x8a { 1 } else { 4 })?) as usize;
                if n > 16 {
                    return Err("integer too large".into());
                }
                atom(take(&mut at, n)?.len(), &mut stack)?
            }
            b'T' | b'X' | b'B' | b'U' | b'C' | 0x8c | 0x8d | 0x8e | 0x96 => {
                let width = match op {
                    b'U' | b'C' | 0x8c => 1,
                    b'T' | b'X' | b'B' => 4,
                    _ => 8,
                };
                let n =
                    usize::try_from(le(take(&mut at, width)?)).map_err(|_| "string too long")?;
                atom(take(&mut at, n)?.len(), &mut stack)?
            }
            b')' => stack.push(Kind::Tuple(1)),
            b']' | b'}' | 0x8f => stack.push(Kind::Container),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(tuple_of(items.into_iter()))
            }
            b'l' | b'd' | 0x91 => {
                pop_mark(&mut stack)?;
                stack.push(Kind::Container)
            }
            0x85..=0x87 => {
                let mut items = Vec::new();
                for _ in 0..(op - 0x84) {
                    items.push(stack.pop().ok_or("stack underflow")?);
                }
                if items.contains(&Kind::Mark) {
                    return Err("TUPLE over a MARK".into());
                }
                stack.push(tuple_of(items.into_iter()))
            }
            b'a' => {
                stack.pop().ok_or("stack underflow")?;
            }
            b's' => {
                stack.pop().ok_or("stack underflow")?;
                stack.pop().ok_or("stack underflow")?;
            }
            b'e' | b'u' | 0x90 | b'1' => {
                pop_mark(&mut stack)?;
            }
            b'0' => {
                stack.pop().ok_or("stack underflow")?;
            }
            b'2' => match stack.last().copied() {
                Some(k) if k.shareable().is_some() => {
                    grow(k, k.shareable().unwrap_or(0), &mut stack)?
                }
                _ => return Err("DUP of a container".into()),
            },
            b'p' | b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'p' => std::str::from_utf8(line(&mut at)?)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .ok_or("bad PUT")?,
                    b'q' => le(take(&mut at, 1)?),
                    b'r' => le(take(&mut at, 4)?),
                    _ => memo.len() as u64,
                };
                let top = *stack.last().ok_or("PUT on an empty stack")?;
                memo.insert(key, top);
            }
            b'g' | b'h' | b'j' => {
                let key = match op {
                    b'g' => std::str::from_utf8(line(&mut at)?)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .ok_or("bad GET")?,
                    b'h' => le(take(&mut at, 1)?),
                    _ => le(take(&mut at, 4)?),
                };
                match memo.get(&key).copied() {
                    Some(k) => match k.shareable() {
                        Some(n) => grow(k, n, &mut stack)?,
                        None => return Err("shared reference to a container".into()),
                    },
                    None => return Err("GET of an unknown memo key".into()),
                }
            }
            0x80 => {
                take(&mut at, 1)?;
            }
            0x95 => {
                take(&mut at, 8)?;
            }
            b'c' | b'i' | 0x93 => return Err("globals are not plain data".into()),
            b'R' | b'b' | b'o' | 0x81 | 0x92 => {
                return Err("object construction is not plain data".into())
            }
            other => return Err(format!("opcode 0x{other:02x} is not plain data")),
        }
    }
    Err("pickle has no STOP".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_frames_pass() {
        // pickle.dumps([('a.b', (1699999990, 3.0))], protocol=0) and protocol 2.
        assert_eq!(
            check_plain(b"(lp0\n(S'a.b'\np1\n(I1699999990\nF3.0\ntp2\ntp3\na."),
            Ok(())
        );
        let p2 = b"\x80\x02]q\x00X\x03\x00\x00\x00a.bq\x01J\xf6\xe6UeG@\x08\x00\x00\x00\x00\x00\x00\x86q\x02\x86q\x03a.";
        assert_eq!(check_plain(p2), Ok(()));
    }

    #[test]
    fn bombs_and_code_are_refused() {
        // A list memoized and fetched twice per level: 2^40 copies if decoded.
        let mut bomb = b"\x80\x02]q\x00".to_vec();
        for i in 0..40u8 {
            bomb.extend_from_slice(&[b'h', i, b'h', i, 0x86, b'q', i + 1]);
        }
        bomb.push(b'.');
        assert!(check_plain(&bomb).unwrap_err().contains("shared reference"));
        assert!(check_plain(b"cos\nsystem\n(S'x'\ntR.")
            .unwrap_err()
            .contains("globals"));
        let mut big = b"\x80\x02\x8b\x00\x00\x10\x00".to_vec();
        big.extend(vec![1u8; 1 << 20]);
        big.push(b'.');
        assert!(check_plain(&big).unwrap_err().contains("integer too large"));
        // A long string fetched many times.
        let mut many = b"\x80\x02(X\x00\x00\x10\x00".to_vec();
        many.extend(vec![b'x'; 1 << 20]);
        many.extend_from_slice(b"q\x00");
        for _ in 0..100 {
            many.extend_from_slice(b"h\x00");
        }
        many.extend_from_slice(b"l.");
        assert!(check_plain(&many).unwrap_err().contains("expands"));
        assert!(check_plain(b"\x80\x02]").unwrap_err().contains("STOP"));
        // A tuple memoized and fetched twice per level: refused once the
        // copies pass the budget, long before 2^40.
        let mut tuples = b"\x80\x02K\x01\x85q\x00".to_vec();
        for i in 0..40u8 {
            tuples.extend_from_slice(&[b'h', i, b'h', i, 0x86, b'q', i + 1]);
        }
        tuples.push(b'.');
        assert!(check_plain(&tuples).unwrap_err().contains("expands"));
    }

    #[test]
    fn a_shared_tuple_constant_passes() {
        // pickle.dumps([("a", (1700000000, 1.0)), ("b", (1700000000, 1.0))], 2)
        // where both tuples are one constant: the second is a memo GET.
        let p = b"\x80\x02]q\x00(X\x01\x00\x00\x00aq\x01J\x00\xf1SeG?\xf0\x00\x00\x00\x00\x00\x00\x86q\x02\x86q\x03X\x01\x00\x00\x00bq\x04h\x02\x86q\x05e.";
        assert_eq!(check_plain(p), Ok(()));
    }
}

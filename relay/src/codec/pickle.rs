//! Carbon's pickle protocol: frames of a 4-byte big-endian length and a
//! pickle of `[(name, (timestamp, value)), …]`, as carbon-relay and
//! carbon-c-relay send. Decoding builds plain data only (serde-pickle resolves
//! a handful of harmless builtins and refuses every other global), so a frame
//! can never run code; frames over the size limit are refused before decoding.

use serde_pickle::{DeOptions, Value};

use super::{check, parse_float, Point, RecordError, TimeBounds};

/// Carbon's own limit on a pickle frame (Int32StringReceiver.MAX_LENGTH).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Why a whole frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix exceeds the limit; the connection must be closed
    /// since the stream cannot be resynchronised.
    TooLarge(usize),
    /// Not a pickle, or one using opcodes or globals that are not plain data.
    Pickle(String),
    /// A pickle, but not a list of records.
    NotAList,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(n) => write!(f, "pickle frame of {n} bytes is over the limit"),
            FrameError::Pickle(e) => write!(f, "undecodable pickle: {e}"),
            FrameError::NotAList => {
                f.write_str("pickle is not a list of (name, (timestamp, value))")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Reads the next frame's payload from `buf`: `Ok(Some((payload, used)))`
/// when complete, `Ok(None)` when more bytes are needed.
pub fn next_frame(buf: &[u8], max_frame: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > max_frame {
        return Err(FrameError::TooLarge(len));
    }
    Ok(buf.get(4..4 + len).map(|payload| (payload, 4 + len)))
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::I64(i) => Some(*i as f64),
        Value::F64(f) => Some(*f),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Int(big) => big.to_string().parse().ok(),
        // The pre-scan keeps these to 128 bits, so printing one is cheap.
        // Carbon calls float() on whatever it gets, so strings of numbers pass.
        other => as_text(other).and_then(|s| parse_float(s.trim())),
    }
}

fn pair(v: &Value) -> Option<(&Value, &Value)> {
    match v {
        Value::Tuple(items) | Value::List(items) if items.len() == 2 => {
            Some((&items[0], &items[1]))
        }
        _ => None,
    }
}

fn record(v: &Value, bounds: &TimeBounds) -> Result<Point, RecordError> {
    let (name, datapoint) = pair(v).ok_or(RecordError::Fields)?;
    let name = as_text(name).ok_or(RecordError::NotUtf8)?;
    let (ts, value) = pair(datapoint).ok_or(RecordError::Fields)?;
    let value = as_number(value).ok_or(RecordError::Value)?;
    let ts = as_number(ts).ok_or(RecordError::Timestamp)?;
    if !ts.is_finite() {
        return Err(RecordError::TimestampRange);
    }
    let ts = ts.trunc() as i64;
    let ts = if ts == -1 { bounds.now } else { ts };
    check(name.trim(), value, ts, bounds)
}

/// Decodes one frame's payload into its records, each good or refused.
pub fn decode_frame(
    payload: &[u8],
    bounds: &TimeBounds,
) -> Result<Vec<Result<Point, RecordError>>, FrameError> {
    let value = serde_pickle::value_from_slice(payload, DeOptions::new().decode_strings())
        .map_err(|e| FrameError::Pickle(e.to_string()))?;
    let items = match value {
        Value::List(items) | Value::Tuple(items) => items,
        _ => return Err(FrameError::NotAList),
    };
    Ok(items.iter().map(|item| record(item, bounds)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn frame(v: &Value) -> Vec<u8> {
        serde_pickle::value_to_vec(v, serde_pickle::SerOptions::new().proto_v2()).unwrap()
    }

    fn rec(name: &str, ts: Value, value: Value) -> Value {
        Value::Tuple(vec![
            Value::String(name.into()),
            Value::Tuple(vec![ts, value]),
        ])
    }

    #[test]
    fn decodes_carbon_relay_batches() {
        let v = Value::List(vec![
            rec("a.b", Value::I64(1_699_999_990), Value::F64(1.5)),
            rec("c", Value::F64(1_699_999_991.7), Value::I64(2)),
            rec("bad..name", Value::I64(1_699_999_990), Value::F64(1.0)),
            rec("d", Value::I64(-1), Value::F64(f64::NAN)),
            Value::I64(7),
        ]);
        let got = decode_frame(&frame(&v), &TimeBounds::new(NOW, 60)).unwrap();
        assert_eq!(
            got[0],
            Ok(Point {
                name: "a.b".into(),
                timestamp: 1_699_999_990,
                value: 1.5
            })
        );
        assert_eq!(
            got[1],
            Ok(Point {
                name: "c".into(),
                timestamp: 1_699_999_991,
                value: 2.0
            })
        );
        assert!(matches!(got[2], Err(RecordError::Name(_))));
        assert_eq!(got[3], Err(RecordError::NonFinite));
        assert_eq!(got[4], Err(RecordError::Fields));
    }

    #[test]
    fn python2_byte_strings_and_protocol_0() {
        // pickle.dumps([('a.b', (1699999990, 3.0))], protocol=0) under Python 2.
        let p0 = b"(lp0\n(S'a.b'\np1\n(I1699999990\nF3.0\ntp2\ntp3\na.";
        let got = decode_frame(p0, &TimeBounds::new(NOW, 60)).unwrap();
        assert_eq!(
            got,
            vec![Ok(Point {
                name: "a.b".into(),
                timestamp: 1_699_999_990,
                value: 3.0
            })]
        );
    }

    #[test]
    fn refuses_code_and_garbage() {
        // pickle of os.system('echo pwned'): a REDUCE on a global.
        let evil = b"cos\nsystem\n(S'echo pwned'\ntR.";
        assert!(matches!(
            decode_frame(evil, &TimeBounds::new(NOW, 60)),
            Err(FrameError::Pickle(_))
        ));
        assert!(matches!(
            decode_frame(b"\x80\x02garbage", &TimeBounds::new(NOW, 60)),
            Err(FrameError::Pickle(_))
        ));
        assert_eq!(
            decode_frame(&frame(&Value::I64(3)), &TimeBounds::new(NOW, 60)),
            Err(FrameError::NotAList)
        );
    }

    #[test]
    fn frames() {
        assert_eq!(next_frame(b"\0\0", 10), Ok(None));
        assert_eq!(next_frame(b"\0\0\0\x03ab", 10), Ok(None));
        assert_eq!(next_frame(b"\0\0\0\x02abc", 10), Ok(Some((&b"ab"[..], 6))));
        assert_eq!(
            next_frame(b"\0\0\x10\0", 10),
            Err(FrameError::TooLarge(4096))
        );
    }
}

/// Encodes points as one carbon pickle frame (a 4-byte big-endian length,
/// then `[(name, (timestamp, value)), …]`), as carbon-relay sends them.
pub fn encode_frame<'a>(points: impl IntoIterator<Item = (&'a str, i64, f64)>) -> Vec<u8> {
    // Written opcode by opcode (protocol 2, no memo): a relay encodes
    // millions of points a second, and building a value tree first cost
    // more than the encoding itself.
    let mut frame = Vec::with_capacity(4096);
    frame.extend_from_slice(&[0, 0, 0, 0, 0x80, 2, b']', b'(']);
    for (name, ts, value) in points {
        frame.push(b'X');
        frame.extend_from_slice(&(name.len() as u32).to_le_bytes());
        frame.extend_from_slice(name.as_bytes());
        match i32::try_from(ts) {
            Ok(small) => {
                frame.push(b'J');
                frame.extend_from_slice(&small.to_le_bytes());
            }
            Err(_) => {
                // LONG1: little-endian two's complement, 8 bytes.
                frame.extend_from_slice(&[0x8a, 8]);
                frame.extend_from_slice(&ts.to_le_bytes());
            }
        }
        frame.push(b'G');
        frame.extend_from_slice(&value.to_be_bytes());
        frame.extend_from_slice(&[0x86, 0x86]);
    }
    frame.extend_from_slice(b"e.");
    let body = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&body.to_be_bytes());
    frame
}

/// The points in a frame [`encode_frame`] wrote, counted by walking its
/// opcodes (no decoding); `None` for a frame of another shape.
pub fn encoded_points(frame: &[u8]) -> Option<u64> {
    let mut at = frame
        .get(4..8)
        .filter(|h| *h == [0x80, 2, b']', b'('])?
        .len()
        + 4;
    let mut n = 0u64;
    loop {
        match *frame.get(at)? {
            b'e' => return (frame.get(at + 1) == Some(&b'.')).then_some(n),
            b'X' => {
                let len = u32::from_le_bytes(frame.get(at + 1..at + 5)?.try_into().ok()?) as usize;
                at += 5 + len;
                at += match *frame.get(at)? {
                    b'J' => 5,
                    0x8a => 10,
                    _ => return None,
                };
                if frame.get(at) != Some(&b'G') || frame.get(at + 9..at + 11) != Some(&[0x86, 0x86])
                {
                    return None;
                }
                at += 11;
                n += 1;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;

    #[test]
    fn encoded_points_are_counted_without_decoding() {
        let frame = encode_frame([("a.b", 1_700_000_000, 1.5), ("c", 1 << 40, -2.0)]);
        assert_eq!(encoded_points(&frame), Some(2));
        assert_eq!(encoded_points(&encode_frame([])), Some(0));
        assert_eq!(encoded_points(&frame[..frame.len() - 1]), None);
    }

    #[test]
    fn encoded_frames_decode() {
        let frame = encode_frame([("a.b", 1_700_000_000, 1.5), ("c", 1_700_000_001, -2.0)]);
        let (body, used) = next_frame(&frame, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(used, frame.len());
        let bounds = super::super::TimeBounds {
            now: 1_700_000_000,
            max_future: 3600,
        };
        let points: Vec<_> = decode_frame(body, &bounds)
            .unwrap()
            .into_iter()
            .map(|p| p.unwrap())
            .collect();
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].name.as_str(), points[0].value), ("a.b", 1.5));
    }

    #[test]
    fn encoded_frames_unpickle_as_carbon_reads_them() {
        use serde_pickle::Value as V;
        let frame = encode_frame([
            ("héllo.wörld", 3_000_000_000, f64::MAX),
            ("b", -5, -0.25),
            ("c", 0, 1e-300),
        ]);
        let body = &frame[4..];
        assert_eq!(
            body.len(),
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize
        );
        super::super::pickle_scan::check_plain(body).unwrap();
        let v = serde_pickle::value_from_slice(body, serde_pickle::DeOptions::new()).unwrap();
        let want = |n: &str, ts: i64, x: f64| {
            V::Tuple(vec![
                V::String(n.into()),
                V::Tuple(vec![V::I64(ts), V::F64(x)]),
            ])
        };
        assert_eq!(
            v,
            V::List(vec![
                want("héllo.wörld", 3_000_000_000, f64::MAX),
                want("b", -5, -0.25),
                want("c", 0, 1e-300),
            ])
        );
        let empty = encode_frame([]);
        let v = serde_pickle::value_from_slice(&empty[4..], serde_pickle::DeOptions::new());
        assert_eq!(v.unwrap(), V::List(vec![]));
    }
}

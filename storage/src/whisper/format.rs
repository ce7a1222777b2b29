//! The on-disk layout: metadata, archive table and points, and the eight
//! aggregation methods. Parsing is a pure function over the header bytes.

use std::fmt;
use std::str::FromStr;

/// Bytes of the metadata block: aggregation type, max retention, xFilesFactor, archive count.
pub const METADATA_SIZE: u64 = 16;
/// Bytes of one archive table entry: offset, seconds per point, points.
pub const ARCHIVE_INFO_SIZE: u64 = 12;
/// Bytes of one point: u32 timestamp and f64 value, big-endian.
pub const POINT_SIZE: u64 = 12;

/// How points are combined when propagated into a coarser archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregationMethod {
    /// Mean of the known values.
    Average,
    /// Sum of the known values.
    Sum,
    /// The newest known value.
    Last,
    /// Largest known value.
    Max,
    /// Smallest known value.
    Min,
    /// Mean with unknown values counted as zero.
    AvgZero,
    /// The known value furthest from zero.
    AbsMax,
    /// The known value closest to zero.
    AbsMin,
}

impl AggregationMethod {
    /// Every method, in whisper's type-number order.
    pub const ALL: [AggregationMethod; 8] = [
        Self::Average,
        Self::Sum,
        Self::Last,
        Self::Max,
        Self::Min,
        Self::AvgZero,
        Self::AbsMax,
        Self::AbsMin,
    ];

    /// The number stored in the header (1 = average … 8 = absmin).
    pub fn type_code(self) -> u32 {
        Self::ALL.iter().position(|m| *m == self).unwrap_or(0) as u32 + 1
    }

    /// The method for a header type number.
    pub fn from_type_code(code: u32) -> Option<Self> {
        Self::ALL.get((code as usize).checked_sub(1)?).copied()
    }

    /// Whisper's name for the method.
    pub fn name(self) -> &'static str {
        match self {
            Self::Average => "average",
            Self::Sum => "sum",
            Self::Last => "last",
            Self::Max => "max",
            Self::Min => "min",
            Self::AvgZero => "avg_zero",
            Self::AbsMax => "absmax",
            Self::AbsMin => "absmin",
        }
    }
}

impl fmt::Display for AggregationMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AggregationMethod {
    type Err = super::WhisperError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| super::WhisperError::InvalidAggregationMethod(s.to_string()))
    }
}

/// Combines the values of one coarser slot exactly as whisper's `aggregate`
/// does: `known` are the non-missing values in time order, `neighbors` all
/// slots including the missing ones (only `avg_zero` looks at them).
/// Returns `None` when `known` is empty.
pub fn aggregate(
    method: AggregationMethod,
    known: &[f64],
    neighbors: &[Option<f64>],
) -> Option<f64> {
    let first = *known.first()?;
    // Python's max()/min() keep the first element unless a later one compares
    // strictly greater/less, which decides ties and NaN the same way here.
    // Generic rather than `dyn`: this runs for every slot propagated.
    fn pick(first: f64, rest: &[f64], better: impl Fn(f64, f64) -> bool) -> f64 {
        rest.iter()
            .fold(first, |best, &v| if better(v, best) { v } else { best })
    }
    // Python's sum() adds left to right from 0 (3.11; 3.12 compensates).
    fn sum(vals: impl Iterator<Item = f64>) -> f64 {
        vals.fold(0.0_f64, |acc, v| acc + v)
    }
    let rest = &known[1..];
    Some(match method {
        AggregationMethod::Average => sum(known.iter().copied()) / known.len() as f64,
        AggregationMethod::Sum => sum(known.iter().copied()),
        AggregationMethod::Last => known[known.len() - 1],
        AggregationMethod::Max => pick(first, rest, |v, best| v > best),
        AggregationMethod::Min => pick(first, rest, |v, best| v < best),
        AggregationMethod::AvgZero => {
            // `x or 0`: None and 0.0 become 0; NaN is truthy and stays.
            sum(neighbors.iter().map(|v| v.unwrap_or(0.0))) / neighbors.len() as f64
        }
        AggregationMethod::AbsMax => pick(first, rest, |v, best| v.abs() > best.abs()),
        AggregationMethod::AbsMin => pick(first, rest, |v, best| v.abs() < best.abs()),
    })
}

/// One archive's entry in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Byte offset of the archive's first slot.
    pub offset: u32,
    /// Seconds each point covers.
    pub seconds_per_point: u32,
    /// Number of slots in the ring.
    pub points: u32,
}

impl ArchiveInfo {
    /// Seconds of history the archive keeps.
    pub fn retention(&self) -> i64 {
        i64::from(self.seconds_per_point) * i64::from(self.points)
    }
    /// Bytes the archive occupies.
    pub fn size(&self) -> u64 {
        u64::from(self.points) * POINT_SIZE
    }
    /// One past the archive's last byte.
    pub fn end(&self) -> u64 {
        u64::from(self.offset) + self.size()
    }
}

/// A whisper file's header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Propagation method.
    pub aggregation: AggregationMethod,
    /// Seconds of the longest archive, as stored.
    pub max_retention: u32,
    /// Fraction of known points needed to propagate, stored as f32.
    pub x_files_factor: f32,
    /// Archives, highest precision first.
    pub archives: Vec<ArchiveInfo>,
}

impl Header {
    /// Bytes the header occupies for `archives` archives.
    pub fn size_for(archives: usize) -> u64 {
        METADATA_SIZE + ARCHIVE_INFO_SIZE * archives as u64
    }

    /// Bytes this header occupies.
    pub fn size(&self) -> u64 {
        Self::size_for(self.archives.len())
    }

    /// Parses and checks a header. `data` holds the start of the file (at least
    /// the whole header when the file has one) and `file_len` its full length.
    /// Checks go beyond Python whisper's where its own code would crash or read
    /// garbage: zero-sized archives, archives past the end of the file.
    pub fn parse(data: &[u8], file_len: u64) -> Result<Header, String> {
        let word = |at: usize| -> Option<u32> {
            data.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let (Some(agg), Some(max_retention), Some(xff_bits), Some(count)) =
            (word(0), word(4), word(8), word(12))
        else {
            return Err(format!(
                "Unable to read header: the file has {} bytes, a whisper header needs {METADATA_SIZE}",
                data.len()
            ));
        };
        let aggregation = AggregationMethod::from_type_code(agg).ok_or_else(|| {
            format!("Unable to read header: aggregation type {agg} is not one of whisper's 1 to 8 (not a whisper file?)")
        })?;
        let x_files_factor = f32::from_bits(xff_bits);
        if !(0.0..=1.0).contains(&x_files_factor) {
            return Err(format!(
                "Unable to read header: xFilesFactor {x_files_factor} is not between 0 and 1 (not a whisper file?)"
            ));
        }
        if count == 0 {
            return Err("Unable to read header: the file declares no archives".to_string());
        }
        let mut archives = Vec::with_capacity((count as usize).min(data.len() / 12 + 1));
        for i in 0..count as usize {
            let at = METADATA_SIZE as usize + i * ARCHIVE_INFO_SIZE as usize;
            let (Some(offset), Some(seconds_per_point), Some(points)) =
                (word(at), word(at + 4), word(at + 8))
            else {
                return Err(format!(
                    "Unable to read archive{i} metadata: the file ends inside the archive table ({count} archives declared)"
                ));
            };
            let archive = ArchiveInfo {
                offset,
                seconds_per_point,
                points,
            };
            if seconds_per_point == 0 || points == 0 {
                return Err(format!(
                    "archive{i} has {seconds_per_point} seconds per point and {points} points: both must be positive"
                ));
            }
            if archive.end() > file_len {
                return Err(format!(
                    "archive{i} (offset {offset}, {points} points) extends past the end of the file ({file_len} bytes): truncated?"
                ));
            }
            archives.push(archive);
        }
        Ok(Header {
            aggregation,
            max_retention,
            x_files_factor,
            archives,
        })
    }

    /// The archive table length declared by the first 16 bytes, if present,
    /// so a reader knows how many bytes [`Header::parse`] needs.
    pub fn declared_size(metadata: &[u8]) -> Option<u64> {
        let b = metadata.get(12..16)?;
        Some(Self::size_for(
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        ))
    }
}

/// Serializes the metadata block (the first 16 bytes).
pub fn encode_metadata(
    aggregation: AggregationMethod,
    max_retention: u32,
    x_files_factor: f32,
    archive_count: u32,
) -> [u8; METADATA_SIZE as usize] {
    let mut out = [0u8; METADATA_SIZE as usize];
    out[0..4].copy_from_slice(&aggregation.type_code().to_be_bytes());
    out[4..8].copy_from_slice(&max_retention.to_be_bytes());
    out[8..12].copy_from_slice(&x_files_factor.to_be_bytes());
    out[12..16].copy_from_slice(&archive_count.to_be_bytes());
    out
}

/// Serializes a whole header: metadata then archive table.
pub fn encode_header(header: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.size() as usize);
    out.extend_from_slice(&encode_metadata(
        header.aggregation,
        header.max_retention,
        header.x_files_factor,
        header.archives.len() as u32,
    ));
    for a in &header.archives {
        out.extend_from_slice(&a.offset.to_be_bytes());
        out.extend_from_slice(&a.seconds_per_point.to_be_bytes());
        out.extend_from_slice(&a.points.to_be_bytes());
    }
    out
}

/// Decodes one 12-byte point.
#[inline]
pub(crate) fn decode_point(b: &[u8]) -> (u32, f64) {
    let b: &[u8; 12] = b[..12].try_into().expect("a 12-byte point");
    let (ts, v) = b.split_at(4);
    (
        u32::from_be_bytes(ts.try_into().expect("4 bytes")),
        f64::from_be_bytes(v.try_into().expect("8 bytes")),
    )
}

/// Encodes one point, refusing timestamps a u32 cannot hold (whisper's
/// `struct.pack` raises there too).
pub(crate) fn encode_point(interval: i64, value: f64) -> Result<[u8; 12], super::WhisperError> {
    let ts =
        u32::try_from(interval).map_err(|_| super::WhisperError::TimestampOutOfRange(interval))?;
    let mut out = [0u8; 12];
    out[0..4].copy_from_slice(&ts.to_be_bytes());
    out[4..12].copy_from_slice(&value.to_be_bytes());
    Ok(out)
}

/// Appends one point as [`encode_point`] encodes it. Written straight
/// into `out`: a batch encodes a point per slot, and the array moved out
/// of a `Result` stalled on every one (the stores and loads straddle).
pub(crate) fn push_point(
    out: &mut Vec<u8>,
    interval: i64,
    value: f64,
) -> Result<(), super::WhisperError> {
    let ts =
        u32::try_from(interval).map_err(|_| super::WhisperError::TimestampOutOfRange(interval))?;
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&value.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_codes_round_trip() {
        for (i, m) in AggregationMethod::ALL.iter().enumerate() {
            assert_eq!(m.type_code(), i as u32 + 1);
            assert_eq!(AggregationMethod::from_type_code(i as u32 + 1), Some(*m));
            assert_eq!(m.name().parse::<AggregationMethod>().unwrap(), *m);
        }
        assert_eq!(AggregationMethod::from_type_code(0), None);
        assert_eq!(AggregationMethod::from_type_code(9), None);
    }

    #[test]
    fn header_round_trips() {
        let h = Header {
            aggregation: AggregationMethod::Max,
            max_retention: 86400,
            x_files_factor: 0.3,
            archives: vec![
                ArchiveInfo {
                    offset: 40,
                    seconds_per_point: 60,
                    points: 60,
                },
                ArchiveInfo {
                    offset: 760,
                    seconds_per_point: 3600,
                    points: 24,
                },
            ],
        };
        let bytes = encode_header(&h);
        assert_eq!(Header::declared_size(&bytes), Some(40));
        assert_eq!(Header::parse(&bytes, 760 + 24 * 12), Ok(h));
    }

    #[test]
    fn header_rejections_name_the_problem() {
        assert!(Header::parse(b"abc", 3).unwrap_err().contains("needs 16"));
        let mut h = encode_metadata(AggregationMethod::Sum, 60, 0.5, 1).to_vec();
        h[3] = 42;
        assert!(Header::parse(&h, 16)
            .unwrap_err()
            .contains("aggregation type 42"));
        let h = encode_metadata(AggregationMethod::Sum, 60, 2.0, 1);
        assert!(Header::parse(&h, 16)
            .unwrap_err()
            .contains("xFilesFactor 2"));
        let h = encode_metadata(AggregationMethod::Sum, 60, f32::NAN, 1);
        assert!(Header::parse(&h, 16).unwrap_err().contains("xFilesFactor"));
        let h = encode_metadata(AggregationMethod::Sum, 60, 0.5, 2);
        assert!(Header::parse(&h, 16)
            .unwrap_err()
            .contains("archive0 metadata"));
        let mut h = encode_metadata(AggregationMethod::Sum, 60, 0.5, 1).to_vec();
        h.extend_from_slice(&[0, 0, 0, 28, 0, 0, 0, 1, 0, 0, 0, 5]);
        assert!(Header::parse(&h, 40).unwrap_err().contains("past the end"));
    }

    #[test]
    fn aggregate_matches_python_ties_and_nan() {
        let n = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        assert_eq!(
            aggregate(AggregationMethod::AbsMax, &[-3.0, 3.0], &n(&[-3.0, 3.0])),
            Some(-3.0)
        );
        assert_eq!(
            aggregate(AggregationMethod::AbsMin, &[2.0, -2.0], &n(&[2.0, -2.0])),
            Some(2.0)
        );
        let max = aggregate(
            AggregationMethod::Max,
            &[f64::NAN, 5.0],
            &n(&[f64::NAN, 5.0]),
        )
        .unwrap();
        assert!(max.is_nan());
        assert_eq!(
            aggregate(
                AggregationMethod::Max,
                &[1.0, f64::NAN],
                &n(&[1.0, f64::NAN])
            ),
            Some(1.0)
        );
        assert_eq!(
            aggregate(
                AggregationMethod::AvgZero,
                &[4.0],
                &[Some(4.0), None, None, None]
            ),
            Some(1.0)
        );
        assert_eq!(
            aggregate(AggregationMethod::Last, &[1.0, 2.0], &n(&[1.0, 2.0])),
            Some(2.0)
        );
        assert_eq!(aggregate(AggregationMethod::Sum, &[], &[]), None);
    }
}

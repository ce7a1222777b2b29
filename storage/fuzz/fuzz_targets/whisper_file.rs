//! Any bytes as a whisper file: the header parser must refuse or accept
//! without panicking, and an accepted file must survive fetches and updates
//! (of points taken from the input too) without panicking or growing.

#![no_main]

use std::path::Path;

use graunt_storage::whisper::{fetch, update, update_many, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = Header::parse(data, data.len() as u64) else { return };
    let mut file = data.to_vec();
    let path = Path::new("fuzz.wsp");
    // Derive a clock and points from the bytes after the header.
    let tail = &data[(header.size() as usize).min(data.len())..];
    let word = |i: usize| {
        tail.get(i * 4..i * 4 + 4).map_or(0, |b| i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    };
    let now = word(0);
    let _ = fetch(&file, &header, path, now - word(1), Some(now), now, None);
    let _ = fetch(&file, &header, path, word(2), Some(word(3)), now, Some(word(4) as u32));
    let _ = update(&mut file, &header, path, word(5) as f64, Some(now - word(6)), now);
    let points: Vec<(i64, f64)> = (0..8).map(|i| (now - word(7 + i) % 100_000, word(15 + i) as f64)).collect();
    let _ = update_many(&mut file, &header, path, &points, now);
    assert_eq!(file.len(), data.len(), "an update grew the file");
    let _ = fetch(&file, &header, path, 0, Some(now), now, None);
});

//! The store as the node uses it: accepted points are readable at once
//! (cache over whisper), the writer moves them to files, the log is replayed
//! after a crash and released once its points are written.

use graunt_harness::unix_now as now;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use graunt_storage::schema::{Aggregations, Schemas};
use graunt_storage::store::{Store, StoreConfig};
use graunt_storage::whisper::WhisperFile;
use graunt_storage::{writer, Datapoint};

fn dp(name: &str, timestamp: i64, value: f64) -> Datapoint {
    Datapoint {
        name: name.into(),
        timestamp,
        value,
    }
}

fn open(dir: &std::path::Path) -> Arc<Store> {
    let config = StoreConfig {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let schemas = Schemas::parse("[all]\npattern = .*\nretentions = 10s:1h,1m:1d\n").unwrap();
    let aggregations =
        Aggregations::parse("[max]\npattern = \\.max$\naggregationMethod = max\n").unwrap();
    Store::open(config, schemas, aggregations).unwrap().0
}

/// Runs the writer until the cache is empty.
fn drain(store: &Arc<Store>) {
    writer::run(store.clone(), Arc::new(AtomicBool::new(true)));
}

#[test]
fn reads_overlay_the_cache_on_whisper() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let t = now() - now() % 10 - 100;
    store
        .accept(&[dp("a.b", t, 1.0), dp("a.b", t + 10, 2.0)])
        .unwrap();
    // No file yet: an empty file of the schema, with the cache laid over it.
    let s = store.fetch("a.b", t - 10, t + 20, now()).unwrap().unwrap();
    assert_eq!(s.step, 10);
    // Whisper's first slot is the one after `from`.
    assert_eq!(
        (s.start, &s.values[..3]),
        (t, &[Some(1.0), Some(2.0), None][..])
    );
    assert!(store
        .fetch("nothing.here", t - 10, t, now())
        .unwrap()
        .is_none());

    drain(&store);
    assert_eq!(store.cache.size(), 0);
    let file = WhisperFile::open(dir.path().join("whisper/a/b.wsp")).unwrap();
    assert_eq!(file.header().archives.len(), 2);
    // Now a newer point in the cache, overlaid on what the file holds; a
    // cached point replaces the file's value for its slot.
    store
        .accept(&[dp("a.b", t + 20, 3.0), dp("a.b", t, 9.0)])
        .unwrap();
    let s = store.fetch("a.b", t - 10, t + 30, now()).unwrap().unwrap();
    assert_eq!(
        (s.start, &s.values[..3]),
        (t, &[Some(9.0), Some(2.0), Some(3.0)][..])
    );
}

#[test]
fn new_files_follow_the_rules_and_metadata_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let t = now() - 30;
    store
        .accept(&[dp("x.max", t, 1.0), dp("x.avg", t, 1.0)])
        .unwrap();
    assert_eq!(store.aggregation_of("x.max").unwrap().name(), "max");
    drain(&store);
    let f = WhisperFile::open(dir.path().join("whisper/x/max.wsp")).unwrap();
    assert_eq!(f.header().aggregation.name(), "max");
    assert_eq!(store.aggregation_of("x.avg").unwrap().name(), "average");
}

#[test]
fn the_log_is_replayed_after_a_crash_and_released_after_writing() {
    let dir = tempfile::tempdir().unwrap();
    let t = now() - now() % 10 - 100;
    {
        let store = open(dir.path());
        store.accept(&[dp("r.a", t, 1.0)]).unwrap();
        store.accept(&[dp("r.b", t, 2.0)]).unwrap();
        // Dropped without writing: as if the process died.
    }
    let config = StoreConfig {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let (store, replay) =
        Store::open(config, Schemas::embedded(), Aggregations::embedded()).unwrap();
    assert_eq!(replay.points, 2);
    assert_eq!(store.cache.size(), 2);
    assert_eq!(store.wal.segments(), 2);
    drain(&store);
    assert_eq!(
        store.wal.segments(),
        1,
        "the replayed segment is released once written"
    );
    let s = store.fetch("r.b", t - 1, t, now()).unwrap().unwrap();
    assert_eq!(s.values, vec![Some(2.0)]);
}

#[test]
fn creations_over_the_limit_wait_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        data_dir: dir.path().to_path_buf(),
        max_creates_per_minute: 60.0,
        ..Default::default()
    };
    let (store, _) = Store::open(config, Schemas::embedded(), Aggregations::embedded()).unwrap();
    let t = now() - 30;
    let points: Vec<Datapoint> = (0..20)
        .map(|i| dp(&format!("c.m{i}"), t, i as f64))
        .collect();
    store.accept(&points).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || writer::run(store, stop))
    };
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let created = store
        .stats
        .creates
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=4).contains(&created),
        "{created} files created in 2.5 s at 1 per second"
    );
    assert_eq!(
        store.cache.size() as u64,
        20 - created,
        "the others wait in the cache"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(handle.join().unwrap(), 0);
    assert_eq!(
        store
            .stats
            .creates
            .load(std::sync::atomic::Ordering::Relaxed),
        20,
        "stopping writes the rest"
    );
}

#[test]
fn cached_points_are_aggregated_into_coarse_slots() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let schemas = Schemas::parse("[all]\npattern = .*\nretentions = 10s:2m,1m:1h\n").unwrap();
    let aggregations =
        Aggregations::parse("[sum]\npattern = sum$\naggregationMethod = sum\n").unwrap();
    let (store, _) = Store::open(config, schemas, aggregations).unwrap();
    let now = now();
    let minute = now - now % 60 - 600;
    let points: Vec<Datapoint> = [1.0, 2.0, 6.0]
        .iter()
        .enumerate()
        .map(|(i, v)| dp("x.sum", minute + i as i64 * 10, *v))
        .collect();
    store.accept(&points).unwrap();
    store
        .accept(&[
            dp("x.avg", minute, 1.0),
            dp("x.avg", minute + 10, 2.0),
            dp("x.avg", minute + 20, 6.0),
        ])
        .unwrap();
    // An hour back only the 1-minute archive reaches: one slot for the three points.
    let s = store.fetch("x.sum", now - 3000, now, now).unwrap().unwrap();
    assert_eq!(s.step, 60);
    let slot = ((minute - s.start) / 60) as usize;
    assert_eq!(
        s.values[slot],
        Some(9.0),
        "sum of the cached points in the minute"
    );
    let s = store.fetch("x.avg", now - 3000, now, now).unwrap().unwrap();
    assert_eq!(
        s.values[slot],
        Some(3.0),
        "average of the cached points in the minute"
    );
}

#[test]
fn received_series_are_found_before_and_after_their_files_exist() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.accept(&[dp("w.old", now() - 10, 1.0)]).unwrap();
    drain(&store);
    ready(&store);
    store
        .accept(&[dp("w.old", now(), 2.0), dp("w.new", now(), 3.0)])
        .unwrap();
    let unfiled: Vec<String> = store
        .cache
        .unfiled()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(unfiled, vec!["w.new"], "w.old's file is known already");
    assert_eq!(found(&store, "w.*"), vec!["w.new", "w.old"]);
    drain(&store);
    assert!(store.cache.unfiled().is_empty());
    assert_eq!(found(&store, "w.*"), vec!["w.new", "w.old"]);
}

#[test]
fn a_series_whose_file_is_being_made_is_always_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let noted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    const SERIES: usize = 2_000;
    let maker = {
        let (store, noted) = (store.clone(), noted.clone());
        std::thread::spawn(move || {
            for i in 0..SERIES {
                let name = format!("w.m{i}");
                store.accept(&[dp(&name, now(), 1.0)]).unwrap();
                noted.store(i + 1, std::sync::atomic::Ordering::Release);
                // Its file is made, then the writer tells the store. (A
                // real file: the index's first scan may run meanwhile, and
                // its tree replaces the one the store told.)
                let path = store.path_of(&name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, b"").unwrap();
                store.note_file(&path);
            }
        })
    };
    let missed = loop {
        let before = noted.load(std::sync::atomic::Ordering::Acquire);
        let found = store.find("w.*").unwrap().len();
        if found < before {
            break Some((found, before));
        }
        if before == SERIES {
            break None;
        }
    };
    maker.join().unwrap();
    assert_eq!(
        missed, None,
        "a find saw (found, noted) series while files were made"
    );
}

/// Waits for the name index's first read of the disk.
fn ready(store: &Store) {
    while !store.names.is_ready() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn found(store: &Store, pattern: &str) -> Vec<String> {
    store
        .find(pattern)
        .unwrap()
        .into_iter()
        .map(|n| n.path)
        .collect()
}

#[test]
fn a_file_copied_in_stays_found_once_its_points_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    ready(&store);
    // Copied in by hand after the index read the disk: the tree lacks it.
    let path = store.path_of("c.copied");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    graunt_storage::whisper::create(
        &path,
        &[graunt_storage::whisper::Retention {
            seconds_per_point: 10,
            points: 360,
        }],
        &Default::default(),
    )
    .unwrap();
    store.accept(&[dp("c.copied", now(), 1.0)]).unwrap();
    assert_eq!(found(&store, "c.*"), vec!["c.copied"]);
    drain(&store);
    assert_eq!(store.cache.size(), 0);
    assert_eq!(
        found(&store, "c.*"),
        vec!["c.copied"],
        "written into and out of the cache, it is in the tree"
    );
}

#[test]
fn replayed_series_whose_files_the_first_scan_finds_are_filed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.accept(&[dp("r.old", now() - 20, 1.0)]).unwrap();
        drain(&store);
        store
            .accept(&[dp("r.old", now(), 2.0), dp("r.new", now(), 3.0)])
            .unwrap();
        // Dropped without writing: as if the process died.
    }
    let store = open(dir.path());
    ready(&store);
    // The rescan's end files what it found; the thread does that just
    // after the index says it is ready.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let unfiled = loop {
        let unfiled: Vec<String> = store
            .cache
            .unfiled()
            .iter()
            .map(|n| n.to_string())
            .collect();
        if unfiled.len() == 1 || std::time::Instant::now() > deadline {
            break unfiled;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(unfiled, vec!["r.new"]);
    assert_eq!(found(&store, "r.*"), vec!["r.new", "r.old"]);
}

//! A node's storage: whisper files under `<data>/whisper`, the write-ahead
//! log under `<data>/wal`, and the cache between them. Receivers call
//! [`Store::accept`]; the writer ([`crate::writer`]) drains the cache into
//! whisper; reads ([`Store::fetch`]) see whisper overlaid with the cache.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::cache::{Cache, Datapoint};
use crate::metric::metric_path;
use crate::names::NameIndex;
use crate::schema::{Aggregations, Schemas};
use crate::wal::{SyncPolicy, Wal};
use crate::whisper::{self, AggregationMethod, CreateOptions, Series, WhisperError, WhisperFile};

/// Storage settings; defaults in brackets.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root of the node's data: `whisper/` and `wal/` live here [`./var`].
    pub data_dir: PathBuf,
    /// Points the cache holds before receivers are slowed down [10,000,000].
    pub max_cache_size: usize,
    /// WAL segment size before rolling, bytes [64 MiB].
    pub wal_segment_bytes: u64,
    /// When the WAL is forced to disk [periodic, every second].
    pub wal_sync: SyncPolicy,
    /// Whisper update operations per second, 0 for no limit [0].
    pub max_updates_per_second: f64,
    /// Whisper files created per minute, 0 for no limit [0]; metrics over
    /// the limit wait in the cache, they are not dropped.
    pub max_creates_per_minute: f64,
    /// Create whisper files sparse (holes) instead of allocated [false].
    pub sparse_create: bool,
    /// Writer threads, each owning a disjoint part of the metrics [the
    /// machine's cores, at most 4].
    pub writers: usize,
    /// How often the name index reads the whisper tree again, for files
    /// other processes added or deleted; zero for never [5 minutes].
    pub index_rescan: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("var"),
            max_cache_size: 10_000_000,
            wal_segment_bytes: 64 << 20,
            wal_sync: SyncPolicy::Periodic,
            max_updates_per_second: 0.0,
            max_creates_per_minute: 0.0,
            sparse_create: false,
            writers: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            index_rescan: Duration::from_secs(300),
        }
    }
}

/// Reads as all zeros: an empty file of some layout, without its bytes.
struct Zeros(u64);

impl whisper::Blocks for Zeros {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset + buf.len() as u64 > self.0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.fill(0);
        Ok(())
    }
    fn write_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0)
    }
}

/// Lays cached points over fetched values as graphite-web's
/// `merge_with_cache` does: in an archive coarser than the finest, the cached
/// points of one slot are first combined with the file's aggregation method.
fn overlay(s: &mut Series, cached: &[(i64, f64)], method: AggregationMethod, finest: i64) {
    let mut slots: Vec<(i64, Vec<f64>)> = Vec::new();
    for &(ts, value) in cached {
        let slot = ts - ts.rem_euclid(s.step);
        match slots.iter_mut().find(|(t, _)| *t == slot) {
            Some((_, values)) if s.step > finest => values.push(value),
            Some((_, values)) => *values = vec![value],
            None => slots.push((slot, vec![value])),
        }
    }
    for (slot, values) in slots {
        if slot < s.start || slot >= s.end {
            continue;
        }
        let neighbors: Vec<Option<f64>> = values.iter().map(|v| Some(*v)).collect();
        let value = if values.len() == 1 {
            Some(values[0])
        } else {
            whisper::aggregate(method, &values, &neighbors)
        };
        if let Some(v) = s.values.get_mut(((slot - s.start) / s.step) as usize) {
            *v = value;
        }
    }
}

/// Counters of the writer since start (monotonic), read by the node's self-metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Points written to whisper.
    pub committed_points: AtomicU64,
    /// `update_many` calls.
    pub update_operations: AtomicU64,
    /// Microseconds spent in `update_many`.
    pub update_micros: AtomicU64,
    /// Files created.
    pub creates: AtomicU64,
    /// Writes that failed (points dropped).
    pub errors: AtomicU64,
}

/// What opening a store found in its write-ahead log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replay {
    /// Points put back into the cache.
    pub points: usize,
    /// Segments that ended in a torn record (the tail of a crash).
    pub torn_segments: usize,
}

/// A series new to the cache, which marks it unfiled (found from the
/// cache): no longer so if the name tree holds its file already.
fn file_if_known(names: &NameIndex, cache: &Cache, name: &str) {
    if names.contains(name) {
        cache.filed(name);
    }
}

/// Starts the thread that builds the name index from the disk, then reads
/// the disk again every [`StoreConfig::index_rescan`] (zero: never again);
/// it ends with the store.
fn spawn_indexer(store: &Arc<Store>) -> io::Result<()> {
    // The thread holds the store only to list the cache, so a store
    // dropped (a node restarting on the same directory) is gone at once.
    let weak = Arc::downgrade(store);
    let names = store.names.clone();
    let every = store.config.index_rescan;
    let dir = store.whisper_dir.clone();
    std::thread::Builder::new()
        .name("graunt-index".into())
        .spawn(move || loop {
            if weak.strong_count() == 0 {
                return;
            }
            let started = Instant::now();
            match names.rescan() {
                Ok(leaves) => {
                    // Series received before the tree held their files
                    // (the first scan still running) are found there now.
                    if let Some(store) = weak.upgrade() {
                        for name in store.cache.unfiled() {
                            file_if_known(&names, &store.cache, &name);
                        }
                    }
                    tracing::debug!(
                        leaves,
                        ms = started.elapsed().as_millis() as u64,
                        "name index read from disk"
                    )
                }
                Err(e) => tracing::warn!(error = %e, dir = %dir.display(), "cannot read the whisper tree for the name index; finds walk the disk until it can be read"),
            }
            // Zero, or too far to say: never again.
            let next = (!every.is_zero())
                .then(|| Instant::now().checked_add(every))
                .flatten();
            loop {
                std::thread::sleep(Duration::from_millis(250));
                if weak.strong_count() == 0 {
                    return;
                }
                if next.is_some_and(|n| Instant::now() >= n) {
                    break;
                }
            }
        })?;
    Ok(())
}

/// See the module docs.
pub struct Store {
    whisper_dir: PathBuf,
    /// The write-back cache.
    pub cache: Cache,
    /// The write-ahead log.
    pub wal: Wal,
    schemas: RwLock<Arc<Schemas>>,
    aggregations: RwLock<Arc<Aggregations>>,
    /// Writer counters.
    pub stats: WriterStats,
    /// The settings it was opened with.
    pub config: StoreConfig,
    /// The tagged series held here (`<data>/tags`).
    pub tags: crate::tagindex::TagIndex,
    /// The tree of metric names, in memory.
    pub names: Arc<NameIndex>,
}

impl Store {
    /// Opens (creating folders as needed) and replays the write-ahead log
    /// into the cache.
    pub fn open(
        config: StoreConfig,
        schemas: Schemas,
        aggregations: Aggregations,
    ) -> io::Result<(Arc<Store>, Replay)> {
        let whisper_dir = config.data_dir.join("whisper");
        std::fs::create_dir_all(&whisper_dir)?;
        let cache = Cache::new(config.max_cache_size, 64);
        let names = Arc::new(NameIndex::new(&whisper_dir));
        let tags = crate::tagindex::TagIndex::open(&config.data_dir.join("tags"), &whisper_dir)?;
        let mut replay = Replay::default();
        let (wal, torn) = Wal::open(
            &config.data_dir.join("wal"),
            config.wal_segment_bytes,
            config.wal_sync,
            |segment, batch| {
                replay.points += batch.len();
                for p in batch.iter().filter(|p| crate::tags::is_tagged(&p.name)) {
                    tags.ensure(&p.name);
                }
                // The tree is empty until the first scan, which files them.
                cache.add(&batch, segment);
            },
        )?;
        replay.torn_segments = torn;
        let store = Store {
            whisper_dir,
            cache,
            wal,
            schemas: RwLock::new(Arc::new(schemas)),
            aggregations: RwLock::new(Arc::new(aggregations)),
            stats: WriterStats::default(),
            config,
            tags,
            names,
        };
        let store = Arc::new(store);
        spawn_indexer(&store)?;
        Ok((store, replay))
    }

    /// Where whisper files live.
    pub fn whisper_dir(&self) -> &Path {
        &self.whisper_dir
    }

    /// The whisper file of `name` (a valid name: see
    /// [`crate::metric::validate_name`]).
    pub fn path_of(&self, name: &str) -> PathBuf {
        metric_path(&self.whisper_dir, name)
    }

    /// Accepts validated points: appended to the log, then into the cache.
    /// A timestamp whisper cannot hold (outside 1..=u32::MAX; receivers
    /// refuse them first) refuses the whole batch.
    pub fn accept(&self, points: &[Datapoint]) -> io::Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        if let Some(p) = points
            .iter()
            .find(|p| p.timestamp <= 0 || p.timestamp > i64::from(u32::MAX))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: timestamp {} is outside whisper's range (1 to {})",
                    p.name,
                    p.timestamp,
                    u32::MAX
                ),
            ));
        }
        for p in points.iter().filter(|p| crate::tags::is_tagged(&p.name)) {
            self.tags.ensure(&p.name);
        }
        // New names are looked for in the tree after the log's lock is
        // released: a long find holding the tree must not stall every
        // receiver.
        let mut fresh: Vec<Arc<str>> = Vec::new();
        self.wal.append(points, |segment| {
            self.cache
                .add_noting(points, segment, |name| fresh.push(name.clone()))
        })?;
        for name in fresh {
            file_if_known(&self.names, &self.cache, &name);
        }
        Ok(())
    }

    /// Records that this node wrote the whisper file `path` (a new file or
    /// a received copy), for the name index.
    pub fn note_file(&self, path: &Path) {
        if let Some(name) = self.names.name_of(path) {
            // The tree first: a find reads the unfiled series, then the tree.
            self.names.insert(&name);
            self.cache.filed(&name);
        }
    }

    /// Every node (branches and leaves) matching the untagged `pattern`,
    /// sorted, from the name tree and the series only the cache holds.
    pub fn find(&self, pattern: &str) -> io::Result<Vec<crate::find::Node>> {
        // The cache before the tree: see [`Cache::unfiled`].
        let unfiled = self.cache.unfiled();
        self.names.find(pattern, &unfiled)
    }

    /// Records that this node deleted the whisper file `path`.
    pub fn forget_file(&self, path: &Path) {
        if let Some(name) = self.names.name_of(path) {
            self.names.remove(&name);
        }
    }

    /// Replaces the storage schemas only (files created from now on).
    pub fn set_schemas(&self, schemas: Schemas) {
        *self.schemas.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(schemas);
    }

    /// Replaces the aggregation rules only (files created from now on).
    pub fn set_aggregations(&self, aggregations: Aggregations) {
        *self.aggregations.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(aggregations);
    }

    /// Replaces the storage rules for files created from now on.
    pub fn set_rules(&self, schemas: Schemas, aggregations: Aggregations) {
        *self.schemas.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(schemas);
        *self.aggregations.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(aggregations);
    }

    /// The archives, xFilesFactor and method a new file for `name` gets.
    pub fn rules_for(&self, name: &str) -> (Vec<whisper::Retention>, CreateOptions) {
        let schemas = self
            .schemas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let aggregations = self
            .aggregations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (x_files_factor, aggregation) = aggregations.matching(name);
        let opts = CreateOptions {
            x_files_factor,
            aggregation,
            sparse: self.config.sparse_create,
        };
        (schemas.matching(name).retentions.clone(), opts)
    }

    /// The aggregation method of `name`: its file's, or the rules' for a
    /// metric whose file does not exist yet.
    pub fn aggregation_of(&self, name: &str) -> Result<AggregationMethod, WhisperError> {
        match WhisperFile::open(self.path_of(name)) {
            Ok(f) => Ok(f.header().aggregation),
            Err(WhisperError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(self.rules_for(name).1.aggregation)
            }
            Err(e) => Err(e),
        }
    }

    /// Whisper's fetch of `name` with the cache laid over it: a cached point
    /// replaces the slot it falls in. A metric with cached points but no file
    /// yet reads as an empty file of its schema. `Ok(None)` when there is
    /// neither file nor cached point, or whisper has no data for the range.
    pub fn fetch(
        &self,
        name: &str,
        from: i64,
        until: i64,
        now: i64,
    ) -> Result<Option<Series>, WhisperError> {
        self.fetch_window(name, (from, until, now), whisper::EVERY_SLOT)
    }

    /// [`Store::fetch`] of the whole range cut to the slots that overlap
    /// `window` (`[first, end)` in time), reading only those.
    pub fn fetch_window(
        &self,
        name: &str,
        (from, until, now): (i64, i64, i64),
        window: (i64, i64),
    ) -> Result<Option<Series>, WhisperError> {
        // A name from a request is not trusted to stay inside the tree.
        if crate::metric::validate_name(name).is_err() {
            return Ok(None);
        }
        // The cache first: a point the writer moves to the file meanwhile is
        // then in one or the other when the file is read.
        let cached = self.cache.get(name);
        let (series, header) = match WhisperFile::open(self.path_of(name)) {
            Ok(file) => (
                file.fetch_window(from, Some(until), now, window)?,
                file.header().clone(),
            ),
            Err(WhisperError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                if cached.is_empty() {
                    return Ok(None);
                }
                let (archives, opts) = self.rules_for(name);
                let header = whisper::layout(&archives, &opts)?;
                let blank = Zeros(header.archives.last().map_or(0, |a| a.end()));
                let series = whisper::fetch_window(
                    &blank,
                    &header,
                    Path::new(name),
                    (from, Some(until), now),
                    window,
                )?;
                (series, header)
            }
            Err(e) => return Err(e),
        };
        let finest = header
            .archives
            .first()
            .map_or(1, |a| i64::from(a.seconds_per_point));
        Ok(series.map(|mut s| {
            overlay(&mut s, &cached, header.aggregation, finest);
            s
        }))
    }
}

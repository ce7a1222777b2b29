//! The writer: drains the cache into whisper files, largest backlog first,
//! one `update_many` per metric, creating files from the storage rules, within
//! `max_updates_per_second` and `max_creates_per_minute`. It runs on its own
//! threads (file I/O blocks; `writers` of them, each owning a disjoint part
//! of the metrics) until told to stop, then writes everything left.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cache::Checkout;
use crate::store::Store;
use crate::whisper::{self, WhisperError, WhisperFile};

/// A token bucket refilled at `rate` per `per`; `rate <= 0` means unlimited.
struct Bucket {
    rate: f64,
    per: Duration,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Starts empty, so a limit of one update per 100 s allows none in the
    /// first 100 s; holds at most one period's worth (and at least one token).
    fn new(rate: f64, per: Duration) -> Self {
        Bucket {
            rate,
            per,
            tokens: 0.0,
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned =
            now.duration_since(self.last).as_secs_f64() / self.per.as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate.max(1.0));
        self.last = now;
    }

    /// Takes a token if one is available.
    fn try_take(&mut self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token could be taken now (without taking it).
    fn available(&mut self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.refill();
        self.tokens >= 1.0
    }

    /// How long until a token is available.
    fn wait(&mut self) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        self.refill();
        let missing = (1.0 - self.tokens).max(0.0);
        self.per.mul_f64(missing / self.rate)
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// carbon's rate limits, shared by every writer thread: they bound the
/// node, not each thread.
struct Limits {
    updates: Mutex<Bucket>,
    creates: Mutex<Bucket>,
}

impl Limits {
    fn updates(&self) -> MutexGuard<'_, Bucket> {
        self.updates.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn creates(&self) -> MutexGuard<'_, Bucket> {
        self.creates.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Outcome {
    Written,
    CreateLimited,
}

fn write(
    store: &Store,
    checkout: &Checkout,
    limits: &Limits,
    draining: bool,
) -> Result<Outcome, WhisperError> {
    let path = store.path_of(&checkout.name);
    let mut file = match WhisperFile::open_rw(&path) {
        Ok(f) => f,
        Err(WhisperError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            if !draining && !limits.creates().try_take() {
                return Ok(Outcome::CreateLimited);
            }
            let (archives, opts) = store.rules_for(&checkout.name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| WhisperError::io(parent, e))?;
            }
            match whisper::create_atomic(&path, &archives, &opts) {
                Ok(_) => {
                    store.stats.creates.fetch_add(1, Ordering::Relaxed);
                    // A tagged series enters the tree by its file's path.
                    store.note_file(&path);
                }
                // Someone else (a restore, a second writer) created it meanwhile.
                Err(WhisperError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
            WhisperFile::open_rw(&path)?
        }
        Err(e) => return Err(e),
    };
    let started = Instant::now();
    file.update_many(&checkout.points, unix_now())?;
    let s = &store.stats;
    s.update_micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    s.update_operations.fetch_add(1, Ordering::Relaxed);
    s.committed_points
        .fetch_add(checkout.points.len() as u64, Ordering::Relaxed);
    Ok(Outcome::Written)
}

/// The checkout's points leave the cache. A series still unfiled when it
/// was checked out goes into the name tree first if its file exists (one
/// copied in, made by someone else, unusable, or just made), or finds
/// would lose it until the next rescan.
fn complete(store: &Store, checkout: &Checkout) {
    if checkout.unfiled {
        let path = store.path_of(&checkout.name);
        if path.exists() {
            store.note_file(&path);
        }
    }
    store.cache.complete(&checkout.name);
}

/// Runs the writers until `stop` is set and the cache is empty (or holds
/// only metrics whose files cannot be written now; their points stay in the
/// log). Returns the number of points dropped because their files are
/// unusable.
pub fn run(store: Arc<Store>, stop: Arc<AtomicBool>) -> u64 {
    let cfg = &store.config;
    let limits = Arc::new(Limits {
        updates: Mutex::new(Bucket::new(
            cfg.max_updates_per_second,
            Duration::from_secs(1),
        )),
        creates: Mutex::new(Bucket::new(
            cfg.max_creates_per_minute,
            Duration::from_secs(60),
        )),
    });
    let parts = cfg.writers.max(1);
    let mut others = Vec::new();
    // Parts no thread could be started for are drained by this thread.
    let mut mine = vec![0];
    for part in 1..parts {
        let (store, stop, limits) = (store.clone(), stop.clone(), limits.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("graunt-writer-{part}"))
            .spawn(move || drain(&store, &stop, &limits, &[part], parts));
        match spawned {
            Ok(handle) => others.push(handle),
            Err(e) => {
                tracing::error!(error = %e, part, "cannot start a writer thread; its metrics go to the first writer");
                mine.push(part);
            }
        }
    }
    let mut failed = drain(&store, &stop, &limits, &mine, parts);
    for handle in others {
        match handle.join() {
            Ok(n) => failed += n,
            Err(_) => tracing::error!("a writer thread panicked; its points stay in the write-ahead log for the next start"),
        }
    }
    release(&store, true);
    failed
}

/// One writer: the metrics of the `mine` parts of `parts`. The writer of
/// part 0 also releases the write-ahead log every couple of seconds (for
/// every part: `syncfs` covers all of them).
fn drain(store: &Store, stop: &AtomicBool, limits: &Limits, mine: &[usize], parts: usize) -> u64 {
    let mut last_release = Instant::now();
    let mut last_sync = Instant::now();
    let mut failed = 0u64;
    let mut last_error_log: Option<Instant> = None;
    // Metrics whose writes failed with I/O errors during the final drain.
    let mut given_up = std::collections::HashSet::new();
    // Files no log covers (a rebalance's received copies, migrations) are
    // made durable by a full sync at least this often.
    const SYNC_AT_LEAST_EVERY: Duration = Duration::from_secs(30);
    let release_due = |last: &mut Instant, synced: &mut Instant| {
        if mine.contains(&0) && last.elapsed() > Duration::from_secs(2) {
            if release(store, synced.elapsed() > SYNC_AT_LEAST_EVERY) {
                *synced = Instant::now();
            }
            *last = Instant::now();
        }
    };
    loop {
        let draining = stop.load(Ordering::Relaxed);
        release_due(&mut last_release, &mut last_sync);
        let order = store.cache.order_by_size_in(mine, parts);
        if order.iter().all(|n| given_up.contains(n)) {
            if draining {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut progressed = false;
        for name in order {
            if given_up.contains(&name) {
                continue;
            }
            // A metric waiting for a create token must not spend an update
            // token, or new metrics would starve the existing ones.
            if !draining && !limits.creates().available() && !store.path_of(&name).exists() {
                continue;
            }
            // Wait for the update budget in short naps, so a stop is seen at once.
            while !stop.load(Ordering::Relaxed) && !limits.updates().try_take() {
                let wait = limits.updates().wait();
                std::thread::sleep(wait.min(Duration::from_millis(20)));
            }
            let Some(checkout) = store.cache.checkout(&name) else {
                continue;
            };
            match write(
                store,
                &checkout,
                limits,
                draining || stop.load(Ordering::Relaxed),
            ) {
                Ok(Outcome::Written) => {
                    complete(store, &checkout);
                    progressed = true;
                }
                Ok(Outcome::CreateLimited) => store.cache.requeue(&name),
                // The disk, not the data: keep the points (and so their log
                // segment) and try again later; at shutdown leave them to the
                // log, which replays them on the next start.
                Err(e @ WhisperError::Io { .. }) => {
                    store.cache.requeue(&name);
                    store.stats.errors.fetch_add(1, Ordering::Relaxed);
                    if draining {
                        given_up.insert(name.clone());
                    }
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::error!(metric = %name, error = %e, "whisper write failed; points kept for a retry");
                        last_error_log = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                // The file itself is unusable (corrupt, foreign): these points cannot land.
                Err(e) => {
                    complete(store, &checkout);
                    store.stats.errors.fetch_add(1, Ordering::Relaxed);
                    failed += checkout.points.len() as u64;
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::error!(metric = %name, error = %e, points = checkout.points.len(), "whisper write failed; points dropped");
                        last_error_log = Some(Instant::now());
                    }
                }
            }
            release_due(&mut last_release, &mut last_sync);
        }
        if !progressed && !draining {
            // Everything waiting is create-limited: let the bucket refill.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    failed
}

/// Deletes the log segments whose points are all in whisper, after forcing
/// the whisper writes to disk: a segment is the only copy until then.
/// Without a segment to delete, syncs only when `force`d; returns whether
/// it synced.
fn release(store: &Store, force: bool) -> bool {
    // Read before scanning the cache; see `Wal::release`.
    let current = store.wal.current_id();
    let keep_from = store.cache.oldest_segment().unwrap_or(current).min(current);
    // Nothing to delete, nothing to force: the kernel writes the pages back
    // on its own schedule, where a page written every 10 s is written to
    // disk once per expiry instead of at every sync (a `syncfs` every 2 s
    // wrote each whisper page at every update: 143 MB/s for 20,000 points/s
    // over a 3-node cluster).
    match store.wal.oldest_id() {
        Ok(Some(oldest)) if oldest < keep_from => {}
        Ok(_) if force => {}
        Ok(_) => return false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list write-ahead log segments; keeping them");
            return false;
        }
    }
    // The tag index names the hashed files: durable before the log that
    // could rebuild it goes.
    let result = sync_filesystem(store.whisper_dir())
        .and_then(|_| store.tags.sync())
        .and_then(|_| store.wal.sync())
        .and_then(|_| store.wal.release(keep_from));
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot release write-ahead log segments; keeping them");
        return false;
    }
    true
}

/// `syncfs` on the filesystem holding `dir`: every whisper file written since
/// the last call reaches the disk before the log that covers it is deleted.
fn sync_filesystem(dir: &std::path::Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let handle = std::fs::File::open(dir)?;
    // SAFETY: syncfs takes any open descriptor and has no memory effects.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

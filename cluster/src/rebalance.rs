//! Keeping every series on exactly its owners ([`Rebalancer`]). After a
//! membership change each member pushes the local series whose owners under
//! the new ring include members that were not owners before, and a series
//! it no longer owns to every new owner, deleting its copy once each has
//! taken it (rebalance). On demand (`graunt cluster repair`) and in the background it
//! pushes the series it owns to their other owners (repair). A member that
//! receives a copy fills the empty slots of its own file with it and keeps
//! every point it has ([`receive`], whisper's `fill` without its gaps rule).
//!
//! Progress is on disk (`<data>/rebalance.json`: the ring last balanced to,
//! the ring being balanced to and the last series done), so a member
//! restarted mid-way carries on; pushes are throttled to a byte rate.
//!
//! ```text
//! membership change ─▶ plan (local series × old and new owners) ─▶ POST /cluster/series ─▶ peer: fill_missing
//!                                                                  └─ all new owners took it ─▶ delete (not an owner)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graunt_storage::store::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::member::ClusterNode;
use crate::state::{ClusterState, Member, RingSettings};

/// How long a rebalance waits before looking again for points that came
/// after their series moved (relays follow the cluster every half second
/// by default).
const SETTLE: Duration = Duration::from_secs(2);

/// Series pushed at once.
const IN_FLIGHT: usize = 8;

/// How a member moves and repairs series.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bytes per second pushed by a rebalance, 0 for no limit.
    pub bytes_per_second: u64,
    /// Delete a series this member no longer owns once its new owners took it.
    pub delete: bool,
    /// Bytes per second pushed by a background repair, 0 for no limit.
    pub repair_bytes_per_second: u64,
    /// Between background repairs; none: only on demand.
    pub repair_interval: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bytes_per_second: 50 << 20,
            delete: true,
            repair_bytes_per_second: 1 << 20,
            repair_interval: None,
        }
    }
}

/// The members and ring settings series are placed by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RingView {
    members: BTreeMap<u64, Member>,
    ring: RingSettings,
}

impl RingView {
    fn of(state: &ClusterState) -> RingView {
        RingView {
            members: state.members.clone(),
            ring: state.ring.clone(),
        }
    }

    /// The ring over the members that take series (not the draining ones).
    fn ring(&self) -> Option<(crate::hashing::Ring, Vec<Member>)> {
        let state = ClusterState {
            members: self.members.clone(),
            ring: self.ring.clone(),
            ..Default::default()
        };
        crate::ring::of_members(&state)
    }
}

/// The owners of `name` under `ring`, by id.
fn owners(ring: &Option<(crate::hashing::Ring, Vec<Member>)>, name: &str) -> BTreeSet<u64> {
    match ring {
        Some((ring, members)) => ring
            .route(name)
            .into_iter()
            .map(|i| members[i].id)
            .collect(),
        None => BTreeSet::new(),
    }
}

/// What is on disk between passes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    /// The ring the local series were last all placed by.
    balanced: Option<RingView>,
    /// The ring a pass under way places them by.
    target: Option<RingView>,
    /// The last series (in name order) that pass finished.
    cursor: Option<String>,
    /// The cluster's `schemas_applied` the local files were last resized to.
    #[serde(default)]
    resized: u64,
}

/// What a member's rebalance and repair are doing, for `graunt cluster
/// rebalance status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// The member.
    pub node: u64,
    /// `idle`, `rebalance` or `repair`.
    pub job: String,
    /// Series left in the pass under way.
    pub pending_series: u64,
    /// Their bytes.
    pub pending_bytes: u64,
    /// Series pushed to every owner that needed them, since start.
    pub moved_series: u64,
    /// Bytes pushed, since start.
    pub moved_bytes: u64,
    /// Series that could not be pushed to some owner (tried again later), since start.
    pub failed_series: u64,
    /// Local copies deleted once their new owners took them, since start.
    pub deleted_series: u64,
    /// Repair passes finished, since start.
    pub repairs_done: u64,
    /// Rebalance passes finished, since start.
    pub rebalances_done: u64,
    /// Files resized to new schemas (`--apply-to-existing`), since start.
    pub resized_series: u64,
    /// The cluster's schema applications the local files are resized to.
    pub schemas_applied: u64,
    /// Whether the local series are placed by the current ring.
    pub balanced: bool,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// One series of a pass: where it goes and whether the local copy goes after.
#[derive(Debug)]
struct Item {
    name: String,
    /// Who gets the file: new owners, and owners that lack it.
    targets: Vec<Member>,
    /// Every owner but this member: where the cached points of a copy
    /// being deleted go.
    owners: Vec<Member>,
    delete: bool,
    bytes: u64,
}

/// How a pass ended.
enum Outcome {
    Done,
    /// Some series could not be pushed: tried again later.
    Failed,
    /// The membership changed: plan again.
    Changed,
    Shutdown,
}

/// A member's rebalance and repair; see the module docs.
pub struct Rebalancer {
    node: Arc<ClusterNode>,
    store: Arc<Store>,
    settings: Settings,
    path: PathBuf,
    status: Mutex<Status>,
    repair_wanted: Mutex<Option<String>>,
    repair: Notify,
}

impl Rebalancer {
    /// A rebalancer for `node` over `store`, its progress in `store`'s data
    /// directory.
    pub fn new(node: Arc<ClusterNode>, store: Arc<Store>, settings: Settings) -> Arc<Rebalancer> {
        let path = store.config.data_dir.join("rebalance.json");
        let id = node.me.id;
        Arc::new(Rebalancer {
            node,
            store,
            settings,
            path,
            status: Mutex::new(Status {
                node: id,
                job: "idle".into(),
                ..Default::default()
            }),
            repair_wanted: Mutex::new(None),
            repair: Notify::new(),
        })
    }

    /// What it is doing.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Asks for a repair of the series under `prefix` (all when empty):
    /// each owned series is pushed to its other owners. Answers the repairs
    /// finished so far; the asked one is done when that number grows.
    pub fn request_repair(&self, prefix: String) -> u64 {
        *self.repair_wanted.lock().unwrap_or_else(|e| e.into_inner()) = Some(prefix);
        self.repair.notify_one();
        self.status().repairs_done
    }

    fn load(&self) -> Progress {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, progress: &Progress) {
        let tmp = self.path.with_extension("json.tmp");
        let written = serde_json::to_vec(progress)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, "cannot save the rebalance progress; a restart would plan again");
        }
    }

    /// Keeps the local series on their owners until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut changes = self.node.state.subscribe();
        let mut progress = self.load();
        let mut next_repair = self.settings.repair_interval.map(|i| Instant::now() + i);
        loop {
            let state = changes.borrow_and_update().clone();
            if state.members.contains_key(&self.node.me.id) {
                let target = RingView::of(&state);
                match progress.balanced.clone() {
                    // A first look: series are where this ring puts them
                    // (a new member has none; an upgraded one took them as
                    // relays sent them).
                    None => {
                        progress.balanced = Some(target);
                        self.save(&progress);
                    }
                    Some(old) if old != target => {
                        if progress.target.as_ref() != Some(&target) {
                            progress.target = Some(target.clone());
                            progress.cursor = None;
                            self.save(&progress);
                        }
                        tracing::info!(from = ?old.members.keys().collect::<Vec<_>>(), to = ?target.members.keys().collect::<Vec<_>>(), "membership changed: moving series to their new owners");
                        self.update(|s| {
                            s.job = "rebalance".into();
                            s.balanced = false;
                        });
                        let mut settling = 0;
                        let outcome = loop {
                            // A settling pass looks only for what owners
                            // lack (the new ones got everything already).
                            let from = if settling == 0 { &old } else { &target };
                            let (outcome, moved) = self
                                .pass(
                                    Some(from),
                                    &target,
                                    None,
                                    &mut progress,
                                    &mut changes,
                                    &mut shutdown,
                                )
                                .await;
                            // Points relays sent here before they saw the
                            // new ring may have come after their series
                            // moved: a second look once they have.
                            if matches!(outcome, Outcome::Done) && moved > 0 && settling < 2 {
                                settling += 1;
                                progress.cursor = None;
                                tokio::select! {
                                    _ = tokio::time::sleep(SETTLE) => {}
                                    _ = &mut shutdown => return,
                                }
                                continue;
                            }
                            break outcome;
                        };
                        self.update(|s| s.job = "idle".into());
                        match outcome {
                            Outcome::Done => {
                                progress.balanced = Some(target);
                                progress.target = None;
                                progress.cursor = None;
                                self.save(&progress);
                                self.update(|s| s.rebalances_done += 1);
                                tracing::info!("rebalance done");
                            }
                            Outcome::Changed => continue,
                            Outcome::Shutdown => return,
                            Outcome::Failed => {
                                // Everything again, from the start: pushes are
                                // idempotent, and a peer back up takes them.
                                progress.cursor = None;
                                self.save(&progress);
                                tokio::select! {
                                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                                    _ = &mut shutdown => return,
                                }
                                continue;
                            }
                        }
                    }
                    Some(_) => {}
                }
                self.update(|s| {
                    s.balanced = true;
                    s.pending_series = 0;
                    s.pending_bytes = 0;
                });
                if state.schemas_applied > progress.resized {
                    self.update(|s| s.job = "resize".into());
                    let outcome = self.resize(&state, &mut changes, &mut shutdown).await;
                    self.update(|s| {
                        s.job = "idle".into();
                        s.pending_series = 0;
                        s.pending_bytes = 0;
                    });
                    match outcome {
                        Outcome::Done => {
                            progress.resized = state.schemas_applied;
                            self.save(&progress);
                            tracing::info!("existing files resized to the cluster's schemas");
                        }
                        Outcome::Shutdown => return,
                        Outcome::Changed => continue,
                        Outcome::Failed => {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                                _ = &mut shutdown => return,
                            }
                            continue;
                        }
                    }
                }
                self.update(|s| s.schemas_applied = progress.resized);
            }
            let repair_at = next_repair.map(tokio::time::Instant::from_std);
            let prefix = tokio::select! {
                r = changes.changed() => {
                    if r.is_err() {
                        return;
                    }
                    continue;
                }
                _ = self.repair.notified() => self
                    .repair_wanted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_default(),
                _ = async { tokio::time::sleep_until(repair_at.unwrap_or_else(tokio::time::Instant::now)).await }, if repair_at.is_some() => {
                    next_repair = self.settings.repair_interval.map(|i| Instant::now() + i);
                    String::new()
                }
                _ = &mut shutdown => return,
            };
            let state = changes.borrow().clone();
            let target = RingView::of(&state);
            if progress.balanced.as_ref() != Some(&target) {
                // A rebalance first; the repair is asked again after it.
                self.repair_wanted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(prefix);
                self.repair.notify_one();
                continue;
            }
            self.update(|s| s.job = "repair".into());
            let mut scratch = Progress::default();
            let (outcome, _) = self
                .pass(
                    None,
                    &target,
                    Some(&prefix),
                    &mut scratch,
                    &mut changes,
                    &mut shutdown,
                )
                .await;
            self.update(|s| {
                s.job = "idle".into();
                s.pending_series = 0;
                s.pending_bytes = 0;
            });
            match outcome {
                Outcome::Shutdown => return,
                Outcome::Done | Outcome::Failed => {
                    self.update(|s| s.repairs_done += 1);
                    tracing::info!(prefix, "repair done");
                }
                Outcome::Changed => {}
            }
        }
    }

    async fn pass(
        &self,
        old: Option<&RingView>,
        new: &RingView,
        prefix: Option<&str>,
        progress: &mut Progress,
        changes: &mut tokio::sync::watch::Receiver<ClusterState>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> (Outcome, u64) {
        if new.ring().is_none() {
            tracing::error!("the cluster's members do not make a ring (a pickle address that does not parse?): no series moved or deleted");
            return (Outcome::Failed, 0);
        }
        if let Some(after) = &progress.cursor {
            tracing::info!(after = %after, "carrying on with the rebalance a restart interrupted");
        }
        // What each other owner holds now: a rebalance also pushes to an
        // owner that kept its place but lacks a series (one it never got).
        let lists = match old {
            Some(_) => self.lists(new).await,
            None => BTreeMap::new(),
        };
        let plan = {
            let (old, new, prefix, after) = (
                old.cloned(),
                new.clone(),
                prefix.map(String::from),
                progress.cursor.clone(),
            );
            let store = self.store.clone();
            let me = self.node.me.id;
            let delete = self.settings.delete;
            match tokio::task::spawn_blocking(move || {
                plan_for(
                    &store,
                    me,
                    delete,
                    old.as_ref(),
                    &new,
                    &lists,
                    prefix.as_deref(),
                    after.as_deref(),
                )
            })
            .await
            {
                Ok(p) => p,
                Err(_) => return (Outcome::Failed, 0),
            }
        };
        let rate = if old.is_some() {
            self.settings.bytes_per_second
        } else {
            self.settings.repair_bytes_per_second
        };
        self.update(|s| {
            s.pending_series = plan.len() as u64;
            s.pending_bytes = plan.iter().map(|i| i.bytes).sum();
        });
        let mut failed = false;
        let mut moved = 0u64;
        let mut saved = Instant::now();
        let mut plan = plan.into_iter().peekable();
        while plan.peek().is_some() {
            if changes.has_changed().unwrap_or(false) && RingView::of(&changes.borrow()) != *new {
                return (Outcome::Changed, moved);
            }
            let chunk: Vec<Item> = plan.by_ref().take(IN_FLIGHT).collect();
            let started = Instant::now();
            let sent = tokio::select! {
                r = futures_util::future::join_all(chunk.iter().map(|item| self.move_one(item))) => r,
                _ = shutdown.as_mut() => return (Outcome::Shutdown, moved),
            };
            for (item, sent) in chunk.iter().zip(sent) {
                match sent {
                    Ok(bytes) => {
                        moved += u64::from(bytes > 0);
                        self.update(|s| {
                            s.moved_series += u64::from(bytes > 0);
                            s.moved_bytes += bytes;
                            s.deleted_series += u64::from(item.delete);
                        })
                    }
                    Err(e) => {
                        failed = true;
                        tracing::warn!(series = %item.name, error = %e, "cannot move a series; it is tried again later");
                        self.update(|s| {
                            s.failed_series += 1;
                            s.last_error = Some(e);
                        });
                    }
                }
                self.update(|s| {
                    s.pending_series = s.pending_series.saturating_sub(1);
                    s.pending_bytes = s.pending_bytes.saturating_sub(item.bytes);
                });
            }
            if old.is_some() && !failed {
                progress.cursor = chunk.last().map(|i| i.name.clone());
                if saved.elapsed() > Duration::from_millis(200) {
                    self.save(progress);
                    saved = Instant::now();
                }
            }
            // Throttle: these series' bytes at the configured rate.
            if rate > 0 {
                let pushed: u64 = chunk
                    .iter()
                    .map(|i| i.bytes * i.targets.len().max(1) as u64)
                    .sum();
                let due = Duration::from_secs_f64(pushed as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.as_mut() => return (Outcome::Shutdown, moved),
                    }
                }
            }
        }
        let outcome = if failed {
            Outcome::Failed
        } else {
            Outcome::Done
        };
        (outcome, moved)
    }

    /// Resizes every local file whose archives differ from what the
    /// cluster's schemas give it (whisper-resize's migration), at the
    /// rebalance byte rate. The writer is held off each file while it is
    /// replaced (one it is writing now waits for the next round).
    async fn resize(
        &self,
        state: &ClusterState,
        changes: &mut tokio::sync::watch::Receiver<ClusterState>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Outcome {
        let Some(schemas) = state.schemas.as_deref() else {
            return Outcome::Done;
        };
        let schemas = match graunt_storage::schema::Schemas::parse(schemas) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(error = %e, "the cluster's schemas do not parse; existing files are left as they are");
                return Outcome::Done;
            }
        };
        let aggregations = match state
            .aggregation
            .as_deref()
            .map(graunt_storage::schema::Aggregations::parse)
        {
            Some(Ok(a)) => Some(Arc::new(a)),
            Some(Err(e)) => {
                tracing::error!(error = %e, "the cluster's aggregation rules do not parse; existing files are left as they are");
                return Outcome::Done;
            }
            None => None,
        };
        let store = self.store.clone();
        let mut names = match tokio::task::spawn_blocking(move || filed_series(&store)).await {
            Ok(n) => n,
            Err(_) => return Outcome::Failed,
        };
        tracing::info!(
            files = names.len(),
            "resizing existing files to the cluster's schemas"
        );
        for round in 0..10 {
            self.update(|s| s.pending_series = names.len() as u64);
            let mut waiting = Vec::new();
            for chunk in names.chunks(64) {
                if changes.has_changed().unwrap_or(false)
                    && changes.borrow().schemas_applied != state.schemas_applied
                {
                    return Outcome::Changed;
                }
                let started = Instant::now();
                let (store, schemas, aggregations, chunk) = (
                    self.store.clone(),
                    schemas.clone(),
                    aggregations.clone(),
                    chunk.to_vec(),
                );
                let done = tokio::task::spawn_blocking(move || {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    let mut resized = 0u64;
                    let mut bytes = 0u64;
                    let mut waiting = Vec::new();
                    for name in chunk {
                        // The writer is kept off the file while it is
                        // replaced; its points go back to it after.
                        if store.cache.hold(&name).is_none() {
                            waiting.push(name);
                            continue;
                        }
                        let retentions = schemas.matching(&name).retentions.clone();
                        let mut opts = store.rules_for(&name).1;
                        if let Some(a) = &aggregations {
                            let (xff, method) = a.matching(&name);
                            opts.x_files_factor = xff;
                            opts.aggregation = method;
                        }
                        let path = store.path_of(&name);
                        let migrated =
                            graunt_storage::whisper::migrate(&path, &retentions, &opts, now);
                        store.cache.release(&name, true);
                        match migrated {
                            Ok(true) => {
                                resized += 1;
                                bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
                            }
                            Ok(false) => {}
                            Err(e) => tracing::warn!(series = %name, error = %e, "cannot resize a file to the cluster's schemas"),
                        }
                    }
                    (resized, bytes, waiting)
                })
                .await;
                let Ok((resized, bytes, mut later)) = done else {
                    return Outcome::Failed;
                };
                waiting.append(&mut later);
                self.update(|s| {
                    s.resized_series += resized;
                    s.pending_series = s.pending_series.saturating_sub(64);
                });
                let rate = self.settings.bytes_per_second;
                if rate > 0 {
                    let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.as_mut() => return Outcome::Shutdown,
                        }
                    }
                }
            }
            if waiting.is_empty() {
                return Outcome::Done;
            }
            names = waiting;
            tracing::debug!(
                round,
                files = names.len(),
                "files with cached points wait for the writer before they are resized"
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.as_mut() => return Outcome::Shutdown,
            }
        }
        Outcome::Failed
    }

    /// The series every other member of `ring` holds; a member that does
    /// not answer is left out (taken to lack everything).
    async fn lists(&self, ring: &RingView) -> BTreeMap<u64, std::collections::HashSet<String>> {
        let mut out = BTreeMap::new();
        for m in ring
            .members
            .values()
            .filter(|m| m.id != self.node.me.id && !m.draining)
        {
            let url = self.node.transport.url(&m.http, "/cluster/series/list");
            let answer = async {
                let resp = self
                    .node
                    .get(&url)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                resp.json::<Vec<String>>().await.ok()
            }
            .await;
            if let Some(names) = answer {
                out.insert(m.id, names.into_iter().collect());
            }
        }
        out
    }

    /// Pushes one series (its file and its cached points) to its targets,
    /// then deletes the local copy if it is to go and every target took it:
    /// the file, then the points that reached the cache meanwhile, which
    /// follow it. Answers the bytes pushed.
    async fn move_one(&self, item: &Item) -> Result<u64, String> {
        // The writer is kept off the file while it is copied (and deleted):
        // a point it wrote meanwhile would be in neither copy.
        let mut held = None;
        for _ in 0..500 {
            held = self.store.cache.hold(&item.name);
            if held.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let Some(held) = held else {
            return Err(format!("{}: the writer kept it busy for 5 s", item.name));
        };
        // Dropped mid-way (shutdown): the points go back to the writer.
        let mut guard = Held {
            cache: &self.store.cache,
            name: &item.name,
            armed: true,
        };
        let result = self.copy_held(item, held.points).await;
        guard.armed = false;
        match &result {
            // Gone elsewhere: the held points went with the copy.
            Ok(_) if item.delete => self.store.cache.release(&item.name, false),
            _ => self.store.cache.release(&item.name, true),
        }
        if item.delete && result.is_ok() {
            // Points that arrived during the copy follow it.
            if let Some(late) = self.store.cache.checkout(&item.name) {
                let body = encode_copy(&[], &late.points);
                match self.push(&item.name, &item.owners, body).await {
                    Ok(_) => self.store.cache.complete(&item.name),
                    Err(e) => {
                        // Kept: written here again, moved by the next pass.
                        self.store.cache.requeue(&item.name);
                        return Err(e);
                    }
                }
            }
            // The file is gone (or there was none): finds here stop
            // listing it, unless points arrived after the late push (the
            // cache lists those until they are written or moved).
            self.store.forget_file(&self.store.path_of(&item.name));
        }
        result
    }

    /// [`Rebalancer::move_one`] with the writer held off and `cached` the
    /// points it would have written.
    async fn copy_held(&self, item: &Item, cached: Vec<(i64, f64)>) -> Result<u64, String> {
        let path = self.store.path_of(&item.name);
        let file = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        if file.is_empty() && cached.is_empty() {
            return Ok(0);
        }
        let mut pushed = self
            .push(&item.name, &item.targets, encode_copy(&file, &cached))
            .await?;
        if item.delete && !cached.is_empty() {
            // Owners that had the file still need the points only this
            // member took.
            let rest: Vec<Member> = item
                .owners
                .iter()
                .filter(|o| !item.targets.iter().any(|t| t.id == o.id))
                .cloned()
                .collect();
            pushed += self
                .push(&item.name, &rest, encode_copy(&[], &cached))
                .await?;
        }
        if item.delete {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot delete {}: {e}", path.display())),
            }
            // This member no longer holds it: its tag index forgets it.
            if graunt_storage::tags::is_tagged(&item.name) {
                let _ = self.store.tags.del_series(&item.name);
            }
        }
        Ok(pushed)
    }

    /// Sends a copy of `name` to each of `targets`.
    async fn push(&self, name: &str, targets: &[Member], body: Vec<u8>) -> Result<u64, String> {
        let mut pushed = 0;
        for target in targets {
            let mut url =
                reqwest::Url::parse(&self.node.transport.url(&target.http, "/cluster/series"))
                    .map_err(|e| e.to_string())?;
            url.query_pairs_mut().append_pair("name", name);
            let call = crate::secret::signed(
                self.node.client.post(url.as_str()),
                self.node.secret.as_ref(),
                "POST",
                url.as_str(),
                &body,
            )
            .body(body.clone());
            let resp = call
                .send()
                .await
                .map_err(|e| format!("node {} ({}): {e}", target.id, target.http))?;
            if !resp.status().is_success() {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                return Err(format!("node {} answered {status}: {text}", target.id));
            }
            pushed += body.len() as u64;
        }
        Ok(pushed)
    }
}

/// A [`graunt_storage::cache::Cache::hold`] given back if its future is
/// dropped before it ends.
struct Held<'a> {
    cache: &'a graunt_storage::cache::Cache,
    name: &'a str,
    armed: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cache.release(self.name, true);
        }
    }
}

/// A copy of a series as `/cluster/series` takes it: the whisper file's
/// length as a little-endian `u64`, the file (none for a series only in
/// the cache), then its cached points as little-endian `i64` timestamp and
/// `f64` value pairs.
fn encode_copy(file: &[u8], points: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + file.len() + 16 * points.len());
    out.extend_from_slice(&(file.len() as u64).to_le_bytes());
    out.extend_from_slice(file);
    for (ts, v) in points {
        out.extend_from_slice(&ts.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A series' cached points, timestamp and value.
type Points = Vec<(i64, f64)>;

/// The file and points of [`encode_copy`]'s bytes.
fn decode_copy(bytes: &[u8]) -> Option<(&[u8], Points)> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let file = bytes.get(8..8usize.checked_add(len)?)?;
    let rest = &bytes[8 + len..];
    if !rest.len().is_multiple_of(16) {
        return None;
    }
    let points = rest
        .chunks_exact(16)
        .map(|c| {
            let ts = i64::from_le_bytes(c[..8].try_into().unwrap_or_default());
            let v = f64::from_le_bytes(c[8..].try_into().unwrap_or_default());
            (ts, v)
        })
        .collect();
    Some((file, points))
}

/// The series to push: with `old`, those whose owners under `new` include
/// members that were not owners under `old`, and those `me` no longer owns
/// (to delete when `delete`) (a rebalance); without, those under `prefix`
/// `me` owns, to the other owners (a repair). Only names after `after`.
#[allow(clippy::too_many_arguments)]
fn plan_for(
    store: &Store,
    me: u64,
    delete: bool,
    old: Option<&RingView>,
    new: &RingView,
    lists: &BTreeMap<u64, std::collections::HashSet<String>>,
    prefix: Option<&str>,
    after: Option<&str>,
) -> Vec<Item> {
    let old_ring = old.map(RingView::ring);
    let new_ring = new.ring();
    if new_ring.is_none() {
        // No ring (a member's pickle address does not parse): nothing is
        // owned by anyone, and nothing may be deleted.
        return Vec::new();
    }
    let names = held_series(store);
    let mut plan = Vec::new();
    for name in names {
        if after.is_some_and(|a| name.as_str() <= a) {
            continue;
        }
        if prefix.is_some_and(|p| !name.starts_with(p)) {
            continue;
        }
        let now = owners(&new_ring, &name);
        if now.is_empty() {
            continue;
        }
        let (targets, delete): (BTreeSet<u64>, bool) = match &old_ring {
            // New owners get it, and so does an owner that kept its place
            // but lacks it (the ring gave it the series, yet only this
            // member took its points).
            Some(old_ring) => {
                let before = owners(old_ring, &name);
                let lacks = |id: &u64| lists.get(id).is_none_or(|l| !l.contains(&name));
                // One pusher per new owner: the old owner that leaves the
                // owner set (it must push before it deletes); an old owner
                // that stays pushes only when no leaver holds the series.
                let leaver = before.iter().any(|&d| {
                    d != me && !now.contains(&d) && lists.get(&d).is_some_and(|l| l.contains(&name))
                });
                let staying = now.contains(&me) && before.contains(&me);
                let deleting = !now.contains(&me) && delete;
                let targets = now
                    .iter()
                    .copied()
                    .filter(|&id| id != me)
                    .filter(|id| {
                        if deleting && before == now {
                            // A copy here that the ring did not move (late
                            // points, a stale peer's push): every owner gets
                            // it before it goes.
                            true
                        } else if before.contains(id) {
                            lacks(id)
                        } else {
                            !(staying && leaver)
                        }
                    })
                    .collect();
                (targets, deleting)
            }
            None if now.contains(&me) => {
                (now.iter().copied().filter(|&id| id != me).collect(), false)
            }
            None => continue,
        };
        if targets.is_empty() && !delete {
            continue;
        }
        let bytes = std::fs::metadata(store.path_of(&name)).map_or(0, |m| m.len());
        let members = |ids: &mut dyn Iterator<Item = &u64>| -> Vec<Member> {
            ids.filter_map(|id| new.members.get(id).cloned()).collect()
        };
        plan.push(Item {
            targets: members(&mut targets.iter()),
            owners: members(&mut now.iter().filter(|&&id| id != me)),
            name,
            delete,
            bytes,
        });
    }
    plan
}

/// Every series a store has a file for: the tree's, and the tagged ones
/// (whose files are named by a hash) from the tag index.
pub fn filed_series(store: &Store) -> Vec<String> {
    let mut names = local_series(store.whisper_dir());
    names.extend(
        store
            .tags
            .all_series()
            .into_iter()
            .filter(|n| store.path_of(n).exists()),
    );
    names
}

/// Every series a store holds, in a file or only in its cache, sorted.
pub fn held_series(store: &Store) -> Vec<String> {
    let mut names = filed_series(store);
    names.extend(store.cache.names());
    names.sort_unstable();
    names.dedup();
    names
}

/// Every untagged series with a file under `root`, by name (`_tagged/`
/// holds files named by hash: their names are the tag index's).
pub fn local_series(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        if prefix == "_tagged." {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push((entry.path(), format!("{prefix}{name}.")));
            } else if let Some(stem) = name.strip_suffix(".wsp") {
                out.push(format!("{prefix}{stem}"));
            }
        }
    }
    out
}

/// Takes a copy of `name` a peer sent ([`encode_copy`]): its file as a new
/// file here, or its points in the empty slots of the file here; then its
/// cached points through the store (log and cache, as if received). Answers
/// the slots filled (a whole new file counts as one) plus the points.
pub fn receive(store: &Store, name: &str, bytes: &[u8]) -> Result<u64, String> {
    graunt_storage::metric::validate_name(name).map_err(|e| format!("series {name:?}: {e}"))?;
    if graunt_storage::tags::is_tagged(name) {
        store.tags.ensure(name);
    }
    let (file, points) = decode_copy(bytes)
        .ok_or_else(|| format!("series {name:?}: not a copy of a series (a file length, the file, then 16-byte points)"))?;
    let mut taken = 0;
    if !file.is_empty() {
        taken += receive_file(store, name, file)?;
    }
    if !points.is_empty() {
        let datapoints: Vec<graunt_storage::Datapoint> = points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|&(timestamp, value)| graunt_storage::Datapoint {
                name: name.to_string(),
                timestamp,
                value,
            })
            .collect();
        store
            .accept(&datapoints)
            .map_err(|e| format!("series {name:?}: cannot take its points: {e}"))?;
        taken += datapoints.len() as u64;
    }
    Ok(taken)
}

fn receive_file(store: &Store, name: &str, bytes: &[u8]) -> Result<u64, String> {
    let path = store.path_of(name);
    let dir = path.parent().ok_or("a series path has a folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.incoming-{}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        fastrand::u64(..)
    ));
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let result = (|| {
        graunt_storage::whisper::WhisperFile::open(&tmp)
            .map_err(|e| format!("series {name:?}: not a whisper file: {e}"))?;
        // A new file is linked into place only if none appeared meanwhile
        // (the writer may have created it from the cache).
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => {
                store.note_file(&path);
                return Ok(1);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        graunt_storage::whisper::fill_missing(&tmp, &path, now)
            .map_err(|e| format!("cannot fill {}: {e}", path.display()))
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_round_trip() {
        let bytes = encode_copy(b"whisper", &[(1, 2.5), (3, -4.0)]);
        let (file, points) = decode_copy(&bytes).unwrap();
        assert_eq!(file, b"whisper");
        assert_eq!(points, vec![(1, 2.5), (3, -4.0)]);
        let bytes = encode_copy(&[], &[(7, 1.0)]);
        assert_eq!(decode_copy(&bytes).unwrap().0, b"");
        assert!(decode_copy(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_copy(b"\xff\xff\xff\xff\xff\xff\xff\xff").is_none());
    }
}

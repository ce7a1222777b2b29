//! Reads for the whole cluster: a [`Source`] that asks this node's store
//! and every peer (their `/cluster/find` and `/cluster/fetch`, local data
//! only) in parallel, merges the copies of each series (a slot missing on
//! one replica is filled from another, never added twice), and leaves the
//! functions to run once over the merged series. An aggregation that folds
//! (alone or as each group of a `groupByNode`) is asked of each member as
//! a fold (`/cluster/folds`, [`crate::fold`]) and combined here when every
//! member could fold exactly. A peer that fails or
//! misses the timeout is named in [`ClusterSource::partial`]; the answer
//! is what the others had. [`ClusterSources`] opens one per request for
//! the web layer, which never names the cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use graunt_query::eval::{EvalError, Source};
use graunt_query::fold::{Fetched, Fold, Folded};
use graunt_query::series::Series;
use graunt_query::source::{Sources, StoreSource};
use graunt_storage::find;
use graunt_storage::store::Store;
use graunt_storage::tagindex::{TagAnswer, TagQuery};
use serde_json::json;

use crate::fold::Answer;
use crate::hashing::Ring;
use crate::member::ClusterNode;
use crate::window::Window;
use crate::wire::{Reader, Replica, SeriesReader};
use crate::Member;

/// The sources of a cluster member's requests: the whole cluster, or its
/// own store for `local=1`.
pub struct ClusterSources {
    /// The member.
    pub node: Arc<ClusterNode>,
    /// Its store.
    pub store: Arc<Store>,
    /// Runs the calls to peers (sources are used on blocking threads).
    pub handle: tokio::runtime::Handle,
}

impl Sources for ClusterSources {
    fn open(&self, local: bool) -> Box<dyn Source + Send> {
        let own = StoreSource(self.store.clone());
        if local {
            return Box::new(own);
        }
        let state = self.handle.block_on(self.node.state.state());
        Box::new(ClusterSource::new(
            own,
            &self.node,
            &state,
            self.handle.clone(),
        ))
    }

    fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

/// One request's view of the cluster.
pub struct ClusterSource {
    local: StoreSource,
    peers: Vec<Member>,
    ring: Option<(Ring, Vec<Member>)>,
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    /// This member's id.
    me: u64,
    /// Which members (this one included) reported each path in a find, so
    /// a fetch asks one of them.
    holders: Mutex<HashMap<String, BTreeSet<u64>>>,
    /// Peers that did not answer in time, with why.
    partial: Mutex<BTreeMap<String, String>>,
    metrics: Arc<crate::metrics::ClusterMetrics>,
    secret: Option<crate::secret::ClusterSecret>,
    transport: crate::transport::Transport,
    /// The part of every range this source reads, when it reads a part of
    /// a fold split by time ([`crate::slots`]): this member's own copies
    /// first, only the part's slots from anyone.
    part: Option<Window>,
    /// The member's peers of an earlier version.
    older_peers: OlderPeers,
}

/// Peers seen to be of an earlier version, by id, with when (shared by a
/// member's requests).
pub(crate) type OlderPeers = Arc<Mutex<HashMap<u64, std::time::Instant>>>;

/// How long a peer seen to be of an earlier version is taken to still be
/// (a rolling upgrade replaces it meanwhile).
const OLDER_PEER_MEMORY: Duration = Duration::from_secs(300);

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

impl ClusterSource {
    /// A source over `local` and the `peers` (this node's view of the
    /// state); `handle` runs the HTTP calls (callers are blocking threads).
    pub fn new(
        local: StoreSource,
        node: &ClusterNode,
        state: &crate::ClusterState,
        handle: tokio::runtime::Handle,
    ) -> ClusterSource {
        ClusterSource {
            local,
            peers: state
                .members
                .values()
                .filter(|m| m.id != node.me.id)
                .cloned()
                .collect(),
            ring: crate::ring::of_members(state),
            client: node.client.clone(),
            handle,
            timeout: node.peer_timeout,
            me: node.me.id,
            holders: Mutex::new(HashMap::new()),
            partial: Mutex::new(BTreeMap::new()),
            metrics: node.metrics.clone(),
            secret: node.secret.clone(),
            transport: node.transport.clone(),
            part: None,
            older_peers: node.older_peers.clone(),
        }
    }

    /// The same view of the cluster reading only `part` of each range and
    /// preferring this member's copies: the asker's find saw every series
    /// held by its owners, so each is read here when this member owns it
    /// and from its primary otherwise.
    pub fn for_part(&self, part: Window) -> ClusterSource {
        ClusterSource {
            local: StoreSource(self.local.0.clone()),
            peers: self.peers.clone(),
            ring: self.ring.clone(),
            client: self.client.clone(),
            handle: self.handle.clone(),
            timeout: self.timeout,
            me: self.me,
            holders: Mutex::new(HashMap::new()),
            partial: Mutex::new(BTreeMap::new()),
            metrics: self.metrics.clone(),
            secret: self.secret.clone(),
            transport: self.transport.clone(),
            part: Some(part),
            older_peers: self.older_peers.clone(),
        }
    }

    /// The part of the range this source reads, if only a part.
    pub fn part(&self) -> Option<Window> {
        self.part
    }

    /// Whether every peer can fold by parts of the range: none was seen to
    /// be of an earlier version lately.
    fn all_fold_by_parts(&self) -> bool {
        let mut older = self.older_peers.lock().unwrap_or_else(|e| e.into_inner());
        older.retain(|_, seen| seen.elapsed() < OLDER_PEER_MEMORY);
        !self.peers.iter().any(|p| older.contains_key(&p.id))
    }

    /// Whether a peer failed or missed the timeout in a read so far (not
    /// counted as a partial read: the caller may still fall back).
    pub(crate) fn had_failures(&self) -> bool {
        !self
            .partial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The peers holding copies of an exact name, by the ring.
    fn owners(&self, name: &str) -> Option<Vec<&Member>> {
        let owners = self.owner_ids(name)?;
        Some(
            self.peers
                .iter()
                .filter(|p| owners.contains(&p.id))
                .collect(),
        )
    }

    /// The ring's owners of an exact name (this node too), each once, in
    /// the ring's order: the first is the name's primary.
    fn owner_ids(&self, name: &str) -> Option<Vec<u64>> {
        let (ring, members) = self.ring.as_ref()?;
        let mut ids: Vec<u64> = Vec::new();
        for i in ring.route(name) {
            if !ids.contains(&members[i].id) {
                ids.push(members[i].id);
            }
        }
        Some(ids)
    }

    fn note_failure(&self, peer: &Member, why: String) {
        tracing::warn!(peer = %peer.http, %why, "peer left out of a cluster read");
        self.partial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.http.clone(), why);
    }

    /// Calls each peer with its own request, in parallel, each bounded by
    /// the timeout; answers in the peers' order (`None` for a failure).
    fn ask<T: Send + 'static>(
        &self,
        calls: Vec<(&Member, reqwest::RequestBuilder)>,
        parse: fn(&[u8]) -> Option<T>,
    ) -> Vec<Option<T>> {
        let pending = self.start(calls, || Whole::new(parse));
        self.finish(pending)
    }

    /// Sends the calls of [`ClusterSource::ask`] on the runtime and returns
    /// at once, so the caller can work meanwhile.
    fn start<'a, R: Reader>(
        &self,
        calls: Vec<(&'a Member, reqwest::RequestBuilder)>,
        reader: impl Fn() -> R,
    ) -> Pending<'a, R::Answer> {
        let timeout = self.timeout;
        let handles = calls
            .iter()
            .map(|(_, request)| {
                let request = request.try_clone();
                let mut reader = reader();
                self.handle.spawn(async move {
                    let request = request.ok_or("request not clonable")?;
                    let r = tokio::time::timeout(timeout, async {
                        let mut resp = request.send().await.map_err(|e| e.to_string())?;
                        if !resp.status().is_success() {
                            return Err(format!("answered {}", resp.status()));
                        }
                        let unreadable = || "an answer that does not parse".to_string();
                        // Read as it arrives: a large answer is never
                        // gathered into one buffer first.
                        while let Some(piece) = resp.chunk().await.map_err(|e| e.to_string())? {
                            if !reader.feed(&piece) {
                                return Err(unreadable());
                            }
                        }
                        reader.finish().ok_or_else(unreadable)
                    })
                    .await;
                    match r {
                        Ok(v) => v.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    }
                })
            })
            .collect();
        Pending {
            peers: calls.into_iter().map(|(p, _)| p).collect(),
            handles,
        }
    }

    /// Waits for the answers of [`ClusterSource::start`].
    fn finish<T: Send + 'static>(&self, pending: Pending<'_, T>) -> Vec<Option<T>> {
        let peers = pending.peers.clone();
        self.finish_results(pending)
            .into_iter()
            .zip(peers)
            .map(|(r, peer)| r.map_err(|why| self.note_failure(peer, why)).ok())
            .collect()
    }

    /// The answers of [`ClusterSource::start`] with why each failed one
    /// failed, counted but not yet noted as partial.
    fn finish_results<T: Send + 'static>(&self, pending: Pending<'_, T>) -> Vec<Result<T, String>> {
        if pending.handles.is_empty() {
            return Vec::new();
        }
        let handles = pending.handles;
        let results = self.handle.block_on(async move {
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap_or_else(|e| Err(e.to_string())));
            }
            out
        });
        results
            .into_iter()
            .zip(pending.peers)
            .map(|(r, peer)| {
                let outcome = if r.is_ok() { "ok" } else { "failed" };
                self.metrics
                    .peer_calls
                    .with_label_values(&[&peer.http, outcome])
                    .inc();
                r
            })
            .collect()
    }

    /// Asks each peer for its own copies of the paths `per_peer` names for
    /// it, in parallel, without waiting ([`ClusterSource::finish`] does; a
    /// peer that fails is noted as partial).
    fn start_fetch(
        &self,
        per_peer: &BTreeMap<u64, Vec<String>>,
        windows: &HashMap<String, Window>,
        (from, until, now): (i64, i64, i64),
    ) -> Pending<'_, Vec<Replica>> {
        let calls = self.path_calls("/cluster/fetch", per_peer, |paths: &Vec<String>| {
            let mut body = json!({ "paths": paths, "from": from, "until": until, "now": now });
            if !windows.is_empty() || self.part.is_some() {
                let wanted: Vec<Option<Window>> =
                    paths.iter().map(|p| self.window_of(p, windows)).collect();
                body["windows"] = json!(wanted);
            }
            body
        });
        self.start(calls, SeriesReader::default)
    }

    /// The slots of `path` to read: those its copies lack, or this
    /// source's part, or (`None`) the whole range.
    fn window_of(&self, path: &str, windows: &HashMap<String, Window>) -> Option<Window> {
        windows.get(path).copied().or(self.part)
    }

    /// A signed POST of `body(paths)` to `endpoint` of each peer that
    /// `per_peer` names paths for.
    fn path_calls<T>(
        &self,
        endpoint: &str,
        per_peer: &BTreeMap<u64, T>,
        body: impl Fn(&T) -> serde_json::Value,
    ) -> Vec<(&Member, reqwest::RequestBuilder)> {
        self.peers
            .iter()
            .filter_map(|p| {
                let paths = per_peer.get(&p.id)?;
                let url = self.transport.url(&p.http, endpoint);
                let r = crate::secret::json_call(
                    &self.client,
                    self.secret.as_ref(),
                    "POST",
                    &url,
                    &body(paths),
                );
                Some((p, r))
            })
            .collect()
    }

    /// One round of a fetch: each member (this one too) asked for the paths
    /// `per_member` names for it, the peers while this node reads its own;
    /// the copies found go into `copies`.
    fn fetch_round(
        &self,
        per_member: &BTreeMap<u64, Vec<String>>,
        range: (i64, i64, i64),
        copies: &mut HashMap<String, Vec<Replica>>,
    ) -> Result<(), EvalError> {
        self.fetch_round_of(per_member, &HashMap::new(), range, copies)
    }

    /// [`ClusterSource::fetch_round`], every member reading only the slots
    /// in `windows` of the paths it names (or the source's part).
    fn fetch_round_of(
        &self,
        per_member: &BTreeMap<u64, Vec<String>>,
        windows: &HashMap<String, Window>,
        (from, until, now): (i64, i64, i64),
        copies: &mut HashMap<String, Vec<Replica>>,
    ) -> Result<(), EvalError> {
        if per_member.is_empty() {
            return Ok(());
        }
        let pending = self.start_fetch(per_member, windows, (from, until, now));
        if let Some(mine) = per_member.get(&self.me) {
            let wanted: Vec<Option<Window>> =
                mine.iter().map(|p| self.window_of(p, windows)).collect();
            for s in self
                .local
                .fetch_windows(mine, (from, until, now), &wanted)?
                .into_iter()
                .flatten()
            {
                let r = self.judged(Replica::of(s), (from, until));
                copies.entry(r.series.name.clone()).or_default().push(r);
            }
        }
        for r in self.finish(pending).into_iter().flatten().flatten() {
            let r = self.judged(r, (from, until));
            copies.entry(r.series.name.clone()).or_default().push(r);
        }
        Ok(())
    }

    /// A copy of a part of the range ([`ClusterSource::for_part`]) is whole
    /// only if it also has the first slot that starts in the part (unless
    /// the part starts the range: a younger series) and its last slot
    /// (unless the part ends the range: the newest slots may not be in
    /// yet), since the range goes on past them. A part without slots is
    /// whole: there is nothing to lack.
    fn judged(&self, mut r: Replica, (from, until): (i64, i64)) -> Replica {
        if let Some((first, end)) = self.part {
            // The read also has the slot that starts before the part.
            let own = crate::window::first_from(&r.series, first);
            let v = &r.series.values;
            let known = |v: Option<&Option<f64>>| v.is_some_and(Option::is_some);
            let lead = first <= from || known(v.get(own));
            let tail = end >= until || known(v.last());
            r.whole = v.len() <= own || (r.whole && lead && tail);
        }
        r
    }

    /// Sends `/cluster/find` to `peers` without waiting.
    fn start_find<'a>(
        &self,
        peers: &[&'a Member],
        pattern: &str,
    ) -> Pending<'a, Vec<(String, bool)>> {
        let calls = peers
            .iter()
            .map(|p| {
                // The query is part of what is signed: the URL is whole
                // before signing.
                let url = reqwest::Url::parse_with_params(
                    &self.transport.url(&p.http, "/cluster/find"),
                    &[("query", pattern)],
                )
                .map_or_else(
                    |_| self.transport.url(&p.http, "/cluster/find"),
                    String::from,
                );
                let r = crate::secret::get(&self.client, self.secret.as_ref(), &url);
                (*p, r)
            })
            .collect();
        self.start(calls, || Whole::new(|b| serde_json::from_slice(b).ok()))
    }

    /// The answers of [`ClusterSource::start_find`] into `nodes`, each
    /// leaf's holder remembered for the fetch.
    fn finish_find(
        &self,
        pending: Pending<'_, Vec<(String, bool)>>,
        nodes: &mut BTreeMap<String, bool>,
    ) {
        let peers: Vec<u64> = pending.peers.iter().map(|p| p.id).collect();
        let answers = self.finish(pending);
        let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        for (peer, answer) in peers.into_iter().zip(answers) {
            for (path, leaf) in answer.into_iter().flatten() {
                if leaf {
                    holders.entry(path.clone()).or_default().insert(peer);
                }
                let e = nodes.entry(path).or_insert(leaf);
                *e |= leaf;
            }
        }
    }
}

fn to_nodes(nodes: BTreeMap<String, bool>) -> Vec<find::Node> {
    nodes
        .into_iter()
        .map(|(path, is_leaf)| find::Node { path, is_leaf })
        .collect()
}

/// One series from several copies: of those spanning the most slots (a
/// second round's copy covers only a window, and must not become the
/// series however full it is), the fullest is the base, and its empty
/// slots take the other copies' values where their slots line up
/// ([`crate::window::fill`]).
fn merge(copies: Vec<Replica>) -> Option<Series> {
    let mut copies: Vec<Series> = copies.into_iter().map(|r| r.series).collect();
    copies.sort_by_key(|s| {
        let known = s.values.iter().filter(|v| v.is_some()).count();
        let span = (s.values.len() as u64).saturating_mul(s.step.max(1) as u64);
        std::cmp::Reverse((span, known))
    });
    let mut it = copies.into_iter();
    let mut base = it.next()?;
    for other in it {
        crate::window::fill(&mut base, &other);
    }
    Some(base)
}

impl Source for ClusterSource {
    /// This node's tag index and every peer's, merged: a series held by
    /// several counts once.
    fn tags(&self, q: &TagQuery) -> Result<TagAnswer, EvalError> {
        let mut answer = self.local.tags(q)?;
        let limit = match q {
            TagQuery::AutoTags { limit, .. } | TagQuery::AutoValues { limit, .. } => Some(*limit),
            _ => None,
        };
        let calls: Vec<(&Member, reqwest::RequestBuilder)> = self
            .peers
            .iter()
            .map(|p| {
                let url = self.transport.url(&p.http, "/cluster/tags");
                let r =
                    crate::secret::json_call(&self.client, self.secret.as_ref(), "POST", &url, q);
                (p, r)
            })
            .collect();
        for theirs in self
            .ask(calls, |b| serde_json::from_slice::<TagAnswer>(b).ok())
            .into_iter()
            .flatten()
        {
            answer = answer.merge(theirs, limit);
        }
        Ok(answer)
    }

    /// Every node matching `pattern` on this node and its peers.
    fn find_nodes(&self, pattern: &str) -> Result<Vec<find::Node>, EvalError> {
        let everyone: Vec<&Member> = self.peers.iter().collect();
        // An exact name is a metric on its owners, or a branch anywhere:
        // the owners first, everyone when they know nothing of it.
        let owners = match (is_glob(pattern), self.owners(pattern)) {
            (false, Some(owners)) => Some(owners),
            _ => None,
        };
        // The peers search while this node does.
        let pending = self.start_find(owners.as_deref().unwrap_or(&everyone), pattern);
        let mut nodes: BTreeMap<String, bool> = self
            .local
            .find_nodes(pattern)?
            .into_iter()
            .map(|n| (n.path, n.is_leaf))
            .collect();
        {
            let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
            for (path, _) in nodes.iter().filter(|(_, leaf)| **leaf) {
                holders.entry(path.clone()).or_default().insert(self.me);
            }
        }
        self.finish_find(pending, &mut nodes);
        if owners.is_some() && nodes.is_empty() {
            let pending = self.start_find(&everyone, pattern);
            self.finish_find(pending, &mut nodes);
        }
        Ok(to_nodes(nodes))
    }

    fn partial(&self) -> Vec<(String, String)> {
        let partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        if !partial.is_empty() {
            self.metrics.partial_reads.inc();
        }
        drop(partial);
        self.partial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(peer, why)| (peer.clone(), why.clone()))
            .collect()
    }

    fn fetch(
        &self,
        path: &str,
        from: i64,
        until: i64,
        now: i64,
    ) -> Result<Option<Series>, EvalError> {
        Ok(self
            .fetch_many(&[path.to_string()], from, until, now)?
            .pop()
            .flatten())
    }

    /// Each series from its primary when its holders are its owners, from
    /// all of them otherwise; then,
    /// for a series whose copy came back with a hole (see [`crate::wire::HoleCheck`]) or
    /// not at all, from the other holders and owners, merged.
    fn fetch_many(
        &self,
        paths: &[String],
        from: i64,
        until: i64,
        now: i64,
    ) -> Result<Vec<Option<Series>>, EvalError> {
        let plan = self.plan(paths);
        let range = (from, until, now);
        let mut copies: HashMap<String, Vec<Replica>> = HashMap::new();
        self.fetch_round(&plan.per_member, range, &mut copies)?;
        self.complete(paths, &plan, range, copies)
    }

    /// As [`ClusterSource::fetch_many`], but each member asked folds its
    /// own series of each group ([`crate::fold`]) when it can; a group's
    /// parts are combined when every member folded its share exactly.
    /// Otherwise the group's series that came are kept, the members that
    /// folded their share are asked for its series, and the fetch completes
    /// as [`ClusterSource::fetch_many`] does.
    fn fetch_folds(
        &self,
        fold: Fold,
        groups: &[Vec<String>],
        from: i64,
        until: i64,
        now: i64,
    ) -> Result<Vec<Fetched>, EvalError> {
        let paths: Vec<String> = groups.concat();
        let plan = self.plan(&paths);
        let range = (from, until, now);
        let mut copies: HashMap<String, Vec<Replica>> = HashMap::new();
        if !plan.settled || paths.is_empty() {
            // A rebalance under way: copies must be merged.
            self.fetch_round(&plan.per_member, range, &mut copies)?;
            let series = self.complete(&paths, &plan, range, copies)?;
            return Ok(Fetched::per_group(series, groups.iter().map(Vec::len)));
        }
        let shares = shares(groups, &plan.asked);
        let by_parts = self.all_fold_by_parts();
        let pending = self.start_folds(fold, &shares, range, by_parts);
        let asked: Vec<&Member> = pending.peers.clone();
        let mut answers: Vec<MemberAnswer<'_>> = Vec::new();
        if let Some(share) = shares.get(&self.me) {
            let mine: Vec<Vec<String>> = share.iter().map(|(_, p)| p.clone()).collect();
            let answer = crate::fold::answer_share(fold, &self.local, &mine, range, by_parts)?;
            answers.push((self.me, None, Ok(answer)));
        }
        for (peer, result) in asked.into_iter().zip(self.finish_results(pending)) {
            answers.push((peer.id, Some(peer), result));
        }
        let mut states: Vec<GroupFold> = groups.iter().map(|_| GroupFold::default()).collect();
        for (id, peer, answer) in answers {
            let Some(share) = shares.get(&id) else {
                continue;
            };
            match answer {
                Ok(answers) if answers.len() == share.len() => {
                    for ((g, mine), answer) in share.iter().zip(answers) {
                        states[*g].take(id, mine, answer, &mut copies);
                    }
                }
                // Down or slow: noted as partial; its paths are asked of
                // the other holders when the read completes.
                Err(why) if !why.starts_with("answered ") => {
                    share.iter().for_each(|(g, _)| states[*g].whole = false);
                    if let Some(peer) = peer {
                        self.note_failure(peer, why);
                    }
                }
                // Up but not folding: a member of an older version answers
                // 404; an answer that is not what was asked.
                _ => share
                    .iter()
                    .for_each(|(g, mine)| states[*g].refuse(id, mine)),
            }
        }
        // Groups whose members had their copies whole but fractions to add:
        // folded by parts of the range instead of read as series.
        let inexact: Vec<usize> = (0..groups.len()).filter(|&g| states[g].inexact).collect();
        let mut by_parts: HashMap<usize, Folded> = HashMap::new();
        // Not while a peer is failing: it would be waited for again.
        if !inexact.is_empty() && !self.had_failures() {
            let split: Vec<Vec<String>> = inexact.iter().map(|&g| groups[g].clone()).collect();
            for (g, folded) in inexact.iter().zip(self.fold_parts(fold, &split, range)) {
                if let Some(f) = folded {
                    by_parts.insert(*g, f);
                }
            }
        }
        let mut out: Vec<Option<Fetched>> = Vec::with_capacity(groups.len());
        let mut refetch: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (g, (state, group)) in states.into_iter().zip(groups).enumerate() {
            let (folded, outcome) = match by_parts.remove(&g) {
                Some(f) => (Some(f), "parts"),
                None => {
                    let folded = state
                        .whole
                        .then(|| Folded::combine(fold, state.parts))
                        .flatten()
                        .filter(|f| f.names.len() == group.len());
                    let outcome = if folded.is_some() { "folded" } else { "series" };
                    (folded, outcome)
                }
            };
            self.metrics.folds.with_label_values(&[outcome]).inc();
            if folded.is_none() {
                for (id, paths) in state.folded_by {
                    refetch.entry(id).or_default().extend(paths);
                }
            }
            out.push(folded.map(Fetched::Folded));
        }
        self.fetch_round(&refetch, range, &mut copies)?;
        // The groups that did not fold, completed and merged together.
        let unfolded: Vec<bool> = out.iter().map(Option::is_none).collect();
        let keep: Vec<bool> = groups
            .iter()
            .zip(&unfolded)
            .flat_map(|(g, u)| std::iter::repeat_n(*u, g.len()))
            .collect();
        let (left, plan) = plan.only(&paths, &keep);
        let series = self.complete(&left, &plan, range, copies)?;
        let mut series = Fetched::per_group(
            series,
            groups
                .iter()
                .zip(&unfolded)
                .filter(|(_, u)| **u)
                .map(|(g, _)| g.len()),
        )
        .into_iter();
        Ok(out
            .into_iter()
            .map(|f| {
                f.or_else(|| series.next())
                    .unwrap_or(Fetched::Series(Vec::new()))
            })
            .collect())
    }
}

/// A member's id, the peer when it is not this member, and its answers to
/// a fold of groups.
type MemberAnswer<'a> = (u64, Option<&'a Member>, Result<Vec<Answer>, String>);

/// Each member's share of each group: the paths of the group it is asked
/// for, with the group's index, groups in order. `asked` is the plan's
/// members for each path of the groups in turn.
fn shares(groups: &[Vec<String>], asked: &[Vec<u64>]) -> BTreeMap<u64, Vec<(usize, Vec<String>)>> {
    let mut shares: BTreeMap<u64, Vec<(usize, Vec<String>)>> = BTreeMap::new();
    let paths = groups
        .iter()
        .enumerate()
        .flat_map(|(g, group)| group.iter().map(move |p| (g, p)));
    for ((g, path), ids) in paths.zip(asked) {
        for &id in ids {
            let share = shares.entry(id).or_default();
            match share.last_mut() {
                Some((last, paths)) if *last == g => paths.push(path.clone()),
                _ => share.push((g, vec![path.clone()])),
            }
        }
    }
    shares
}

/// What the members answered for one group of a fold.
struct GroupFold {
    /// Every member folded its share exactly (so far).
    whole: bool,
    /// Their folds.
    parts: Vec<Folded>,
    /// Who folded which paths: asked for their series if the group cannot
    /// be folded after all.
    folded_by: Vec<(u64, Vec<String>)>,
    /// A member had every copy of its share whole but could not fold the
    /// values exactly: the group is folded over parts of its range.
    inexact: bool,
}

impl Default for GroupFold {
    fn default() -> Self {
        GroupFold {
            whole: true,
            parts: Vec::new(),
            folded_by: Vec::new(),
            inexact: false,
        }
    }
}

impl GroupFold {
    /// Takes member `id`'s answer for its share `mine`: a fold of exactly
    /// those paths, or series (kept in `copies`).
    fn take(
        &mut self,
        id: u64,
        mine: &[String],
        answer: Answer,
        copies: &mut HashMap<String, Vec<Replica>>,
    ) {
        match answer {
            Answer::Folded(f) if same_names(&f.names, mine) => {
                self.parts.push(f);
                self.folded_by.push((id, mine.to_vec()));
            }
            Answer::Series(series) => {
                self.whole = false;
                for r in series {
                    copies.entry(r.series.name.clone()).or_default().push(r);
                }
            }
            Answer::Inexact => {
                self.inexact = true;
                self.refuse(id, mine);
            }
            Answer::Folded(_) => self.refuse(id, mine),
        }
    }

    /// Member `id` gave nothing usable for `mine`, though it is up.
    fn refuse(&mut self, id: u64, mine: &[String]) {
        self.whole = false;
        self.folded_by.push((id, mine.to_vec()));
    }
}

/// Whether a fold covers exactly the paths asked of its member.
fn same_names(folded: &[String], asked: &[String]) -> bool {
    let folded: std::collections::HashSet<&String> = folded.iter().collect();
    folded.len() == asked.len() && asked.iter().all(|n| folded.contains(n))
}

/// Which members a fetch asks for which paths.
struct Plan {
    /// Everyone who may hold each path.
    candidates: Vec<Vec<u64>>,
    /// Who is asked first for each path.
    asked: Vec<Vec<u64>>,
    /// The same by member.
    per_member: BTreeMap<u64, Vec<String>>,
    /// Whether every path is held by exactly its owners (no rebalance
    /// under way), so each is asked of its primary alone.
    settled: bool,
}

impl Plan {
    /// The paths (of those planned) that `keep` marks, and their plan.
    fn only(&self, paths: &[String], keep: &[bool]) -> (Vec<String>, Plan) {
        let mut plan = Plan {
            candidates: Vec::new(),
            asked: Vec::new(),
            per_member: BTreeMap::new(),
            settled: self.settled,
        };
        let mut left = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            if !keep.get(i).copied().unwrap_or(false) {
                continue;
            }
            for &id in &self.asked[i] {
                plan.per_member.entry(id).or_default().push(path.clone());
            }
            plan.candidates.push(self.candidates[i].clone());
            plan.asked.push(self.asked[i].clone());
            left.push(path.clone());
        }
        (left, plan)
    }
}

impl ClusterSource {
    fn plan(&self, paths: &[String]) -> Plan {
        let holders = self
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Everyone who may hold each path: those that listed it in find;
        // for a path find did not see, this node, its owners (or everyone).
        let candidates: Vec<Vec<u64>> = paths
            .iter()
            .map(|path| match holders.get(path) {
                Some(h) => h.iter().copied().collect(),
                None => {
                    let mut ids = vec![self.me];
                    match self.owners(path) {
                        Some(o) => ids.extend(o.iter().map(|m| m.id)),
                        None => ids.extend(self.peers.iter().map(|m| m.id)),
                    }
                    ids
                }
            })
            .collect();
        let mut per_member: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut asked: Vec<Vec<u64>> = Vec::with_capacity(paths.len());
        let mut all_settled = true;
        for (path, ids) in paths.iter().zip(&candidates) {
            // The primary alone when the holders are exactly the ring's
            // owners (primaries spread names evenly over the members);
            // every holder while they differ (a rebalance under way: a new
            // owner without the history yet, an old one with late points),
            // where one copy alone could lack what the other has.
            let owners = self.owner_ids(path).unwrap_or_default();
            // A part of a split fold was asked because the asker's find saw
            // every series held by exactly its owners.
            let settled = holders.get(path).map_or(self.part.is_some(), |h| {
                h.len() == owners.len() && owners.iter().all(|o| h.contains(o))
            });
            let chosen = match owners.first() {
                Some(_) if settled && self.part.is_some() && owners.contains(&self.me) => {
                    vec![self.me]
                }
                Some(&primary) if settled => vec![primary],
                _ => {
                    all_settled = false;
                    ids.clone()
                }
            };
            for &id in &chosen {
                per_member.entry(id).or_default().push(path.clone());
            }
            asked.push(chosen);
        }
        Plan {
            candidates,
            asked,
            per_member,
            settled: all_settled,
        }
    }

    /// The second round of a fetch and the merge: a copy with a hole, or a
    /// holder without the copy it listed (a rebalance moved it to its new
    /// owners between find and fetch), sends the path to everyone else who
    /// may have it.
    fn complete(
        &self,
        paths: &[String],
        plan: &Plan,
        range: (i64, i64, i64),
        mut copies: HashMap<String, Vec<Replica>>,
    ) -> Result<Vec<Option<Series>>, EvalError> {
        let mut again: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut windows: HashMap<String, Window> = HashMap::new();
        for ((path, asked), ids) in paths.iter().zip(&plan.asked).zip(&plan.candidates) {
            let got = copies.get(path).map_or(&[][..], Vec::as_slice);
            if got.len() >= asked.len() && got.iter().any(|r| r.whole) {
                continue;
            }
            // Only the span of slots the copies lack; the whole range when
            // a holder sent none.
            let lacking: Option<Vec<Window>> = got
                .iter()
                .map(|r| crate::window::missing(&r.series))
                .collect();
            if let Some(window) = lacking
                .filter(|_| got.len() >= asked.len())
                .and_then(|w| w.into_iter().reduce(crate::window::union))
            {
                windows.insert(path.clone(), window);
            }
            let owners = self.owner_ids(path).unwrap_or_default();
            let others: BTreeSet<u64> = ids
                .iter()
                .chain(&owners)
                .copied()
                .filter(|id| !asked.contains(id))
                .collect();
            for id in others {
                again.entry(id).or_default().push(path.clone());
            }
        }
        self.fetch_round_of(&again, &windows, range, &mut copies)?;
        // A path asked twice gets its copies twice.
        let mut left: HashMap<&str, usize> = HashMap::new();
        for path in paths {
            *left.entry(path).or_default() += 1;
        }
        Ok(paths
            .iter()
            .map(|path| {
                let n = left.entry(path).or_default();
                *n = n.saturating_sub(1);
                merge(if *n == 0 {
                    copies.remove(path).unwrap_or_default()
                } else {
                    copies.get(path).cloned().unwrap_or_default()
                })
            })
            .collect())
    }

    /// Asks each peer to fold its share of each group (`shares`), without
    /// waiting.
    fn start_folds(
        &self,
        fold: Fold,
        shares: &BTreeMap<u64, Vec<(usize, Vec<String>)>>,
        (from, until, now): (i64, i64, i64),
        by_parts: bool,
    ) -> Pending<'_, Vec<Answer>> {
        let calls = self.path_calls("/cluster/folds", shares, |share| {
            let groups: Vec<&Vec<String>> = share.iter().map(|(_, paths)| paths).collect();
            json!({
                "fold": fold.as_str(), "groups": groups,
                "from": from, "until": until, "now": now,
                // Sums of fractions are folded by parts of the range instead.
                "refuse_inexact": by_parts,
            })
        });
        self.start(calls, crate::fold::GroupsReader::default)
    }

    /// Folds each of `groups` by parts of the range ([`crate::slots`]):
    /// every member, this one too, folds all of each group over its part;
    /// `None` for a group whose parts do not all come back folded and
    /// joining (the group is then read as series).
    fn fold_parts(
        &self,
        fold: Fold,
        groups: &[Vec<String>],
        (from, until, now): (i64, i64, i64),
    ) -> Vec<Option<Folded>> {
        let mut ids: Vec<u64> = self.peers.iter().map(|p| p.id).collect();
        ids.push(self.me);
        ids.sort_unstable();
        // Cut where the slots are: none come after `now`.
        let parts = crate::slots::parts(from, until.min(now), ids.len());
        let part_of = |id: u64| parts[ids.iter().position(|&i| i == id).unwrap_or(0)];
        let per_peer: BTreeMap<u64, Window> =
            self.peers.iter().map(|p| (p.id, part_of(p.id))).collect();
        let calls = self.path_calls("/cluster/slots", &per_peer, |part| {
            json!({
                "fold": fold.as_str(), "groups": groups, "part": part,
                "from": from, "until": until, "now": now,
            })
        });
        let pending = self.start(calls, crate::fold::GroupsReader::default);
        let mine = self.for_part(part_of(self.me));
        let mut answers: Vec<(Window, Result<Vec<Answer>, String>)> = vec![(
            part_of(self.me),
            crate::slots::fold_part(&mine, fold, groups, (from, until, now))
                .map_err(|e| e.to_string()),
        )];
        let asked: Vec<u64> = pending.peers.iter().map(|p| p.id).collect();
        for (id, answer) in asked.into_iter().zip(self.finish_results(pending)) {
            if matches!(&answer, Err(why) if why.starts_with("answered 404")) {
                self.older_peers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, std::time::Instant::now());
            }
            answers.push((part_of(id), answer));
        }
        answers.sort_by_key(|(part, _)| *part);
        let folded_part = |answer: &Result<Vec<Answer>, String>, g: usize| match answer {
            Ok(a) if a.len() == groups.len() => match &a[g] {
                Answer::Folded(f) => Some(f.clone()),
                _ => None,
            },
            _ => None,
        };
        (0..groups.len())
            .map(|g| {
                let parts: Option<Vec<Folded>> =
                    answers.iter().map(|(_, a)| folded_part(a, g)).collect();
                Folded::concat(parts?).filter(|f| f.names == groups[g])
            })
            .collect()
    }
}

/// A small answer (JSON of a find or of tags) gathered, then parsed.
struct Whole<T> {
    bytes: Vec<u8>,
    parse: fn(&[u8]) -> Option<T>,
}

impl<T> Whole<T> {
    fn new(parse: fn(&[u8]) -> Option<T>) -> Whole<T> {
        Whole {
            bytes: Vec::new(),
            parse,
        }
    }
}

impl<T: Send + 'static> Reader for Whole<T> {
    type Answer = T;

    fn feed(&mut self, piece: &[u8]) -> bool {
        self.bytes.extend_from_slice(piece);
        true
    }

    fn finish(self) -> Option<T> {
        (self.parse)(&self.bytes)
    }
}

/// Peer calls sent by [`ClusterSource::start`], not yet answered.
struct Pending<'a, T> {
    peers: Vec<&'a Member>,
    handles: Vec<tokio::task::JoinHandle<Result<T, String>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_fill_each_others_gaps_without_adding() {
        let copy = |step, values| Replica::of(Series::new("m", 0, 40, step, values));
        let a = copy(10, vec![Some(1.0), None, Some(3.0), None]);
        let b = copy(10, vec![Some(1.0), Some(2.0), None, None]);
        let m = merge(vec![a, b]).unwrap();
        assert_eq!(m.values, vec![Some(1.0), Some(2.0), Some(3.0), None]);
        let coarse = copy(20, vec![Some(9.0), Some(9.0)]);
        let fine = copy(10, vec![Some(1.0), None, None, None]);
        let m = merge(vec![fine, coarse]).unwrap();
        assert_eq!(m.step, 20, "the fuller copy wins; other steps do not mix");
    }

    #[test]
    fn a_window_of_the_range_never_becomes_the_series() {
        // A copy with most of its slots empty; the other holder sent only
        // the window it lacks, which holds more values than it does.
        let sparse = Series::new("m", 0, 50, 10, vec![Some(1.0), None, None, None, Some(5.0)]);
        let window = Series::new("m", 10, 40, 10, vec![Some(2.0), Some(3.0), Some(4.0)]);
        let m = merge(vec![Replica::of(sparse), Replica::of(window)]).unwrap();
        assert_eq!((m.start, m.end), (0, 50));
        assert_eq!(
            m.values,
            vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0), Some(5.0)]
        );
    }
}

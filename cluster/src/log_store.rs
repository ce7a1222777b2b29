//! The durable raft log: entries as JSON lines in `log.jsonl`, the vote,
//! the committed id and the purge point in small files replaced atomically,
//! everything fsynced before openraft is told it is stored. Cluster changes
//! are rare and small, so the log is also kept in memory and rewritten
//! whole on truncation or purge.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::{NodeId, TypeConfig};

/// The log of one node, under its raft directory.
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    file: File,
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

/// Writes `value` as JSON to `dir/name`, atomically and durably.
pub(crate) fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Reads `dir/name` as JSON, `None` if it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(dir: &Path, name: &str) -> std::io::Result<Option<T>> {
    match fs::read(dir.join(name)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.join(name).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl LogStore {
    /// Opens (or starts) the log in `dir`. A torn last line (a crash while
    /// appending) is dropped: openraft was never told it was stored.
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let path = dir.join("log.jsonl");
        let mut log = BTreeMap::new();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                match serde_json::from_str::<Entry<TypeConfig>>(&line) {
                    Ok(e) => {
                        log.insert(e.log_id.index, e);
                    }
                    Err(_) => break,
                }
            }
        }
        let inner = Inner {
            dir: dir.to_path_buf(),
            last_purged: read_json(dir, "purged.json")?,
            committed: read_json(dir, "committed.json")?,
            vote: read_json(dir, "vote.json")?,
            file: OpenOptions::new().create(true).append(true).open(&path)?,
            log,
        };
        let store = LogStore {
            inner: Arc::new(Mutex::new(inner)),
        };
        Ok(store)
    }
}

impl Inner {
    /// Rewrites the log file from memory (after a truncate or purge).
    fn rewrite(&mut self) -> std::io::Result<()> {
        let tmp = self.dir.join("log.jsonl.tmp");
        let mut f = File::create(&tmp)?;
        for e in self.log.values() {
            let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
            line.push(b'\n');
            f.write_all(&line)?;
        }
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join("log.jsonl"))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(self.dir.join("log.jsonl"))?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        let last = inner
            .log
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        write_json(&inner.dir, "committed.json", &committed).map_err(io_err)?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        write_json(&inner.dir, "vote.json", vote).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>>,
    {
        let mut inner = self.inner.lock().await;
        let mut bytes = Vec::new();
        for e in entries {
            bytes.extend(serde_json::to_vec(&e).map_err(io_err)?);
            bytes.push(b'\n');
            inner.log.insert(e.log_id.index, e);
        }
        let result = inner
            .file
            .write_all(&bytes)
            .and_then(|()| inner.file.sync_data());
        let failed = result.as_ref().err().map(|e| e.to_string());
        callback.log_io_completed(result);
        match failed {
            Some(e) => Err(io_err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner.log.split_off(&log_id.index);
        inner.rewrite().map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        write_json(&inner.dir, "purged.json", &Some(log_id)).map_err(io_err)?;
        inner.last_purged = Some(log_id);
        let keep = inner.log.split_off(&(log_id.index + 1));
        inner.log = keep;
        inner.rewrite().map_err(io_err)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }
}

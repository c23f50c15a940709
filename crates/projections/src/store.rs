use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use eventcore::{decode_event_raw, DomainEvent};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Marks the projection's own bookkeeping keys; table names are ASCII, so they never collide.
const META: u8 = 0xff;
const SEP: u8 = 0x00;

/// A read model fed by events.
pub trait Projection: Send + Sync + 'static {
    /// Unique, `[a-z0-9_]+`: used for the sled tree and the consumer names.
    fn name(&self) -> &'static str;
    /// The version of what [`apply`](Projection::apply) writes. **Change what a projection
    /// writes — a new table, a new field, another key, a fixed bug in a row — and bump its
    /// version**: rows written by the old code stay as they are otherwise, and queries would read
    /// old-shaped rows (or an index that is empty for every event recorded before the change).
    /// On start, a projection whose stored version differs from this one (or that has rows but no
    /// version, written by a build before versions) is cleared and rebuilt from its streams.
    /// There is no default on purpose: each projection says which version its rows are.
    fn version(&self) -> u32;
    /// The service streams it reads.
    fn streams(&self) -> &'static [&'static str];
    /// Records one event. Must be deterministic: the same events give the same tables.
    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError>;
}

/// An event as a projection sees it: its envelope plus where it was stored.
#[derive(Debug, Clone, Copy)]
pub struct RecordedEvent<'a> {
    pub stream: &'a str,
    pub seq: u64,
    pub aggregate_kind: &'a str,
    pub envelope: &'a StoredEvent<'a>,
}

/// The stored envelope of one event (the fields of `eventcore::EventEnvelope`), borrowed from the
/// message it arrived in: replaying millions of events should not copy every string of every
/// envelope.
#[derive(Debug, Deserialize)]
pub struct StoredEvent<'a> {
    pub event_id: Uuid,
    #[serde(borrow)]
    pub aggregate_id: Cow<'a, str>,
    pub aggregate_version: u64,
    #[serde(borrow)]
    pub event_type: Cow<'a, str>,
    pub schema_version: u32,
    #[serde(deserialize_with = "rfc3339")]
    pub occurred_at: DateTime<Utc>,
    #[serde(deserialize_with = "rfc3339")]
    pub recorded_at: DateTime<Utc>,
    #[serde(borrow)]
    pub actor: Cow<'a, str>,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

/// Timestamps are written as RFC 3339: chrono's dedicated parser for it is several times faster
/// than its general `FromStr`, which replays pay for twice per event.
fn rfc3339<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    struct Rfc3339;
    impl serde::de::Visitor<'_> for Rfc3339 {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(Rfc3339)
}

/// A stored commit, borrowed (see [`StoredEvent`]).
#[derive(Debug, Deserialize)]
pub(crate) struct StoredCommitRef<'a> {
    pub format: u32,
    #[serde(borrow)]
    pub aggregate_kind: Cow<'a, str>,
    #[serde(borrow)]
    pub events: Vec<StoredEvent<'a>>,
}

impl RecordedEvent<'_> {
    /// Decodes (and upcasts) the event as `E`. An error stops the projection here.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, ApplyError> {
        let e = self.envelope;
        decode_event_raw(&e.event_type, e.schema_version, e.data).map_err(|err| ApplyError(err.to_string()))
    }
}

/// A projection could not record an event (undecodable, or breaking its own invariants).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("projection store at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("projection store: {0}")]
    Sled(#[from] sled::Error),
    #[error("no projection {0:?}")]
    UnknownProjection(String),
    #[error("corrupt value in projection {tree}: {reason}")]
    Corrupt { tree: String, reason: String },
}

/// The sled database holding every projection of this node, one tree each.
#[derive(Clone)]
pub struct ProjectionStore {
    db: sled::Db,
}

fn tree_name(projection: &str) -> String {
    format!("proj/{projection}")
}

fn table_key(table: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(table.len() + 1 + key.len());
    k.extend_from_slice(table.as_bytes());
    k.push(SEP);
    k.extend_from_slice(key);
    k
}

fn checkpoint_prefix() -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(b"checkpoint");
    k.push(SEP);
    k
}

fn checkpoint_key(stream: &str) -> Vec<u8> {
    let mut k = checkpoint_prefix();
    k.extend_from_slice(stream.as_bytes());
    k
}

/// Where the version of the code that wrote a projection's rows is kept, beside its checkpoints.
fn version_key() -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(b"version");
    k
}

/// What [`ProjectionStore::ensure_version`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionCheck {
    /// The rows were written by this version.
    Current,
    /// Nothing was written yet: the version is recorded, the projection builds from the start.
    Fresh,
    /// The rows were written by another version (`None`: by a build that kept no version); they
    /// are cleared and the projection rebuilds from the start of its streams.
    Rebuild { from: Option<u32> },
}

/// sled's page cache when none is given: sled's own default (1 GiB) is most of what a node
/// would hold, and pages not cached are read back from the OS's page cache cheaply.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl ProjectionStore {
    /// Opens (creating if needed) the store at `path`, with the default page cache. Blocking.
    pub fn open(path: &Path) -> Result<ProjectionStore, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens (creating if needed) the store at `path`; sled keeps up to `cache_bytes` of pages
    /// in memory. Blocking.
    ///
    /// sled's background I/O threads can hold the directory's lock for a moment after the last
    /// handle of a previous opening is dropped, so a lock held elsewhere is retried for up to
    /// two seconds before it is reported (another process really using the directory).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<ProjectionStore, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let config = sled::Config::new().path(path).mode(sled::Mode::HighThroughput).cache_capacity(cache_bytes);
            match config.open() {
                Ok(db) => return Ok(ProjectionStore { db }),
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(source) => return Err(StoreError::Open { path: path.display().to_string(), source }),
            }
        }
    }

    /// A temporary store, removed when dropped (tests, benchmarks).
    pub fn temporary() -> Result<ProjectionStore, StoreError> {
        Ok(ProjectionStore { db: sled::Config::new().temporary(true).open()? })
    }

    fn tree(&self, projection: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(tree_name(projection))?)
    }

    /// Read access to one projection's tables.
    pub fn view(&self, projection: &str) -> Result<View, StoreError> {
        Ok(View { tree: self.tree(projection)?, name: projection.to_owned() })
    }

    /// The last stream sequence the projection has recorded, per stream.
    pub fn checkpoints(&self, projection: &str) -> Result<HashMap<String, u64>, StoreError> {
        let tree = self.tree(projection)?;
        let prefix = checkpoint_prefix();
        let mut out = HashMap::new();
        for item in tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            let stream = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let seq = u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                tree: projection.to_owned(),
                reason: "checkpoint is not 8 bytes".into(),
            })?);
            out.insert(stream, seq);
        }
        Ok(out)
    }

    /// The version of the code that wrote the projection's rows, if recorded.
    pub fn version(&self, projection: &str) -> Result<Option<u32>, StoreError> {
        let tree = self.tree(projection)?;
        read_version(&tree, projection)
    }

    /// Makes sure the projection's rows were written by `version`; if not, clears them and its
    /// checkpoints and records `version`, so that the projection rebuilds from its streams.
    /// Blocking.
    pub fn ensure_version(&self, projection: &str, version: u32) -> Result<VersionCheck, StoreError> {
        let tree = self.tree(projection)?;
        let stored = read_version(&tree, projection)?;
        if stored == Some(version) {
            return Ok(VersionCheck::Current);
        }
        let check = if tree.first()?.is_some() { VersionCheck::Rebuild { from: stored } } else { VersionCheck::Fresh };
        self.reset(projection, version)?;
        Ok(check)
    }

    /// Clears a projection's rows and checkpoints and records `version` as the version its new
    /// rows are written by. Blocking.
    ///
    /// The old version goes first and the new one is written last: a crash half-way leaves
    /// rows without a version, which the next start takes for old rows and clears again.
    pub fn reset(&self, projection: &str, version: u32) -> Result<(), StoreError> {
        let tree = self.tree(projection)?;
        let key = version_key();
        tree.remove(&key)?;
        tree.clear()?;
        tree.insert(key, &version.to_be_bytes())?;
        // A rebuild is long: the cleared tree and its version reach the disk before any new
        // row, so that a crash during the rebuild resumes it rather than mixing versions.
        tree.flush()?;
        Ok(())
    }

    /// Starts the writes of one batch.
    pub fn begin(&self, projection: &str) -> Result<Tx, StoreError> {
        self.begin_after(projection, None)
    }

    /// Starts a batch that reads through `base`, the writes of a batch still being written.
    pub(crate) fn begin_after(&self, projection: &str, base: Option<Arc<Pending>>) -> Result<Tx, StoreError> {
        Ok(Tx {
            tree: self.tree(projection)?,
            pending: BTreeMap::new(),
            base,
            cache: RefCell::new(RowCache::default()),
        })
    }

    /// Writes a batch and the new checkpoints atomically (one sled batch). Blocking: call it
    /// off the async executor.
    pub fn commit(&self, tx: Tx, checkpoints: &HashMap<String, u64>) -> Result<(), StoreError> {
        write(&tx.tree, &tx.pending, checkpoints)
    }

    pub(crate) fn write_pending(
        &self,
        projection: &str,
        pending: &Pending,
        checkpoints: &HashMap<String, u64>,
    ) -> Result<(), StoreError> {
        write(&self.tree(projection)?, pending, checkpoints)
    }

    /// Removes every row and checkpoint of a projection (and its version: the projection records
    /// it again when it starts).
    pub fn clear(&self, projection: &str) -> Result<(), StoreError> {
        self.tree(projection)?.clear()?;
        Ok(())
    }

    /// A hash of the projection's rows (checkpoints excluded), to compare two builds.
    pub fn digest(&self, projection: &str) -> Result<String, StoreError> {
        let mut hasher = Sha256::new();
        for item in self.tree(projection)?.iter() {
            let (k, v) = item?;
            if k.first() == Some(&META) {
                continue;
            }
            hasher.update((k.len() as u64).to_be_bytes());
            hasher.update(&k);
            hasher.update((v.len() as u64).to_be_bytes());
            hasher.update(&v);
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// Flushes to disk. Not an fsync guarantee anyone relies on: the streams are the durable copy.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Corrupt { tree: "*".into(), reason: e.to_string() })??;
        Ok(())
    }
}

fn read_version(tree: &sled::Tree, projection: &str) -> Result<Option<u32>, StoreError> {
    match tree.get(version_key())? {
        None => Ok(None),
        Some(v) => Ok(Some(u32::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            tree: projection.to_owned(),
            reason: "version is not 4 bytes".into(),
        })?))),
    }
}

/// Writes not yet in sled: key → new value, or `None` for a removal.
pub(crate) type Pending = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

fn write(tree: &sled::Tree, pending: &Pending, checkpoints: &HashMap<String, u64>) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for (k, v) in pending {
        match v {
            Some(v) => batch.insert(k.as_slice(), v.as_slice()),
            None => batch.remove(k.as_slice()),
        }
    }
    for (stream, seq) in checkpoints {
        batch.insert(checkpoint_key(stream), &seq.to_be_bytes());
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// Rows recently read or written by a running projection, so that hot rows are not read back
/// from sled for every event. Holds only values that are in sled (a batch's writes join it once
/// written; until then reads find them in the batch in flight); emptied when it grows past its
/// bound, and dropped when the projection restarts.
///
/// The bound is in bytes, not rows: rows range from a few bytes (a counter) to kilobytes (a
/// plan), and every projection of a node has a cache of its own.
#[derive(Default)]
pub(crate) struct RowCache {
    rows: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
}

impl RowCache {
    pub(crate) const MAX_BYTES: usize = 4 << 20;

    /// What a row costs: its key, its value and about what the map spends on an entry.
    fn cost(key: &[u8], value: &Option<Vec<u8>>) -> usize {
        key.len() + value.as_ref().map_or(0, Vec::len) + 64
    }

    /// Records the writes of a batch that has been written.
    pub(crate) fn absorb(&mut self, pending: Pending) {
        let incoming: usize = pending.iter().map(|(k, v)| Self::cost(k, v)).sum();
        if self.bytes + incoming > Self::MAX_BYTES {
            self.rows.clear();
            self.bytes = 0;
        }
        if incoming > Self::MAX_BYTES {
            return;
        }
        for (k, v) in pending {
            self.insert(k, v);
        }
    }

    /// Keeps a row read from sled, if there is room.
    fn keep(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if self.bytes + Self::cost(&key, &value) <= Self::MAX_BYTES {
            self.insert(key, value);
        }
    }

    fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let cost = Self::cost(&key, &value);
        let replaced = self.rows.get(&key).map(|old| Self::cost(&key, old));
        self.rows.insert(key, value);
        self.bytes = self.bytes + cost - replaced.unwrap_or(0);
    }
}

/// The writes of one batch. Reads see the batch's own pending writes first, then those of the
/// batch before it if that one is still being written, then the row cache, then sled.
pub struct Tx {
    tree: sled::Tree,
    pending: Pending,
    base: Option<Arc<Pending>>,
    cache: RefCell<RowCache>,
}

impl Tx {
    pub(crate) fn with_cache(self, cache: RowCache) -> Tx {
        self.cache.replace(cache);
        self
    }

    pub(crate) fn into_parts(self) -> (Pending, RowCache) {
        (self.pending, self.cache.into_inner())
    }

    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ApplyError> {
        let k = table_key(table, key);
        if let Some(v) = self.pending.get(&k) {
            return Ok(v.clone());
        }
        if let Some(v) = self.base.as_ref().and_then(|b| b.get(&k)) {
            return Ok(v.clone());
        }
        if let Some(v) = self.cache.borrow().rows.get(&k) {
            return Ok(v.clone());
        }
        let v = self.tree.get(&k).map(|v| v.map(|v| v.to_vec())).map_err(|e| ApplyError(e.to_string()))?;
        self.cache.borrow_mut().keep(k, v.clone());
        Ok(v)
    }

    pub fn put(&mut self, table: &str, key: &[u8], value: Vec<u8>) {
        self.pending.insert(table_key(table, key), Some(value));
    }

    pub fn delete(&mut self, table: &str, key: &[u8]) {
        self.pending.insert(table_key(table, key), None);
    }

    pub fn get_json<T: DeserializeOwned>(&self, table: &str, key: &[u8]) -> Result<Option<T>, ApplyError> {
        match self.get(table, key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ApplyError(format!("row {table}/{} unreadable: {e}", String::from_utf8_lossy(key)))),
        }
    }

    /// Changes an existing row; a missing row is an error (the projection missed its creation).
    /// Changes an existing row; answers the row as written.
    pub fn update_json<T: Serialize + DeserializeOwned>(
        &mut self,
        table: &str,
        key: &[u8],
        change: impl FnOnce(&mut T),
    ) -> Result<T, ApplyError> {
        let mut row: T = self
            .get_json(table, key)?
            .ok_or_else(|| ApplyError(format!("no row {table}/{} to update", String::from_utf8_lossy(key))))?;
        change(&mut row);
        self.put_json(table, key, &row);
        Ok(row)
    }

    pub fn put_json<T: Serialize>(&mut self, table: &str, key: &[u8], value: &T) {
        self.put(table, key, serde_json::to_vec(value).expect("rows serialise"));
    }
}

/// Read access to one projection, for queries.
#[derive(Clone)]
pub struct View {
    tree: sled::Tree,
    name: String,
}

impl View {
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(table_key(table, key))?.map(|v| v.to_vec()))
    }

    pub fn get_json<T: DeserializeOwned>(&self, table: &str, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.get(table, key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt { tree: self.name.clone(), reason: e.to_string() }),
        }
    }

    /// Rows of `table` whose key starts with `prefix`, in key order.
    pub fn scan(
        &self,
        table: &str,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        let start = table.len() + 1;
        self.tree
            .scan_prefix(table_key(table, prefix))
            .map(move |item| item.map(|(k, v)| (k[start..].to_vec(), v.to_vec())).map_err(StoreError::from))
    }

    pub fn scan_json<T: DeserializeOwned>(&self, table: &str, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        self.scan(table, prefix)
            .map(|item| {
                let (_, v) = item?;
                serde_json::from_slice(&v)
                    .map_err(|e| StoreError::Corrupt { tree: self.name.clone(), reason: e.to_string() })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_cache_stays_within_its_bytes() {
        let mut cache = RowCache::default();
        let row = |i: usize| (format!("t\0{i:08}").into_bytes(), Some(vec![b'x'; 1000]));
        for round in 0..20 {
            let pending: Pending = (round * 1000..(round + 1) * 1000).map(row).collect();
            cache.absorb(pending);
            let counted: usize = cache.rows.iter().map(|(k, v)| RowCache::cost(k, v)).sum();
            assert_eq!(cache.bytes, counted, "the count follows the rows");
            assert!(cache.bytes <= RowCache::MAX_BYTES);
        }
        assert!(!cache.rows.is_empty());
        // A row written again replaces its old cost.
        let (k, _) = row(19_999);
        let before = cache.bytes;
        cache.absorb(Pending::from([(k, Some(vec![b'y'; 10]))]));
        assert_eq!(cache.bytes, before - 990);
        // A batch larger than the whole cache is not kept.
        cache.absorb((0..5000).map(row).collect());
        assert_eq!((cache.rows.len(), cache.bytes), (0, 0));
    }

    #[test]
    fn a_batch_and_its_checkpoint_land_together_and_reads_see_pending_writes() {
        let store = ProjectionStore::temporary().unwrap();
        let mut tx = store.begin("p").unwrap();
        tx.put("donors", b"d1", b"one".to_vec());
        assert_eq!(tx.get("donors", b"d1").unwrap(), Some(b"one".to_vec()));
        tx.delete("donors", b"d1");
        assert_eq!(tx.get("donors", b"d1").unwrap(), None);
        tx.put("donors", b"d2", b"two".to_vec());
        tx.put("donorsx", b"d3", b"other table".to_vec());
        store.commit(tx, &HashMap::from([("donations".to_owned(), 7)])).unwrap();

        let view = store.view("p").unwrap();
        let rows: Vec<_> = view.scan("donors", b"").map(|r| r.unwrap()).collect();
        assert_eq!(rows, vec![(b"d2".to_vec(), b"two".to_vec())], "tables do not leak into each other");
        assert_eq!(store.checkpoints("p").unwrap()["donations"], 7);

        let before = store.digest("p").unwrap();
        store.commit(store.begin("p").unwrap(), &HashMap::from([("donations".to_owned(), 9)])).unwrap();
        assert_eq!(store.digest("p").unwrap(), before, "checkpoints are not part of the digest");
        store.clear("p").unwrap();
        assert!(store.checkpoints("p").unwrap().is_empty());
    }
}

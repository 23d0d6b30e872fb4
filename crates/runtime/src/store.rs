//! The persisted record store: one JSON file per object under `<root>/<kind>s/`.
//!
//! Every write is atomic (temp file, fsync, rename, fsync of the directory), so a
//! crash leaves either the old record or the new one, never a torn one. Temp files a
//! crash left behind start with a dot and are removed, unparsed, when the store opens.
//!
//! Locking: each object has its own operation lock ([`ObjectGuard`]) that serializes
//! the operations changing it; readers never take it. They read the last persisted
//! snapshot, so a slow operation on one object (a 30 s StopContainer) delays neither
//! other objects nor listings.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// A kind of object the store persists.
pub trait Record: Serialize + DeserializeOwned + Send + Sync + Clone + 'static {
    /// Singular noun for errors and the directory name (`pod` is kept in `pods/`).
    const KIND: &'static str;

    fn id(&self) -> &str;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid {kind} id {id:?}: {reason}")]
    InvalidId {
        kind: &'static str,
        id: String,
        reason: &'static str,
    },
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("create store directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("read store directory {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("encode {kind} {id}: {source}")]
    Encode {
        kind: &'static str,
        id: String,
        source: serde_json::Error,
    },
    #[error("write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Ids become file names, so only a conservative alphabet is accepted.
pub fn validate_id(kind: &'static str, id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        Some("empty")
    } else if id.len() > 128 {
        Some("longer than 128 bytes")
    } else if id.starts_with('.') {
        Some("starts with a dot")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Some("only ASCII letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidId {
            kind,
            id: id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

struct Entry<R> {
    op_lock: Arc<Mutex<()>>,
    /// `None` while the first write of a new record is still in flight.
    current: Option<Arc<R>>,
}

/// Holds the operation lock of one object. Dropping it releases the lock.
pub struct ObjectGuard {
    id: String,
    op_lock: Arc<Mutex<()>>,
    _guard: OwnedMutexGuard<()>,
}

impl ObjectGuard {
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// What opening a store found on disk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: usize,
    /// Temp files left by a crash mid-write, removed unparsed.
    pub removed_temp_files: Vec<PathBuf>,
    /// Record files that could not be parsed, renamed aside to `*.corrupt`.
    pub quarantined: Vec<PathBuf>,
}

pub struct RecordStore<R: Record> {
    dir: PathBuf,
    entries: RwLock<HashMap<String, Entry<R>>>,
}

impl<R: Record> RecordStore<R> {
    /// Opens (creating if needed) the store in `dir` and loads every record in it.
    pub fn open(dir: &Path) -> Result<(Self, LoadReport)> {
        create_private_dir(dir)?;
        let mut report = LoadReport::default();
        let mut entries = HashMap::new();
        let read_dir = fs::read_dir(dir).map_err(|source| StoreError::ReadDir {
            path: dir.to_owned(),
            source,
        })?;
        for dir_entry in read_dir {
            let dir_entry = dir_entry.map_err(|source| StoreError::ReadDir {
                path: dir.to_owned(),
                source,
            })?;
            let path = dir_entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                tracing::warn!(path = %path.display(), "ignoring non-UTF-8 file in store");
                continue;
            };
            if is_temp_file_name(name) {
                remove_file_logged(&path);
                report.removed_temp_files.push(path);
                continue;
            }
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            match read_record::<R>(&path, id) {
                Ok(record) => {
                    entries.insert(
                        id.to_owned(),
                        Entry {
                            op_lock: Arc::new(Mutex::new(())),
                            current: Some(Arc::new(record)),
                        },
                    );
                    report.loaded += 1;
                }
                Err(reason) => {
                    let aside = path.with_extension("json.corrupt");
                    tracing::warn!(
                        kind = R::KIND, path = %path.display(), %reason,
                        "unreadable record moved aside to {}", aside.display()
                    );
                    if let Err(err) = fs::rename(&path, &aside) {
                        tracing::warn!(path = %path.display(), %err, "could not move record aside");
                    }
                    report.quarantined.push(aside);
                }
            }
        }
        let store = Self {
            dir: dir.to_owned(),
            entries: RwLock::new(entries),
        };
        Ok((store, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last persisted version of a record.
    pub fn get(&self, id: &str) -> Option<Arc<R>> {
        self.read_entries()
            .get(id)
            .and_then(|entry| entry.current.clone())
    }

    /// Snapshots of every persisted record, in no particular order.
    pub fn list(&self) -> Vec<Arc<R>> {
        self.read_entries()
            .values()
            .filter_map(|entry| entry.current.clone())
            .collect()
    }

    /// Persists a new record and returns the operation lock of the new object, so the
    /// caller can go on setting it up before anyone else may change it.
    pub async fn insert(&self, record: R) -> Result<ObjectGuard> {
        let id = record.id().to_owned();
        validate_id(R::KIND, &id)?;
        let op_lock = Arc::new(Mutex::new(()));
        let guard = ObjectGuard {
            id: id.clone(),
            op_lock: op_lock.clone(),
            _guard: op_lock.clone().lock_owned().await,
        };
        {
            let mut entries = self.write_entries();
            if entries.contains_key(&id) {
                return Err(StoreError::AlreadyExists { kind: R::KIND, id });
            }
            let entry = Entry {
                op_lock,
                current: None,
            };
            entries.insert(id.clone(), entry);
        }
        let record = Arc::new(record);
        if let Err(err) = self.persist(record.clone()).await {
            self.write_entries().remove(&id);
            return Err(err);
        }
        if let Some(entry) = self.write_entries().get_mut(&id) {
            entry.current = Some(record);
        }
        Ok(guard)
    }

    /// Waits for the operation lock of an object.
    pub async fn lock(&self, id: &str) -> Result<ObjectGuard> {
        let op_lock = self
            .read_entries()
            .get(id)
            .filter(|entry| entry.current.is_some())
            .map(|entry| entry.op_lock.clone())
            .ok_or_else(|| self.not_found(id))?;
        let guard = op_lock.clone().lock_owned().await;
        // The object may have been removed while we waited.
        if !self.is_same_object(id, &op_lock) {
            return Err(self.not_found(id));
        }
        Ok(ObjectGuard {
            id: id.to_owned(),
            op_lock,
            _guard: guard,
        })
    }

    /// Applies `change` to the record held by `guard`, persists it, and only then makes
    /// it visible to readers. On error nothing changes.
    pub async fn update<F>(&self, guard: &ObjectGuard, change: F) -> Result<Arc<R>>
    where
        F: FnOnce(&mut R),
    {
        let mut record = R::clone(&*self.current_of(guard)?);
        change(&mut record);
        let record = Arc::new(record);
        self.persist(record.clone()).await?;
        if let Some(entry) = self.write_entries().get_mut(&guard.id) {
            entry.current = Some(record.clone());
        }
        Ok(record)
    }

    /// Deletes the record held by `guard`, from disk first.
    pub async fn remove(&self, guard: ObjectGuard) -> Result<()> {
        self.current_of(&guard)?;
        let path = self.record_path(&guard.id);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || remove_durably(&dir, &path)).await??;
        self.write_entries().remove(&guard.id);
        Ok(())
    }

    fn current_of(&self, guard: &ObjectGuard) -> Result<Arc<R>> {
        self.read_entries()
            .get(&guard.id)
            .filter(|entry| Arc::ptr_eq(&entry.op_lock, &guard.op_lock))
            .and_then(|entry| entry.current.clone())
            .ok_or_else(|| self.not_found(&guard.id))
    }

    fn is_same_object(&self, id: &str, op_lock: &Arc<Mutex<()>>) -> bool {
        self.read_entries()
            .get(id)
            .is_some_and(|entry| Arc::ptr_eq(&entry.op_lock, op_lock) && entry.current.is_some())
    }

    async fn persist(&self, record: Arc<R>) -> Result<()> {
        let id = record.id().to_owned();
        let bytes = serde_json::to_vec_pretty(&*record).map_err(|source| StoreError::Encode {
            kind: R::KIND,
            id: id.clone(),
            source,
        })?;
        let dir = self.dir.clone();
        let file_name = format!("{id}.json");
        tokio::task::spawn_blocking(move || write_atomic(&dir, &file_name, &bytes)).await?
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn not_found(&self, id: &str) -> StoreError {
        StoreError::NotFound {
            kind: R::KIND,
            id: id.to_owned(),
        }
    }

    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry<R>>> {
        // A panic while holding this lock cannot leave the map half-changed: every
        // critical section is a single insert, remove or field assignment.
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_entries(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry<R>>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn read_record<R: Record>(path: &Path, id_from_name: &str) -> std::result::Result<R, String> {
    let bytes = fs::read(path).map_err(|err| format!("read: {err}"))?;
    let record: R = serde_json::from_slice(&bytes).map_err(|err| format!("parse: {err}"))?;
    if record.id() != id_from_name {
        return Err(format!(
            "file name says id {id_from_name} but the record says {}",
            record.id()
        ));
    }
    Ok(record)
}

/// Temp files are `.<name>.tmp-<pid>-<n>`: hidden, so they never end in `.json` alone.
fn is_temp_file_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

fn temp_file_name(final_name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{final_name}.tmp-{}-{n}", std::process::id())
}

/// Writes `bytes` to `dir/name` so that a crash at any point leaves the old file or
/// the new one: temp file, fsync, rename over, fsync of the directory.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    write_all_atomic(dir, &[(name, bytes)])
}

/// [`write_atomic`] for several files of one directory, with a single fsync of the
/// directory at the end: each file is the old one or the new one after a crash.
pub fn write_all_atomic(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    for (name, bytes) in files {
        replace_file(dir, name, bytes)?;
    }
    sync_dir(dir).map_err(|source| StoreError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Temp file, fsync, rename over `dir/name`; the directory entry is not yet durable.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let final_path = dir.join(name);
    let temp_path = dir.join(temp_file_name(name));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp_path, &final_path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    result.map_err(|source| StoreError::Write {
        path: final_path,
        source,
    })
}

fn remove_durably(dir: &Path, path: &Path) -> Result<()> {
    let remove_err = |source| StoreError::Remove {
        path: path.to_owned(),
        source,
    };
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(remove_err(err)),
    }
    sync_dir(dir).map_err(remove_err)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_file_logged(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "removed temp file left by a crash"),
        Err(err) => tracing::warn!(path = %path.display(), %err, "could not remove temp file"),
    }
}

/// Creates `dir` and its parents; the store holds pod specs, so only root reads it.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Thing {
        id: String,
        value: u32,
    }

    impl Record for Thing {
        const KIND: &'static str = "thing";
        fn id(&self) -> &str {
            &self.id
        }
    }

    fn thing(id: &str, value: u32) -> Thing {
        Thing {
            id: id.to_owned(),
            value,
        }
    }

    #[tokio::test]
    async fn inserted_record_is_reloaded_by_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = RecordStore::<Thing>::open(dir.path()).unwrap();
        drop(store.insert(thing("a", 1)).await.unwrap());
        let (reopened, report) = RecordStore::<Thing>::open(dir.path()).unwrap();
        assert_eq!(report.loaded, 1);
        assert_eq!(*reopened.get("a").unwrap(), thing("a", 1));
    }

    #[tokio::test]
    async fn update_is_persisted_and_visible() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = RecordStore::<Thing>::open(dir.path()).unwrap();
        drop(store.insert(thing("a", 1)).await.unwrap());
        let guard = store.lock("a").await.unwrap();
        let updated = store.update(&guard, |t| t.value = 2).await.unwrap();
        assert_eq!(updated.value, 2);
        assert_eq!(store.get("a").unwrap().value, 2);
        let on_disk: Thing =
            serde_json::from_slice(&fs::read(dir.path().join("a.json")).unwrap()).unwrap();
        assert_eq!(on_disk.value, 2);
    }

    #[tokio::test]
    async fn duplicate_insert_is_refused_and_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = RecordStore::<Thing>::open(dir.path()).unwrap();
        drop(store.insert(thing("a", 1)).await.unwrap());
        let err = store.insert(thing("a", 2)).await.err().unwrap();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
        assert_eq!(store.get("a").unwrap().value, 1);
    }

    #[tokio::test]
    async fn removed_record_is_gone_from_disk_and_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = RecordStore::<Thing>::open(dir.path()).unwrap();
        let guard = store.insert(thing("a", 1)).await.unwrap();
        store.remove(guard).await.unwrap();
        assert!(store.get("a").is_none());
        assert!(!dir.path().join("a.json").exists());
        assert!(matches!(
            store.lock("a").await.err().unwrap(),
            StoreError::NotFound { .. }
        ));
    }

    #[tokio::test]
    async fn waiter_on_a_removed_object_gets_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = RecordStore::<Thing>::open(dir.path()).unwrap();
        let store = Arc::new(store);
        let guard = store.insert(thing("a", 1)).await.unwrap();
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.lock("a").await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        store.remove(guard).await.unwrap();
        let result = waiter.await.unwrap();
        assert!(matches!(result, Err(StoreError::NotFound { .. })));
    }

    #[tokio::test]
    async fn a_locked_object_does_not_block_readers_or_other_objects() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = RecordStore::<Thing>::open(dir.path()).unwrap();
        let _held_a = store.insert(thing("a", 1)).await.unwrap();
        drop(store.insert(thing("b", 1)).await.unwrap());
        // While "a" is locked, "b" can be locked and updated and "a" can be read.
        let guard_b = tokio::time::timeout(std::time::Duration::from_secs(1), store.lock("b"))
            .await
            .expect("lock of b waited behind a")
            .unwrap();
        store.update(&guard_b, |t| t.value = 5).await.unwrap();
        assert_eq!(store.get("a").unwrap().value, 1);
        assert_eq!(store.list().len(), 2);
        // And "a" itself is really held.
        let second_lock_of_a =
            tokio::time::timeout(std::time::Duration::from_millis(50), store.lock("a")).await;
        assert!(second_lock_of_a.is_err(), "a was lockable twice");
    }

    #[test]
    fn torn_temp_file_is_removed_and_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let torn = dir.path().join(".a.json.tmp-123-0");
        fs::write(&torn, b"{\"id\": \"a\", \"val").unwrap();
        let (store, report) = RecordStore::<Thing>::open(dir.path()).unwrap();
        assert_eq!(report.loaded, 0);
        assert_eq!(report.removed_temp_files, vec![torn.clone()]);
        assert!(!torn.exists());
        assert!(store.get("a").is_none());
    }

    #[test]
    fn unparsable_record_is_moved_aside_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.json"), b"not json").unwrap();
        fs::write(
            dir.path().join("b.json"),
            serde_json::to_vec(&thing("b", 1)).unwrap(),
        )
        .unwrap();
        let (store, report) = RecordStore::<Thing>::open(dir.path()).unwrap();
        assert_eq!(report.loaded, 1);
        assert_eq!(report.quarantined, vec![dir.path().join("a.json.corrupt")]);
        assert!(store.get("a").is_none());
        assert!(dir.path().join("a.json.corrupt").exists());
    }

    #[test]
    fn record_whose_id_differs_from_its_file_name_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("a.json"),
            serde_json::to_vec(&thing("b", 1)).unwrap(),
        )
        .unwrap();
        let (store, report) = RecordStore::<Thing>::open(dir.path()).unwrap();
        assert_eq!(report.loaded, 0);
        assert!(store.get("a").is_none() && store.get("b").is_none());
    }

    #[tokio::test]
    async fn ids_that_could_escape_the_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = RecordStore::<Thing>::open(dir.path()).unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            let err = store.insert(thing(bad, 1)).await.err().unwrap();
            assert!(
                matches!(err, StoreError::InvalidId { .. }),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f.json", b"one").unwrap();
        write_atomic(dir.path(), "f.json", b"two").unwrap();
        assert_eq!(fs::read(dir.path().join("f.json")).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.json")]);
    }
}

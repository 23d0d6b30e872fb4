//! Pods and containers: lifecycle state, the persisted store, and the locks that keep
//! one daemon per root directory.

pub mod lock_file;
pub mod model;
pub mod store;

use std::path::{Path, PathBuf};

use model::{ContainerRecord, PodRecord};
use store::{LoadReport, RecordStore, StoreError};

pub use lock_file::{LockFile, LockFileError};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("one daemon per root dir: {0}")]
    LockFile(#[from] LockFileError),
    #[error("open the {kind} store: {source}")]
    OpenStore {
        kind: &'static str,
        source: StoreError,
    },
}

/// The directories a runtime works in.
#[derive(Clone, Debug)]
pub struct RuntimeDirs {
    /// Persistent: records, content store, snapshots.
    pub root: PathBuf,
    /// Volatile (tmpfs): pinned namespaces, exit files.
    pub state: PathBuf,
}

/// The runtime's state: every pod and container record, loaded at start.
pub struct Runtime {
    dirs: RuntimeDirs,
    pods: RecordStore<PodRecord>,
    containers: RecordStore<ContainerRecord>,
    _root_lock: LockFile,
}

impl Runtime {
    /// Takes the root directory's lock (one daemon per root dir) and loads every record.
    pub fn open(dirs: RuntimeDirs) -> Result<Self, RuntimeError> {
        let root_lock = LockFile::acquire(&dirs.root.join("coracle.lock"))?;
        store::create_private_dir(&dirs.state).map_err(|source| RuntimeError::OpenStore {
            kind: "state",
            source,
        })?;
        let pods = open_store::<PodRecord>(&dirs.root.join("pods"))?;
        let containers = open_store::<ContainerRecord>(&dirs.root.join("containers"))?;
        Ok(Self {
            dirs,
            pods,
            containers,
            _root_lock: root_lock,
        })
    }

    pub fn dirs(&self) -> &RuntimeDirs {
        &self.dirs
    }

    pub fn pods(&self) -> &RecordStore<PodRecord> {
        &self.pods
    }

    pub fn containers(&self) -> &RecordStore<ContainerRecord> {
        &self.containers
    }
}

fn open_store<R: store::Record>(dir: &Path) -> Result<RecordStore<R>, RuntimeError> {
    let (store, report) = RecordStore::open(dir).map_err(|source| RuntimeError::OpenStore {
        kind: R::KIND,
        source,
    })?;
    log_load_report::<R>(&report);
    Ok(store)
}

fn log_load_report<R: store::Record>(report: &LoadReport) {
    tracing::info!(
        kind = R::KIND,
        loaded = report.loaded,
        temp_files_removed = report.removed_temp_files.len(),
        quarantined = report.quarantined.len(),
        "records loaded"
    );
}

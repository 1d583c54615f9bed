//! The root's durable Cfg store, in an embedded `redb` database.
//!
//! - [`CfgDb`]: one file `cfg.redb` in the data directory with two tables:
//!   `cfg` (node name -> encoded `Node`) and `meta` (the boot epoch).
//! - Writes go in one transaction per API request and return only after
//!   the commit, which `redb` makes durable (fsync) before returning: the
//!   API acknowledges a write only once it survives a crash ("persist, then
//!   acknowledge").
//! - [`CfgDb::open`] bumps the boot epoch; the root publishes Cfg versions
//!   above `epoch << 32`, so versions keep growing across restarts even
//!   though the overlay's stores start empty.
//! - After an I/O error (a full disk) `redb` refuses every operation
//!   (`PreviousIo`) until the database is opened again. [`CfgDb::with`]
//!   runs every access: on an I/O error it closes the database and opens
//!   it again (redb's repair returns it to its last commit), at once and,
//!   if that fails too, before the next access. A write that failed is
//!   refused (nothing acknowledged), and writes work again as soon as
//!   space is freed, without a restart (issue 12, finding 7).

// The closures given to `CfgDb::with` return `redb::Error`, which is large;
// it is boxed in `PersistError` as soon as it leaves them.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prost::Message;
use proto::node::Node;
use redb::{Database, ReadableTable, TableDefinition};

const CFG: TableDefinition<&str, &[u8]> = TableDefinition::new("cfg");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const EPOCH_KEY: &str = "boot_epoch";

/// The database file inside the data directory.
pub const DB_FILE: &str = "cfg.redb";

/// Why the database could not be used. A failed write changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `redb` failed (open, transaction, table, storage or commit).
    #[error("database {path}: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::Error>,
    },
    /// A stored Cfg does not decode (the file is damaged or foreign).
    #[error("database {path}: stored Cfg of `{node}` does not decode")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The node.
        node: String,
    },
}

/// How the database file is opened (again after an I/O error).
type Opener = Box<dyn Fn(&Path) -> Result<Database, redb::Error> + Send + Sync>;

/// The root's Cfg database.
pub struct CfgDb {
    /// `None` after an I/O error whose reopening failed: the next access
    /// opens it again.
    db: Mutex<Option<Database>>,
    open: Opener,
    path: PathBuf,
    epoch: u64,
}

impl CfgDb {
    /// Opens (or creates) `dir/cfg.redb` and starts a new boot epoch.
    pub fn open(dir: &Path) -> Result<CfgDb, PersistError> {
        Self::open_with(dir, Box::new(|p| Ok(Database::create(p)?)))
    }

    /// [`CfgDb::open`] with the file opened by `open` (tests put a storage
    /// backend with injected faults under it).
    pub fn open_with(dir: &Path, open: Opener) -> Result<CfgDb, PersistError> {
        std::fs::create_dir_all(dir).map_err(|source| PersistError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let db = open(&path).db(&path)?;
        let mut me = CfgDb {
            db: Mutex::new(Some(db)),
            open,
            path,
            epoch: 0,
        };
        me.epoch = me.bump_epoch()?;
        Ok(me)
    }

    /// Runs `f` on the database. After an I/O error the database is closed
    /// and opened again (at once, or at the next access if that fails), so
    /// that it works again once the cause (a full disk) is gone; the error
    /// is returned either way and `f`'s transaction did not commit.
    pub fn with<R>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, redb::Error>,
    ) -> Result<R, PersistError> {
        let mut held = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_none() {
            *held = Some((self.open)(&self.path).db(&self.path)?);
            tracing::info!("database {} opened again", self.path.display());
        }
        let db = held.as_ref().expect("opened above");
        match f(db) {
            Ok(r) => Ok(r),
            Err(e) => {
                if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
                    tracing::warn!("database {}: {e}; opening it again", self.path.display());
                    // Close first: the file is locked while it is open.
                    *held = None;
                    *held = (self.open)(&self.path).ok();
                }
                Err(db_err(&self.path, e))
            }
        }
    }

    /// This run's boot epoch (1 on the first run).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The file in use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn bump_epoch(&self) -> Result<u64, PersistError> {
        self.with(|db| {
            let tx = db.begin_write()?;
            let epoch = {
                let mut meta = tx.open_table(META)?;
                let old = meta.get(EPOCH_KEY)?.map_or(0, |v| v.value());
                let new = old
                    .checked_add(1)
                    .ok_or_else(|| redb::Error::Corrupted("boot epoch exhausted".into()))?;
                meta.insert(EPOCH_KEY, new)?;
                // Create the Cfg table so that readers always find it.
                tx.open_table(CFG)?;
                new
            };
            tx.commit()?;
            Ok(epoch)
        })
    }

    /// Every stored Cfg, by node name.
    pub fn load(&self) -> Result<Vec<(String, Node)>, PersistError> {
        let rows = self.with(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(CFG)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })?;
        rows.into_iter()
            .map(|(name, bytes)| match Node::decode(bytes.as_slice()) {
                Ok(node) => Ok((name, node)),
                Err(_) => Err(PersistError::Corrupt {
                    path: self.path.clone(),
                    node: name,
                }),
            })
            .collect()
    }

    /// Stores `nodes` in one transaction; returns once it is durable. On an
    /// error nothing of it is stored.
    pub fn put(&self, nodes: &[(String, Node)]) -> Result<(), PersistError> {
        self.with(|db| {
            let tx = db.begin_write()?;
            {
                let mut table = tx.open_table(CFG)?;
                for (name, node) in nodes {
                    table.insert(name.as_str(), node.encode_to_vec().as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}

fn db_err(path: &Path, e: impl Into<redb::Error>) -> PersistError {
    PersistError::Db {
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    }
}

/// Attaches the database path to any `redb` error.
trait DbResult<T> {
    fn db(self, path: &Path) -> Result<T, PersistError>;
}

impl<T, E: Into<redb::Error>> DbResult<T> for Result<T, E> {
    fn db(self, path: &Path) -> Result<T, PersistError> {
        self.map_err(|e| db_err(path, e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use redb::StorageBackend;
    use redb::backends::FileBackend;

    use super::*;

    /// A file backend whose writes and growth fail with "no space left on
    /// device" while `full` is set.
    #[derive(Debug)]
    struct Disk {
        file: FileBackend,
        full: Arc<AtomicBool>,
    }

    impl Disk {
        fn check(&self) -> std::io::Result<()> {
            if self.full.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            Ok(())
        }
    }

    impl StorageBackend for Disk {
        fn len(&self) -> std::io::Result<u64> {
            self.file.len()
        }
        fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
            self.file.read(offset, len)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.file.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
            self.check()?;
            self.file.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.file.write(offset, data)
        }
    }

    fn node(name: &str, bytes: usize) -> (String, Node) {
        let n = Node {
            nodename: name.into(),
            id: vec![7u8; bytes],
            phys_state: 2,
            ..Default::default()
        };
        (name.to_string(), n)
    }

    /// Issue 12, finding 7: while the disk is full every write fails
    /// cleanly (an error, nothing stored); once space is back writes work
    /// again without reopening by hand, and every acknowledged write is
    /// there, also after a restart. On the old code every access failed
    /// with `PreviousIo` after the first error, until a restart.
    #[test]
    fn finding7_writes_work_again_once_the_disk_has_space() {
        let dir = std::env::temp_dir().join(format!("layercake-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let full = Arc::new(AtomicBool::new(false));
        let flag = full.clone();
        let opener: Opener = Box::new(move |p| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)?;
            let disk = Disk {
                file: FileBackend::new(file)?,
                full: flag.clone(),
            };
            Ok(redb::Builder::new().create_with_backend(disk)?)
        });
        let db = CfgDb::open_with(&dir, opener).unwrap();
        db.put(&[node("n1", 100)]).unwrap();
        full.store(true, Ordering::SeqCst);
        for i in 0..3 {
            assert!(db.put(&[node(&format!("lost{i}"), 5000)]).is_err());
        }
        full.store(false, Ordering::SeqCst);
        db.put(&[node("n2", 100)])
            .expect("a write once space is back");
        let names: Vec<String> = db.load().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["n1", "n2"]);
        drop(db);
        let db = CfgDb::open(&dir).unwrap();
        let names: Vec<String> = db.load().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["n1", "n2"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 12, finding 7 on a real file system: a 4 MiB tmpfs (mounted
    /// here; the test needs root, like the network-boot tests) filled up by
    /// another file. Writes fail while it is full and work again once the
    /// file is removed; nothing acknowledged is lost.
    #[test]
    fn finding7_a_full_tmpfs_then_space_freed() {
        let dir = std::env::temp_dir().join(format!("layercake-tmpfs-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            mounted,
            "mounting a tmpfs at {} (needs root)",
            dir.display()
        );
        let result = std::panic::catch_unwind(|| {
            let db = CfgDb::open(&dir.join("data")).unwrap();
            let mut acked = Vec::new();
            db.put(&[node("first", 1000)]).unwrap();
            acked.push("first".to_string());
            // Fill the file system.
            let filler = dir.join("filler");
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 64 << 10];
            while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
            drop(f);
            let mut failed = 0;
            for i in 0..20 {
                let name = format!("n{i:02}");
                match db.put(&[node(&name, 60_000)]) {
                    Ok(()) => acked.push(name),
                    Err(_) => failed += 1,
                }
            }
            assert!(failed > 0, "the full file system refused nothing");
            std::fs::remove_file(&filler).unwrap();
            db.put(&[node("after", 1000)])
                .expect("a write once space is freed");
            acked.push("after".to_string());
            let names: Vec<String> = db.load().unwrap().into_iter().map(|(n, _)| n).collect();
            for a in &acked {
                assert!(names.contains(a), "{a} was acknowledged and lost");
            }
            drop(db);
            let db = CfgDb::open(&dir.join("data")).unwrap();
            let names: Vec<String> = db.load().unwrap().into_iter().map(|(n, _)| n).collect();
            assert_eq!(names.len(), acked.len(), "{names:?} vs {acked:?}");
        });
        let _ = std::process::Command::new("umount").arg(&dir).status();
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    #[test]
    fn writes_survive_reopening_and_the_epoch_grows() {
        let dir = std::env::temp_dir().join(format!("layercake-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = CfgDb::open(&dir).unwrap();
        assert_eq!(db.epoch(), 1);
        let n = Node {
            nodename: "n1".into(),
            phys_state: 2,
            ..Default::default()
        };
        db.put(&[("n1".into(), n.clone())]).unwrap();
        drop(db);
        let db = CfgDb::open(&dir).unwrap();
        assert_eq!(db.epoch(), 2);
        assert_eq!(db.load().unwrap(), vec![("n1".to_string(), n)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

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

use std::path::{Path, PathBuf};

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

/// The root's Cfg database.
pub struct CfgDb {
    db: Database,
    path: PathBuf,
    epoch: u64,
}

impl CfgDb {
    /// Opens (or creates) `dir/cfg.redb` and starts a new boot epoch.
    pub fn open(dir: &Path) -> Result<CfgDb, PersistError> {
        std::fs::create_dir_all(dir).map_err(|source| PersistError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).db(&path)?;
        let mut me = CfgDb { db, path, epoch: 0 };
        me.epoch = me.bump_epoch()?;
        Ok(me)
    }

    /// This run's boot epoch (1 on the first run).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The file in use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database itself, for the other tables the root keeps in the
    /// same file (the keyring, `crate::daemon::keyring`).
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn bump_epoch(&self) -> Result<u64, PersistError> {
        let tx = self.db.begin_write().db(&self.path)?;
        let epoch = {
            let mut meta = tx.open_table(META).db(&self.path)?;
            let old = meta.get(EPOCH_KEY).db(&self.path)?.map_or(0, |v| v.value());
            meta.insert(EPOCH_KEY, old + 1).db(&self.path)?;
            // Create the Cfg table so that readers always find it.
            tx.open_table(CFG).db(&self.path)?;
            old + 1
        };
        tx.commit().db(&self.path)?;
        Ok(epoch)
    }

    /// Every stored Cfg, by node name.
    pub fn load(&self) -> Result<Vec<(String, Node)>, PersistError> {
        let tx = self.db.begin_read().db(&self.path)?;
        let table = tx.open_table(CFG).db(&self.path)?;
        let mut out = Vec::new();
        for row in table.iter().db(&self.path)? {
            let (k, v) = row.db(&self.path)?;
            let name = k.value().to_owned();
            let node = Node::decode(v.value()).map_err(|_| PersistError::Corrupt {
                path: self.path.clone(),
                node: name.clone(),
            })?;
            out.push((name, node));
        }
        Ok(out)
    }

    /// Stores `nodes` in one transaction; returns once it is durable.
    pub fn put(&self, nodes: &[(String, Node)]) -> Result<(), PersistError> {
        let tx = self.db.begin_write().db(&self.path)?;
        {
            let mut table = tx.open_table(CFG).db(&self.path)?;
            for (name, node) in nodes {
                table
                    .insert(name.as_str(), node.encode_to_vec().as_slice())
                    .db(&self.path)?;
            }
        }
        tx.commit().db(&self.path)
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
    use super::*;

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

//! The data directory: created when missing, used when empty, refused when it holds anything
//! but a store of this format, and locked while a process uses it.
//!
//! A store's directory holds exactly three files: `FORMAT` (which says what the directory is,
//! and in which format), `lock` (held locked by the process using it) and `history.redb` (the
//! database). Nothing is ever written to a directory before these checks pass.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// What `FORMAT` says in a directory of this format.
const FORMAT_TEXT: &str = "switchboard data directory, format 2\n";
const FORMAT_FILE: &str = "FORMAT";
const LOCK_FILE: &str = "lock";
pub(crate) const DATABASE_FILE: &str = "history.redb";

/// A data directory this process holds: the lock is released when it is dropped (and by the
/// system when the process dies, even by `kill -9`).
#[derive(Debug)]
pub struct Directory {
    path: PathBuf,
    /// Locked for as long as the store is open.
    _lock: File,
    /// Whether the directory was empty (a new store).
    pub(crate) new: bool,
}

impl Directory {
    /// Checks `path`, creates it if missing, and locks it.
    pub fn open(path: &Path) -> Result<Directory, StoreError> {
        let failed = |what: &str, e: std::io::Error| {
            StoreError(format!("data directory {}: {what}: {e}", path.display()))
        };
        std::fs::create_dir_all(path).map_err(|e| failed("cannot create it", e))?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| failed("cannot list it", e))? {
            let entry = entry.map_err(|e| failed("cannot list it", e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        let new = names.is_empty();
        if !new {
            let format = std::fs::read_to_string(path.join(FORMAT_FILE)).unwrap_or_default();
            if format != FORMAT_TEXT {
                return Err(StoreError(format!(
                    "data directory {} is not empty and is not a Switchboard data directory of \
                     this version (its {FORMAT_FILE} file is missing or says something else); \
                     refusing to use it: give an empty or new directory",
                    path.display()
                )));
            }
            if let Some(other) = names
                .iter()
                .find(|name| ![FORMAT_FILE, LOCK_FILE, DATABASE_FILE].contains(&name.as_str()))
            {
                return Err(StoreError(format!(
                    "data directory {} holds a file that is not Switchboard's ({other}); \
                     refusing to use it",
                    path.display()
                )));
            }
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK_FILE))
            .map_err(|e| failed("cannot open its lock file", e))?;
        match fs4::FileExt::try_lock(&lock) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(StoreError(format!(
                    "data directory {} is in use by another Switchboard process (its lock file \
                     {} is locked); stop that process or give another directory",
                    path.display(),
                    path.join(LOCK_FILE).display()
                )));
            }
            Err(fs4::TryLockError::Error(e)) => return Err(failed("cannot lock it", e)),
        }
        let directory = Directory {
            path: path.to_owned(),
            _lock: lock,
            new,
        };
        if new {
            directory.write_format()?;
        }
        Ok(directory)
    }

    /// Writes `FORMAT`, durably, before anything else is written.
    fn write_format(&self) -> Result<(), StoreError> {
        let failed = |e: std::io::Error| {
            StoreError(format!(
                "data directory {}: cannot write {FORMAT_FILE}: {e}",
                self.path.display()
            ))
        };
        let mut file = File::create(self.path.join(FORMAT_FILE)).map_err(failed)?;
        file.write_all(FORMAT_TEXT.as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .map_err(failed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database file.
    pub(crate) fn database(&self) -> PathBuf {
        self.path.join(DATABASE_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "switchboard-store-dir-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    #[test]
    fn a_missing_directory_is_created_and_marked() {
        let path = scratch("missing").join("nested");
        let directory = Directory::open(&path).expect("opens");
        assert!(directory.new);
        assert_eq!(
            std::fs::read_to_string(path.join(FORMAT_FILE)).expect("FORMAT"),
            FORMAT_TEXT
        );
    }

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let path = scratch("locked");
        let first = Directory::open(&path).expect("opens");
        let second = Directory::open(&path).expect_err("refused");
        assert!(
            second.0.contains("in use by another Switchboard process"),
            "{second}"
        );
        drop(first);
        let again = Directory::open(&path).expect("opens once released");
        assert!(!again.new);
    }

    #[test]
    fn a_foreign_directory_is_refused_and_left_untouched() {
        let path = scratch("foreign");
        std::fs::create_dir_all(&path).expect("mkdir");
        std::fs::write(path.join("notes.txt"), "mine").expect("write");
        let refused = Directory::open(&path).expect_err("refused");
        assert!(
            refused.0.contains("not a Switchboard data directory"),
            "{refused}"
        );
        let names: Vec<_> = std::fs::read_dir(&path)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec!["notes.txt"], "nothing was added");

        std::fs::write(path.join(FORMAT_FILE), FORMAT_TEXT).expect("write");
        let refused = Directory::open(&path).expect_err("refused");
        assert!(refused.0.contains("notes.txt"), "{refused}");
    }
}

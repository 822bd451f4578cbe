//! `sub --cursor-file F`: where a subscriber keeps its cursor between runs.
//!
//! The file is replaced whole (a temporary file beside it, then `rename`), so a reader, or the
//! next run after a kill, sees either the old cursor or the new one, never half of one. It is
//! replaced only after what it covers has been written and flushed to stdout, so it is never
//! ahead of the output; the temporary file is written before the output, so that one `rename`
//! is all that separates them. No `fsync`: the page cache outlives a killed process; surviving a
//! power cut is not the goal, and an `fsync` per message would cost milliseconds.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::CliError;

/// A cursor file and the temporary file it is written through.
#[derive(Debug)]
pub struct CursorFile {
    path: PathBuf,
    temporary: PathBuf,
    /// What the file holds, or will once the prepared cursor is put in place, so that an
    /// unchanged cursor is not written again.
    written: Option<String>,
}

impl CursorFile {
    pub fn new(path: PathBuf) -> CursorFile {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        CursorFile {
            temporary: path.with_file_name(name),
            path,
            written: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cursor the file holds: `None` when it does not exist or is empty.
    pub fn read(&mut self) -> Result<Option<String>, CliError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let cursor = text.trim();
                if cursor.is_empty() {
                    return Ok(None);
                }
                self.written = Some(cursor.to_owned());
                Ok(Some(cursor.to_owned()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CliError::Failed(format!(
                "cannot read the cursor file {}: {e}",
                self.path.display()
            ))),
        }
    }

    /// Replaces the file's cursor with `cursor`, atomically.
    pub fn write(&mut self, cursor: &str) -> Result<(), CliError> {
        if self.prepare(cursor)? {
            self.replace()?;
        }
        Ok(())
    }

    /// Writes `cursor` to the temporary file, if it is not what the file holds already;
    /// returns whether [`replace`](Self::replace) has something to do. Preparing before the
    /// output is written leaves one `rename` between the output and the file.
    pub fn prepare(&mut self, cursor: &str) -> Result<bool, CliError> {
        if self.written.as_deref() == Some(cursor) {
            return Ok(false);
        }
        let mut file = std::fs::File::create(&self.temporary).map_err(|e| self.failed(e))?;
        file.write_all(format!("{cursor}\n").as_bytes())
            .map_err(|e| self.failed(e))?;
        self.written = Some(cursor.to_owned());
        Ok(true)
    }

    /// Puts the prepared cursor in place.
    pub fn replace(&mut self) -> Result<(), CliError> {
        std::fs::rename(&self.temporary, &self.path).map_err(|e| self.failed(e))
    }

    fn failed(&self, error: std::io::Error) -> CliError {
        CliError::Failed(format!(
            "cannot write the cursor file {}: {error}",
            self.path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_and_read_back() {
        let dir = std::env::temp_dir().join(format!("switchboard-cursor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("chat.cursor");
        let _ = std::fs::remove_file(&path);
        let mut file = CursorFile::new(path.clone());
        assert_eq!(file.read().expect("readable"), None);
        file.write("a-b-1").expect("written");
        file.write("a-b-2.c-d-3").expect("written");
        assert_eq!(
            std::fs::read_to_string(&path).expect("exists"),
            "a-b-2.c-d-3\n"
        );
        assert!(!dir.join("chat.cursor.tmp").exists());
        assert_eq!(
            CursorFile::new(path.clone()).read().expect("readable"),
            Some("a-b-2.c-d-3".into())
        );
        std::fs::write(&path, "\n").expect("emptied");
        assert_eq!(CursorFile::new(path).read().expect("readable"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The file layer the write paths go through (WAL, checkpoints, quarantine, control logs): the
//! real filesystem, plus a fault plan tests use to make the Nth write, fsync, truncate, rename or
//! create fail the way a full or failing disk does.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A file operation that failed: what was being done, to which path, and the system's error.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", .path.display())]
pub struct FileError {
    /// What was being done, e.g. `writing`.
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

impl FileError {
    /// `action` on `path` failed with `source`.
    pub fn new(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FileError { action, path: path.into(), source }
    }
}

/// An operation a [`Faults`] plan can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Creating a file or directory.
    Create,
    /// Writing bytes (an injected failure writes half of them first, like a short write).
    Write,
    /// `fsync` of a file or directory.
    Sync,
    /// Changing a file's length.
    Truncate,
    /// Renaming.
    Rename,
}

/// Which calls fail: the `at`-th counted call (1-based), and every later one if `sticky` (as a
/// full disk does; it still lets files shrink, so truncation only ever fails alone).
#[derive(Debug)]
pub struct Faults {
    calls: AtomicU64,
    at: AtomicU64,
    sticky: bool,
}

impl Faults {
    /// Only call `n` fails (a transient error).
    pub fn once(n: u64) -> Arc<Self> {
        Arc::new(Self { calls: AtomicU64::new(0), at: AtomicU64::new(n), sticky: false })
    }

    /// Call `n` and every later one fail (a disk that filled up).
    pub fn from(n: u64) -> Arc<Self> {
        Arc::new(Self { calls: AtomicU64::new(0), at: AtomicU64::new(n), sticky: true })
    }

    /// A plan that fails nothing until [`Faults::arm`]ed.
    pub fn disarmed(sticky: bool) -> Arc<Self> {
        Arc::new(Self { calls: AtomicU64::new(0), at: AtomicU64::new(u64::MAX), sticky })
    }

    /// Makes the `n`-th call from now the first to fail (1 = the next one).
    pub fn arm(&self, n: u64) {
        self.at.store(self.calls() + n, Ordering::Relaxed);
    }

    /// Fails nothing from now on (the disk was freed).
    pub fn disarm(&self) {
        self.at.store(u64::MAX, Ordering::Relaxed);
    }

    /// Calls counted so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn hit(&self, op: Op) -> bool {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let at = self.at.load(Ordering::Relaxed);
        n == at || (self.sticky && n > at && op != Op::Truncate)
    }
}

/// The filesystem as the write paths see it; clones share one fault plan.
#[derive(Debug, Clone, Default)]
pub struct Fs {
    faults: Option<Arc<Faults>>,
}

fn injected(op: Op, path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, format!("injected {op:?} fault on {}", path.display()))
}

impl Fs {
    /// The real filesystem, no faults.
    pub fn real() -> Self {
        Self::default()
    }

    /// The real filesystem with `faults` injected.
    pub fn faulty(faults: Arc<Faults>) -> Self {
        Self { faults: Some(faults) }
    }

    fn check(&self, op: Op, path: &Path) -> io::Result<()> {
        match &self.faults {
            Some(f) if f.hit(op) => Err(injected(op, path)),
            _ => Ok(()),
        }
    }

    /// `create_dir_all`.
    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Create, path)?;
        std::fs::create_dir_all(path)
    }

    /// Creates (or empties) `path` for writing.
    pub fn create(&self, path: &Path) -> io::Result<FsFile> {
        self.check(Op::Create, path)?;
        let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path)?;
        Ok(FsFile { fs: self.clone(), path: path.to_path_buf(), file })
    }

    /// Opens `path` for writing, creating it if missing, keeping what it holds.
    pub fn open_rw(&self, path: &Path) -> io::Result<FsFile> {
        if !path.exists() {
            self.check(Op::Create, path)?;
        }
        let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
        Ok(FsFile { fs: self.clone(), path: path.to_path_buf(), file })
    }

    /// Opens an existing `path` for writes that bypass the page cache (`O_DIRECT`: every
    /// buffer, offset and length a multiple of the device's block). An error where the
    /// filesystem does not support it (tmpfs), or off Linux.
    pub fn open_direct(&self, path: &Path) -> io::Result<FsFile> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(path)?;
            Ok(FsFile { fs: self.clone(), path: path.to_path_buf(), file })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(io::Error::new(io::ErrorKind::Unsupported, format!("no direct writes to {}", path.display())))
        }
    }

    /// `rename`.
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Rename, from)?;
        std::fs::rename(from, to)
    }

    /// Syncs directory `dir`, so entries created or renamed in it survive a crash.
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(Op::Sync, dir)?;
        File::open(dir)?.sync_all()
    }

    /// Replaces `path` with `bytes` through a synced temporary file and a rename, then syncs the
    /// directory: a crash leaves the old file or the new one, never a mix.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let written = self.create(&tmp).and_then(|mut f| {
            f.write_at(0, bytes)?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| self.rename(&tmp, path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        match path.parent() {
            Some(d) => self.sync_dir(d),
            None => Ok(()),
        }
    }
}

/// A file opened through [`Fs`].
#[derive(Debug)]
pub struct FsFile {
    fs: Fs,
    path: PathBuf,
    file: File,
}

impl FsFile {
    /// Writes all of `bytes` at `offset`.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.fs.check(Op::Write, &self.path) {
            // What a disk that fills mid-write leaves behind.
            let _ = self.file.write_all_at(&bytes[..bytes.len() / 2], offset);
            return Err(e);
        }
        self.file.write_all_at(bytes, offset)
    }

    /// `fdatasync`.
    pub fn sync_data(&mut self) -> io::Result<()> {
        self.fs.check(Op::Sync, &self.path)?;
        self.file.sync_data()
    }

    /// `fsync`.
    pub fn sync_all(&mut self) -> io::Result<()> {
        self.fs.check(Op::Sync, &self.path)?;
        self.file.sync_all()
    }

    /// `ftruncate`.
    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.fs.check(Op::Truncate, &self.path)?;
        self.file.set_len(len)
    }

    /// Current length on disk.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nth_call_fails_and_sticky_plans_keep_failing() {
        let dir = tempfile::tempdir().unwrap();
        let once = Fs::faulty(Faults::once(2));
        let mut f = once.create(&dir.path().join("a")).unwrap();
        let e = f.write_at(0, b"abcd").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"ab", "a short write is left behind");
        f.write_at(0, b"abcd").unwrap();
        f.sync_data().unwrap();

        let sticky = Fs::faulty(Faults::from(2));
        sticky.create_dir_all(&dir.path().join("d")).unwrap();
        assert!(sticky.write_atomic(&dir.path().join("b"), b"x").is_err());
        assert!(sticky.rename(&dir.path().join("a"), &dir.path().join("c")).is_err());
        assert!(!dir.path().join("b").exists() && !dir.path().join("b.tmp").exists());
        Fs::real().write_atomic(&dir.path().join("b"), b"x").unwrap();
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"x");
    }
}

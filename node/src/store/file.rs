//! One durable object on disk: `[magic "FLS1", body length u64 LE, BLAKE3(body)] ‖ body`.
//!
//! Written to a temporary file in the same directory, fsynced, renamed over the final name and
//! the directory fsynced: after a crash (kill -9, power loss) the file is either the whole
//! verified object or absent. The checksum catches later corruption on read.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 4] = b"FLS1";
pub const HEADER_LEN: usize = 4 + 8 + 32;
/// Prefix of temporary files; they are removed when the store opens.
pub const TMP_PREFIX: &str = ".tmp-";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: corrupt ({why})")]
    Corrupt { path: String, why: &'static str },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Write `body` to `dir/name` atomically. Returns the bytes written (header included).
pub fn write_atomic(dir: &Path, name: &str, body: &[u8]) -> io::Result<u64> {
    write_atomic_parts(dir, name, &[body])
}

/// Like [`write_atomic`], with the body given as consecutive parts (saves assembling a copy).
pub fn write_atomic_parts(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<u64> {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TMP_PREFIX}{name}-{}-{n}", std::process::id()));
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let result = (|| {
        let mut f = File::create(&tmp)?;
        let mut hasher = blake3::Hasher::new();
        for p in parts {
            hasher.update(p);
        }
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(MAGIC);
        header[4..12].copy_from_slice(&(len as u64).to_le_bytes());
        header[12..].copy_from_slice(hasher.finalize().as_bytes());
        f.write_all(&header)?;
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| (HEADER_LEN + len) as u64)
}

/// Like [`write_atomic_parts`] to `path` (in `dir`), with the temporary file in `tmp_dir` (same
/// file system), so that leftovers of a crash sit in one place that is emptied at start.
pub fn write_atomic_parts_via(
    tmp_dir: &Path,
    dir: &Path,
    path: &Path,
    parts: &[&[u8]],
) -> io::Result<u64> {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = tmp_dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let result = (|| {
        let mut f = File::create(&tmp)?;
        let mut hasher = blake3::Hasher::new();
        for p in parts {
            hasher.update(p);
        }
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(MAGIC);
        header[4..12].copy_from_slice(&(len as u64).to_le_bytes());
        header[12..].copy_from_slice(hasher.finalize().as_bytes());
        f.write_all(&header)?;
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        // the blob's directory may be new: make its entry durable too
        match dir.parent() {
            Some(parent) => File::open(parent)?.sync_all(),
            None => Ok(()),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| (HEADER_LEN + len) as u64)
}

/// Read and check an object written by [`write_atomic`].
pub fn read_checked(path: &Path) -> Result<Vec<u8>, FileError> {
    let mut f = File::open(path)?;
    let mut all = Vec::with_capacity(f.metadata().map(|m| m.len() as usize).unwrap_or(0));
    f.read_to_end(&mut all)?;
    let corrupt = |why| FileError::Corrupt {
        path: path.display().to_string(),
        why,
    };
    if all.len() < HEADER_LEN || &all[..4] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let len = u64::from_le_bytes(all[4..12].try_into().expect("8 bytes")) as usize;
    if all.len() - HEADER_LEN != len {
        return Err(corrupt("wrong length"));
    }
    if blake3::hash(&all[HEADER_LEN..]).as_bytes() != &all[12..HEADER_LEN] {
        return Err(corrupt("checksum mismatch"));
    }
    all.drain(..HEADER_LEN);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let n = write_atomic(dir.path(), "x", b"hello world").unwrap();
        assert_eq!(n, HEADER_LEN as u64 + 11);
        assert_eq!(read_checked(&dir.path().join("x")).unwrap(), b"hello world");
        let mut raw = fs::read(dir.path().join("x")).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        fs::write(dir.path().join("x"), &raw).unwrap();
        assert!(matches!(
            read_checked(&dir.path().join("x")),
            Err(FileError::Corrupt { .. })
        ));
        raw.truncate(20);
        fs::write(dir.path().join("x"), &raw).unwrap();
        assert!(matches!(
            read_checked(&dir.path().join("x")),
            Err(FileError::Corrupt { .. })
        ));
        // no temporary files left behind
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }
}

//! The node's Ed25519 key, created on first start and kept in the data directory.

use std::fs;
use std::io;
use std::path::Path;

use ed25519_dalek::SigningKey;

/// Load the key from `path`, creating it (mode 0600) on first start.
pub fn load_or_create(path: &Path) -> io::Result<SigningKey> {
    let path = path.to_path_buf();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    match fs::read(&path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: expected a 32-byte key", path.display()),
                )
            })?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
            fs::create_dir_all(&dir)?;
            // a temp name of our own: several nodes may create keys in one directory at once
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
            let name = path
                .file_name()
                .map_or("node.key".into(), |n| n.to_string_lossy());
            let tmp = dir.join(format!(
                ".{name}.{}.{}.tmp",
                std::process::id(),
                hex::encode(nonce)
            ));
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&seed)?;
                f.sync_all()?;
            }
            // link, not rename: if another process created the key meanwhile, its key wins
            // and both use it (a rename would replace a key someone already uses)
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    if let Ok(d) = fs::File::open(&dir) {
                        let _ = d.sync_all();
                    }
                    tracing::info!(path = %path.display(), "created a new node key");
                    Ok(SigningKey::from_bytes(&seed))
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load_or_create(&path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_creation_in_one_directory_yields_one_key_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let p = dir.path().join(format!("k{}.key", i % 4));
                std::thread::spawn(move || (i % 4, load_or_create(&p).unwrap().to_bytes()))
            })
            .collect();
        let mut keys: std::collections::BTreeMap<usize, [u8; 32]> = Default::default();
        for h in handles {
            let (f, k) = h.join().unwrap();
            assert_eq!(*keys.entry(f).or_insert(k), k, "two keys for file {f}");
        }
        assert_eq!(keys.len(), 4);
        for (f, k) in keys {
            let p = dir.path().join(format!("k{f}.key"));
            assert_eq!(
                fs::read(&p).unwrap(),
                k,
                "the key in use is the one on disk"
            );
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }
}

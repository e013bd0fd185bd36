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
            let tmp = dir.join(".node.key.tmp");
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&seed)?;
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            tracing::info!(path = %path.display(), "created a new node key");
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(e),
    }
}

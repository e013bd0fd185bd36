//! The registry made durable: every event is appended to a journal and synced before its
//! outcome is acted on or answered, so a control plane killed at any moment (`kill -9`) comes
//! back with every confirmed registration and no charge for one it did not confirm (an event
//! is one line: its charge and its lifetime are applied together or not at all).
//!
//! ```text
//! DIR/control.key     the control plane's Ed25519 key (0600): nodes verify lifetimes under it
//! DIR/economy.log     one event per line: `<first 16 hex of BLAKE3(json)> <json>`
//! ```
//! A torn last line (a crash mid-write) fails its checksum and is cut off on open.

use std::fs;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use super::registry::{Event, MarketSettings, Outcome, Registry};

pub const KEY_FILE: &str = "control.key";
pub const JOURNAL_FILE: &str = "economy.log";

#[derive(Debug, thiserror::Error)]
pub enum EconomyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("encoding an event: {0}")]
    Encode(String),
}

/// The registry and its journal.
pub struct Economy {
    registry: Registry,
    journal: Option<(PathBuf, fs::File)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EconomyError + '_ {
    move |source| EconomyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Load the control key from `path`, or create it (0600).
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, EconomyError> {
    match fs::read(path) {
        Ok(b) => {
            let b: [u8; 32] = b.as_slice().try_into().map_err(|_| EconomyError::Corrupt {
                path: path.to_path_buf(),
                message: format!("expected a 32-byte key, found {} bytes", b.len()),
            })?;
            Ok(SigningKey::from_bytes(&b))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).map_err(|e| EconomyError::Corrupt {
                path: path.to_path_buf(),
                message: format!("no OS randomness: {e}"),
            })?;
            let tmp = path.with_extension("tmp");
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(&tmp))?;
            f.write_all(&k).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            fs::rename(&tmp, path).map_err(io(path))?;
            Ok(SigningKey::from_bytes(&k))
        }
        Err(e) => Err(io(path)(e)),
    }
}

fn checksum(json: &str) -> String {
    hex::encode(&blake3::hash(json.as_bytes()).as_bytes()[..8])
}

impl Economy {
    /// A registry kept in memory only (tests, benchmarks, bodies without a disk).
    pub fn in_memory(key: SigningKey, settings: MarketSettings) -> Self {
        Self {
            registry: Registry::new(key, settings),
            journal: None,
        }
    }

    /// Open (or create) the key and the journal in `dir` and replay the journal.
    pub fn open(dir: &Path, settings: MarketSettings) -> Result<Self, EconomyError> {
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        Self::open_with_key(dir, key, settings)
    }

    /// Open (or create) the journal in `dir` under `key` (kept elsewhere: on Kubernetes in the
    /// cluster's Secret, so the operator knows the public half without asking the pod).
    pub fn open_with_key(
        dir: &Path,
        key: SigningKey,
        settings: MarketSettings,
    ) -> Result<Self, EconomyError> {
        let mut registry = Registry::new(key, settings);
        let path = dir.join(JOURNAL_FILE);
        let mut good = 0u64;
        let mut events = 0u64;
        if let Ok(f) = fs::File::open(&path) {
            let mut r = std::io::BufReader::new(f);
            let mut line = String::new();
            loop {
                line.clear();
                let n = r.read_line(&mut line).map_err(io(&path))?;
                if n == 0 {
                    break;
                }
                let ok = line.ends_with('\n')
                    && line.split_once(' ').is_some_and(|(sum, json)| {
                        let json = json.trim_end_matches('\n');
                        checksum(json) == sum
                            && serde_json::from_str::<Event>(json)
                                .map(|ev| {
                                    registry.apply(&ev);
                                })
                                .is_ok()
                    });
                if !ok {
                    tracing::warn!(path = %path.display(), at = good, "cutting a torn or corrupt journal tail");
                    break;
                }
                good += n as u64;
                events += 1;
            }
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        file.set_len(good).map_err(io(&path))?;
        tracing::info!(events, head = registry.head(), "economy journal replayed");
        Ok(Self {
            registry,
            journal: Some((path, file)),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Journal `events` (one sync for all), then apply them; the outcomes in order.
    pub fn submit_all(&mut self, events: &[Event]) -> Result<Vec<Outcome>, EconomyError> {
        if let Some((path, f)) = &mut self.journal {
            let mut buf = String::new();
            for ev in events {
                let json =
                    serde_json::to_string(ev).map_err(|e| EconomyError::Encode(e.to_string()))?;
                buf.push_str(&checksum(&json));
                buf.push(' ');
                buf.push_str(&json);
                buf.push('\n');
            }
            f.write_all(buf.as_bytes()).map_err(io(path))?;
            f.sync_data().map_err(io(path))?;
        }
        Ok(events.iter().map(|e| self.registry.apply(e)).collect())
    }

    pub fn submit(&mut self, event: Event) -> Result<Outcome, EconomyError> {
        Ok(self
            .submit_all(std::slice::from_ref(&event))?
            .pop()
            .unwrap_or(Outcome::Done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_node::protocol::AccountId;

    fn settings() -> MarketSettings {
        MarketSettings {
            max_epochs_ahead: 10,
            faucet_grant: 100,
        }
    }

    #[test]
    fn reopening_replays_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let a = AccountId([1; 32]);
        {
            let mut e = Economy::open(dir.path(), settings()).unwrap();
            e.submit(Event::Faucet {
                account: a,
                amount: 70,
            })
            .unwrap();
        }
        // a crash in the middle of the next line
        let path = dir.path().join(JOURNAL_FILE);
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"0123456789abcdef {\"event\":\"fau").unwrap();
        drop(f);
        let mut e = Economy::open(dir.path(), settings()).unwrap();
        assert_eq!(e.registry().account(&a).unwrap().balance, 70);
        e.submit(Event::Faucet {
            account: a,
            amount: 5,
        })
        .unwrap();
        let e = Economy::open(dir.path(), settings()).unwrap();
        assert_eq!(e.registry().account(&a).unwrap().balance, 75);
        // the same key across restarts
        let k1 = load_or_create_key(&dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(k1.verifying_key().to_bytes(), e.registry().control_key());
        fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(
            Economy::open(dir.path(), settings()),
            Err(EconomyError::Corrupt { .. })
        ));
    }
}

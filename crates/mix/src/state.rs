//! What a node keeps across restarts: the replay filters of its mix keys.
//!
//! A node that keeps its mix key across a restart (no rotation, as reference nodes run) must
//! remember which packets it processed before, or every packet captured before the restart
//! could be sent to it again and followed through the network. The filters are saved to
//! `<state_dir>/replay.state`:
//!
//! ```text
//!   "MIXRPLY1" | clean u8 | keys u32 | per key: public key [32] | stages u32 |
//!     per stage: seed u128 | hashes u32 | tags u64 | words u64 | words × u64   (all LE)
//!   | SHA-256 of everything before it [32]
//! ```
//!
//! Writes are atomic: a temporary file is written, synced and renamed over the old one, so a
//! crash leaves either the old state or the new. On load:
//! - no file: a first start; the node starts with empty filters (logged);
//! - a file that does not verify (checksum, structure, sizes): [`StateError::Corrupt`]. The node
//!   cannot tell which packets it saw, so it refuses to start instead of accepting them again;
//!   the operator deletes the file to accept that risk, or rotates the mix key;
//! - a file saved periodically rather than at a clean stop (`clean = 0`): loaded, and the node
//!   warns that packets of the last save interval before the stop are missing from it.
//!
//! Filters are matched to keys by public key: with key rotation a node starts with fresh keys,
//! so nothing old matches, and no packet built for an old key opens at all.
//!
//! One node at a time: [`StateFile::open`] takes an exclusive lock on `<state_dir>/replay.lock`
//! for as long as the node (or a save still running) uses the directory. A second process
//! pointed at the same directory would otherwise load the file, save over the running
//! node's newer one when it stops, and share its temporary file. The directory is created
//! readable by its owner only, and so is every file written: the filters' hash seeds are
//! derived from the mix key and should stay as private.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::core::{MAX_HASHES, MAX_STAGES, ReplaySnapshot, ReplayState, StageSnapshot};

const MAGIC: &[u8; 8] = b"MIXRPLY1";
const FILE: &str = "replay.state";
const LOCK: &str = "replay.lock";
/// How long [`StateFile::open`] waits for the lock: a node restarted in the same process may
/// still have a save of its previous run finishing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// The most keys a node holds at once (previous, current, next).
const MAX_KEYS: u32 = 3;

/// The replay state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading or writing the file (or creating the directory) failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another node (in this process or another) holds the directory's lock.
    #[error(
        "{path}: locked by another node; two nodes must not share a state directory (each \
         would save over the other's replay state)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The file is there but does not verify: the node does not know which packets it saw.
    #[error(
        "{path}: replay state is damaged ({why}); refusing to start, since packets processed \
         before could be replayed. Delete the file to accept that risk, or rotate the mix key"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The replay state file in a state directory. Clones share a lock: saves never interleave,
/// and a snapshot never replaces one taken after it.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    /// Holds the directory's lock while any clone lives.
    _lock: std::sync::Arc<fs::File>,
    /// The generation of the snapshot on disk.
    written: std::sync::Arc<std::sync::Mutex<u64>>,
    taken: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl StateFile {
    /// The state file in `dir`, creating the directory (owner only) if needed, and locking
    /// it for this node: [`StateError::Locked`] if another holds it.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        private_dir(dir).map_err(io_error(dir))?;
        let lock_path = dir.join(LOCK);
        let lock = private_file(&lock_path, false).map_err(io_error(&lock_path))?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StateError::Locked { path: lock_path });
                }
                Err(fs::TryLockError::Error(source)) => {
                    return Err(StateError::Io { path: lock_path, source });
                }
            }
        }
        Ok(Self {
            path: dir.join(FILE),
            _lock: std::sync::Arc::new(lock),
            written: Default::default(),
            taken: Default::default(),
        })
    }

    /// How long ago the file was last written, if it exists and the clock allows.
    pub fn age(&self) -> Option<std::time::Duration> {
        fs::metadata(&self.path).ok()?.modified().ok()?.elapsed().ok()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, or `None` if there is no file.
    pub fn load(&self) -> Result<Option<ReplayState>, StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path: self.path.clone(), source }),
        };
        decode(&bytes).map(Some).map_err(|why| StateError::Corrupt { path: self.path.clone(), why })
    }

    /// Saves `state`: written to a temporary file, synced, then renamed over the old one.
    pub fn save(&self, state: &ReplayState) -> Result<(), StateError> {
        self.save_generation(state, self.generation())
    }

    /// A number for a snapshot about to be taken, later than any taken before.
    pub fn generation(&self) -> u64 {
        self.taken.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1
    }

    /// Saves `state`, a snapshot numbered by [`Self::generation`] when it was taken, unless a
    /// later snapshot is on disk already (a slow background save finishing after the save of
    /// a clean stop must not bring back tags the stop's snapshot held).
    pub fn save_generation(&self, state: &ReplayState, generation: u64) -> Result<(), StateError> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if *written >= generation {
            return Ok(());
        }
        let io_error = |source| StateError::Io { path: self.path.clone(), source };
        let tmp = self.path.with_extension("state.tmp");
        let mut file = private_file(&tmp, true).map_err(io_error)?;
        file.write_all(&encode(state)).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(io_error)?;
        if let Some(dir) = self.path.parent()
            && let Ok(dir) = fs::File::open(dir)
        {
            // Makes the rename itself durable; not every platform can sync a directory.
            let _ = dir.sync_all();
        }
        *written = generation;
        Ok(())
    }
}

/// Creates `dir` (and its parents) if missing, the last one readable by its owner only. An
/// existing directory keeps its mode: it is the operator's.
fn private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Opens `path` for writing, creating it readable by its owner only; `truncate` empties it.
fn private_file(path: &Path, truncate: bool) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    // A file left by an older version keeps its mode when opened: set it.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(file)
}

/// The file's bytes for `state`.
pub fn encode(state: &ReplayState) -> Vec<u8> {
    let words: usize = state.keys.iter().flat_map(|(_, s)| &s.stages).map(|s| s.bits.len()).sum();
    let mut out = Vec::with_capacity(64 + words * 8);
    out.extend_from_slice(MAGIC);
    out.push(u8::from(state.clean));
    out.extend_from_slice(&(state.keys.len() as u32).to_le_bytes());
    for (key, snapshot) in &state.keys {
        out.extend_from_slice(key);
        out.extend_from_slice(&(snapshot.stages.len() as u32).to_le_bytes());
        for stage in &snapshot.stages {
            out.extend_from_slice(&stage.seed.to_le_bytes());
            out.extend_from_slice(&stage.hashes.to_le_bytes());
            out.extend_from_slice(&stage.len.to_le_bytes());
            out.extend_from_slice(&(stage.bits.len() as u64).to_le_bytes());
            for word in &stage.bits {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Reads what [`encode`] wrote; every length is checked against the bytes present before
/// anything is allocated.
pub fn decode(bytes: &[u8]) -> Result<ReplayState, &'static str> {
    let (body, digest) = bytes.split_last_chunk::<32>().ok_or("shorter than its checksum")?;
    if Sha256::digest(body).as_slice() != digest {
        return Err("checksum mismatch");
    }
    let mut r = Reader(body);
    if r.take(8)? != MAGIC {
        return Err("not a replay state file");
    }
    let clean = match r.take(1)?[0] {
        0 => false,
        1 => true,
        _ => return Err("bad clean flag"),
    };
    let keys = r.u32()?;
    if keys > MAX_KEYS {
        return Err("too many keys");
    }
    let mut out = Vec::with_capacity(keys as usize);
    for _ in 0..keys {
        let key: [u8; 32] = r.take(32)?.try_into().map_err(|_| "short key")?;
        let stages = r.u32()?;
        if stages == 0 || stages as usize > MAX_STAGES {
            return Err("bad stage count");
        }
        let mut snapshot = ReplaySnapshot { stages: Vec::with_capacity(stages as usize) };
        let mut tags = 0usize;
        for _ in 0..stages {
            let seed = u128::from_le_bytes(r.take(16)?.try_into().map_err(|_| "short seed")?);
            let hashes = r.u32()?;
            if hashes == 0 || hashes > MAX_HASHES {
                return Err("bad hash count");
            }
            let len = r.u64()?;
            tags = usize::try_from(len)
                .ok()
                .and_then(|n| tags.checked_add(n))
                .ok_or("bad tag count")?;
            let words = usize::try_from(r.u64()?).map_err(|_| "bad word count")?;
            if words == 0 {
                return Err("empty stage");
            }
            let raw = r.take(words.checked_mul(8).ok_or("bad word count")?)?;
            let bits = raw
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            snapshot.stages.push(StageSnapshot { seed, hashes, len, bits });
        }
        out.push((key, snapshot));
    }
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(ReplayState { clean, keys: out })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "truncated")?))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "truncated")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ReplayState {
        ReplayState {
            clean: true,
            keys: vec![(
                [7; 32],
                ReplaySnapshot {
                    stages: vec![StageSnapshot {
                        seed: 42,
                        hashes: 20,
                        len: 3,
                        bits: vec![1, 2, 3],
                    }],
                },
            )],
        }
    }

    /// A background save of an older snapshot that finishes after the save of a clean stop
    /// used to replace it, so a restart forgot the tags of the last seconds.
    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = std::env::temp_dir().join(format!("mix-state-gen-{}", std::process::id()));
        let file = StateFile::open(&dir).unwrap();
        let older = file.generation();
        let newer = file.generation();
        let mut late = state();
        late.clean = false;
        file.save_generation(&state(), newer).unwrap();
        file.save_generation(&late, older).unwrap();
        assert_eq!(file.load().unwrap(), Some(state()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn state_round_trips_and_damage_is_refused() {
        let bytes = encode(&state());
        assert_eq!(decode(&bytes).unwrap(), state());
        for i in [0, 8, 9, 13, 50, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert_eq!(decode(&bad), Err("checksum mismatch"), "byte {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 5]).is_err());
        assert!(decode(&[]).is_err());
        // A checksummed file that claims more words than it holds allocates nothing.
        let mut huge = bytes[..bytes.len() - 32 - 24].to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        let digest = Sha256::digest(&huge);
        huge.extend_from_slice(&digest);
        assert!(decode(&huge).is_err());
        // Checksummed but unusable stages: refused here, where the node refuses to start,
        // rather than skipped later (the key would then have started with an empty filter).
        for (hashes, bits) in [(0, vec![1]), (MAX_HASHES + 1, vec![1]), (20, vec![])] {
            let mut unusable = state();
            unusable.keys[0].1.stages[0].hashes = hashes;
            unusable.keys[0].1.stages[0].bits = bits;
            assert!(decode(&encode(&unusable)).is_err(), "{hashes} hashes");
        }
        let mut overflowing = state();
        let stage = overflowing.keys[0].1.stages[0].clone();
        overflowing.keys[0].1.stages =
            vec![StageSnapshot { len: u64::MAX, ..stage.clone() }, stage];
        assert_eq!(decode(&encode(&overflowing)), Err("bad tag count"));
    }

    /// Two nodes on one state directory each saved over the other's replay state (the second
    /// loaded the file and, on failing to start, saved its older copy as a clean stop).
    #[test]
    fn a_state_directory_serves_one_node_at_a_time() {
        let dir = std::env::temp_dir().join(format!("mix-state-lock-{:x}", rand::random::<u64>()));
        let first = StateFile::open(&dir).unwrap();
        let started = std::time::Instant::now();
        let err = StateFile::open(&dir).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        assert!(started.elapsed() >= LOCK_WAIT, "gave up before the wait");
        // A clone (a save still running) keeps the lock; the last one gone frees it.
        let saving = first.clone();
        drop(first);
        assert!(matches!(StateFile::open(&dir), Err(StateError::Locked { .. })));
        drop(saving);
        let again = StateFile::open(&dir).unwrap();
        again.save(&state()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700, "directory");
            assert_eq!(mode(again.path()), 0o600, "state file");
            assert_eq!(mode(&dir.join(LOCK)), 0o600, "lock file");
        }
        assert!(again.age().unwrap() < std::time::Duration::from_secs(60));
        drop(again);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn saves_are_atomic_and_corruption_is_an_error() {
        let dir = std::env::temp_dir().join(format!("mix-state-{:x}", rand::random::<u64>()));
        let file = StateFile::open(&dir).unwrap();
        assert!(file.load().unwrap().is_none(), "no file: first start");
        file.save(&state()).unwrap();
        assert_eq!(file.load().unwrap(), Some(state()));
        assert!(!dir.join("replay.state.tmp").exists());
        let mut bytes = fs::read(file.path()).unwrap();
        bytes[20] ^= 0x80;
        fs::write(file.path(), &bytes).unwrap();
        let err = file.load().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { why: "checksum mismatch", .. }), "{err}");
        assert!(err.to_string().contains("refusing to start"), "{err}");
        let _ = fs::remove_dir_all(dir);
    }
}

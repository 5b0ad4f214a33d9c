//! Small state files of the broker (topics, consumer offsets), written
//! atomically and kept with a backup.
//!
//! Every file has one [`StateFile`] per process ([`StateFile::for_path`]),
//! shared by every writer of it (actor restarts included). A change is
//! [`StateFile::stage`]d (the newest staged state replaces an older one not
//! yet written) and then [`StateFile::wait`]ed for on a blocking thread
//! ([`StateFile::persist`] does both):
//! one write is in flight per file; whoever waits while none is writes the
//! newest staged state, so changes made during a write are coalesced into
//! the next one, no staged state is lost, and an older state is never
//! written after a newer one.
//!
//! One write: MessagePack into a temp file of its own
//! (`<file>.tmp.<pid>.<seq>`), fsync; the current `<file>`, if it is
//! well-formed MessagePack, becomes `<file>.bak` (hard link, renamed into
//! place); rename the temp file over `<file>`; fsync the directory. A crash
//! leaves the old or the new file, never a torn one.
//!
//! [`load_or_backup`] reads `<file>`; when it is torn or garbage it logs
//! one line naming it and falls back to `<file>.bak`, and fails with that
//! one-line error only when there is no good backup.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};

use actix::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use slog::{Logger, error, warn};

use crate::runtime::ServiceError;

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// File-system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file exists but does not decode.
    #[error("{path}: corrupt state file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The backup of `path`: `<path>.bak`.
pub fn backup_path(path: &Path) -> PathBuf {
    with_suffix(path, ".bak")
}

/// Loads `path`, or `None` when it does not exist yet. No fallback.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, PersistError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    rmp_serde::from_slice(&bytes)
        .map(Some)
        .map_err(|e| PersistError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Loads `path` (`None` when it does not exist). When it exists but cannot
/// be read or decoded, logs one line naming it and falls back to
/// `<path>.bak`; with no good backup, returns that first error. Also
/// removes temp files that writers of other (dead) processes left behind.
pub fn load_or_backup<T: DeserializeOwned>(
    path: &Path,
    logger: &Logger,
) -> Result<Option<T>, PersistError> {
    remove_stale_temps(path);
    let err = match load(path) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let bak = backup_path(path);
    error!(logger, "{err}");
    match load(&bak) {
        Ok(Some(v)) => {
            warn!(logger, "using the last good copy {}", bak.display());
            Ok(Some(v))
        }
        Ok(None) => Err(err),
        Err(bak_err) => {
            error!(logger, "{bak_err}");
            Err(err)
        }
    }
}

/// Removes `<file>.tmp` (older versions) and `<file>[.bak].tmp.<pid>.*`
/// of pids other than ours. Best effort.
fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Ok(entries) = fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return;
    };
    let me = std::process::id().to_string();
    for e in entries.flatten() {
        let f = e.file_name();
        let Some(f) = f.to_str() else { continue };
        let rest = f
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix(".bak").or(Some(r)))
            .and_then(|r| r.strip_prefix(".tmp"));
        let stale = match rest {
            Some("") => true,
            Some(r) => r
                .strip_prefix('.')
                .and_then(|r| r.split('.').next())
                .is_some_and(|pid| pid != me),
            None => false,
        };
        if stale {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[derive(Default)]
struct Shared {
    next_seq: u64,
    /// The newest staged state not yet taken by a writer.
    pending: Option<(u64, Vec<u8>)>,
    writing: bool,
    /// Every state staged up to here is on disk (or superseded by one that is).
    durable: u64,
    /// The newest failed write: its seq and error.
    failed: Option<(u64, io::ErrorKind, String)>,
    /// Writes done (tests: coalescing).
    writes: u64,
}

/// The writer of one state file; see the module docs.
pub struct StateFile {
    path: PathBuf,
    shared: Mutex<Shared>,
    written: Condvar,
}

impl std::fmt::Debug for StateFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFile")
            .field("path", &self.path)
            .finish()
    }
}

impl StateFile {
    /// The process-wide writer of `path`.
    pub fn for_path(path: &Path) -> Arc<StateFile> {
        static FILES: Mutex<BTreeMap<PathBuf, Weak<StateFile>>> = Mutex::new(BTreeMap::new());
        let mut files = FILES.lock().unwrap_or_else(PoisonError::into_inner);
        files.retain(|_, w| w.strong_count() > 0);
        if let Some(f) = files.get(path).and_then(Weak::upgrade) {
            return f;
        }
        let f = Arc::new(StateFile {
            path: path.to_path_buf(),
            shared: Mutex::new(Shared::default()),
            written: Condvar::new(),
        });
        files.insert(path.to_path_buf(), Arc::downgrade(&f));
        f
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stages `value` as the newest state (never blocks on I/O); returns
    /// the ticket to [`StateFile::wait`] for. Call in change order.
    pub fn stage<T: Serialize>(&self, value: &T) -> Result<u64, PersistError> {
        let bytes = rmp_serde::to_vec_named(value).map_err(|e| PersistError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let mut s = self.lock();
        s.next_seq += 1;
        let seq = s.next_seq;
        s.pending = Some((seq, bytes));
        Ok(seq)
    }

    /// Blocks until the state of `seq` (or a newer one) is on disk,
    /// writing it when no other write is in flight.
    pub fn wait(&self, seq: u64) -> Result<(), PersistError> {
        let mut s = self.lock();
        loop {
            if s.durable >= seq {
                return Ok(());
            }
            if let Some((failed, kind, msg)) = &s.failed {
                if *failed >= seq {
                    return Err(PersistError::Io {
                        path: self.path.clone(),
                        source: io::Error::new(*kind, msg.clone()),
                    });
                }
            }
            if s.writing {
                s = self.written.wait(s).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let Some((take, bytes)) = s.pending.take() else {
                // Not durable, not failed, not pending: cannot happen
                // (a staged seq is pending until a writer takes it).
                return Err(PersistError::Io {
                    path: self.path.clone(),
                    source: io::Error::other("state lost before it was written"),
                });
            };
            s.writing = true;
            drop(s);
            let res = write_atomic(&self.path, &bytes, take);
            s = self.lock();
            s.writing = false;
            s.writes += 1;
            match res {
                Ok(()) => s.durable = s.durable.max(take),
                Err(PersistError::Io { source, .. }) => {
                    s.failed = Some((take, source.kind(), source.to_string()));
                }
                Err(e) => s.failed = Some((take, io::ErrorKind::Other, e.to_string())),
            }
            self.written.notify_all();
        }
    }
}

impl StateFile {
    /// Stages `value` now (call in change order) and resolves once it, or
    /// a newer state, is on disk; the write runs on a blocking thread.
    pub fn persist<T: Serialize>(
        self: &Arc<Self>,
        value: &T,
    ) -> impl Future<Output = Result<(), PersistError>> + use<T> {
        let state = Arc::clone(self);
        let staged = state.stage(value);
        async move {
            let seq = staged?;
            let path = state.path.clone();
            actix_rt::task::spawn_blocking(move || state.wait(seq))
                .await
                .unwrap_or_else(|e| {
                    Err(PersistError::Io {
                        path,
                        source: io::Error::other(e.to_string()),
                    })
                })
        }
    }
}

/// The reply of a change an actor acknowledges only once its state file
/// holds it: `write` (from [`StateFile::persist`]) done, or a failed write
/// logged (naming `what`), the actor stopped (its supervisor reloads the
/// last good file) and `SYSTEM_ERROR` answered.
pub fn written_or_stop<A>(
    write: impl Future<Output = Result<(), PersistError>> + 'static,
    logger: Logger,
    what: &'static str,
) -> impl ActorFuture<A, Output = Result<(), ServiceError>>
where
    A: Actor<Context = Context<A>>,
{
    actix::fut::wrap_future::<_, A>(write).map(move |res, _act, ctx| {
        res.map_err(|e| {
            error!(logger, "cannot persist state"; "what" => what, "error" => %e);
            ctx.stop();
            ServiceError::system(format!("cannot persist {what}: {e}"))
        })
    })
}

/// Stages `value` for `path` and waits until it (or a newer state) is on
/// disk (see the module docs). Run on a blocking thread.
pub fn store<T: Serialize>(path: &Path, value: &T) -> Result<(), PersistError> {
    let file = StateFile::for_path(path);
    let seq = file.stage(value)?;
    file.wait(seq)
}

/// Whether `path` holds well-formed MessagePack (any value).
fn well_formed(path: &Path) -> bool {
    fs::read(path)
        .ok()
        .is_some_and(|b| rmp_serde::from_slice::<serde::de::IgnoredAny>(&b).is_ok())
}

fn write_atomic(path: &Path, bytes: &[u8], seq: u64) -> Result<(), PersistError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let pid = std::process::id();
    let tmp = with_suffix(path, &format!(".tmp.{pid}.{seq}"));
    let res = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        // Keep the previous good copy (not a torn or garbage one).
        if well_formed(path) {
            let bak = backup_path(path);
            let bak_tmp = with_suffix(path, &format!(".bak.tmp.{pid}.{seq}"));
            let _ = fs::remove_file(&bak_tmp);
            if fs::hard_link(path, &bak_tmp).is_err() {
                fs::copy(path, &bak_tmp).map_err(io_err(&bak_tmp))?;
                File::open(&bak_tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err(&bak_tmp))?;
            }
            fs::rename(&bak_tmp, &bak).map_err(io_err(&bak))?;
        }
        fs::rename(&tmp, path).map_err(io_err(path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    type Map = BTreeMap<String, u64>;

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    fn map(v: u64) -> Map {
        [("v".to_string(), v)].into()
    }

    #[test]
    fn round_trip_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/state.msgpack");
        assert_eq!(load::<Map>(&path).unwrap(), None);
        let value = map(1);
        store(&path, &value).unwrap();
        assert_eq!(load::<Map>(&path).unwrap(), Some(value));
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["state.msgpack"], "no temp files left");
        fs::write(&path, b"\xc1garbage").unwrap();
        let err = load::<Map>(&path).unwrap_err();
        assert!(matches!(err, PersistError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("state.msgpack"));
    }

    #[test]
    fn garbage_falls_back_to_the_last_good_copy_and_is_never_backed_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.msgpack");
        store(&path, &map(1)).unwrap();
        store(&path, &map(2)).unwrap();
        assert_eq!(load::<Map>(&backup_path(&path)).unwrap(), Some(map(1)));
        // Torn (truncated) file: the backup is used.
        let good = fs::read(&path).unwrap();
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert_eq!(load_or_backup::<Map>(&path, &log()).unwrap(), Some(map(1)));
        // The next write keeps the good backup, not the torn file.
        store(&path, &map(3)).unwrap();
        assert_eq!(load::<Map>(&backup_path(&path)).unwrap(), Some(map(1)));
        assert_eq!(load_or_backup::<Map>(&path, &log()).unwrap(), Some(map(3)));
    }

    #[test]
    fn garbage_without_a_backup_is_a_one_line_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.msgpack");
        fs::write(&path, b"\xc1garbage").unwrap();
        let err = load_or_backup::<Map>(&path, &log()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn stale_temp_files_of_other_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.msgpack");
        for f in [
            "s.msgpack.tmp",
            "s.msgpack.tmp.1.3",
            "s.msgpack.bak.tmp.1.4",
        ] {
            fs::write(dir.path().join(f), b"x").unwrap();
        }
        let mine = dir
            .path()
            .join(format!("s.msgpack.tmp.{}.9", std::process::id()));
        fs::write(&mine, b"x").unwrap();
        assert_eq!(load_or_backup::<Map>(&path, &log()).unwrap(), None);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left, vec![mine]);
    }

    #[test]
    fn concurrent_writes_are_coalesced_and_the_latest_state_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.msgpack");
        let file = StateFile::for_path(&path);
        // Stages in change order (as an actor does), waits on many threads.
        let tickets: Vec<u64> = (0..200u64).map(|v| file.stage(&map(v)).unwrap()).collect();
        // Only the newest staged state is pending: the older ones were
        // superseded before any write.
        std::thread::scope(|s| {
            for (i, &t) in tickets.iter().enumerate() {
                let f = file.clone();
                s.spawn(move || {
                    f.wait(t).unwrap();
                    // Once a ticket is done, the file holds it or newer.
                    let got = load::<Map>(f.path()).unwrap().unwrap()["v"];
                    assert!(got >= i as u64, "{got} < {i}");
                });
            }
        });
        assert_eq!(load::<Map>(&path).unwrap(), Some(map(199)));
        assert_eq!(file.lock().writes, 1, "200 staged states, one write");
        // Interleaved stage/wait from many threads: no write is lost and
        // the final file is the last staged state.
        let order = Mutex::new(0u64);
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (f, order) = (file.clone(), &order);
                s.spawn(move || {
                    for i in 0..25u64 {
                        let seq = {
                            let mut last = order.lock().unwrap();
                            *last = 1000 + t * 100 + i;
                            f.stage(&map(*last)).unwrap()
                        };
                        f.wait(seq).unwrap();
                    }
                });
            }
        });
        let last = file.lock().next_seq;
        assert_eq!(file.lock().durable, last);
        let written = load::<Map>(&path).unwrap().unwrap()["v"];
        assert_eq!(written, *order.lock().unwrap(), "the last staged state");
        assert!(
            load::<Map>(&backup_path(&path)).unwrap().is_some(),
            "a backup exists"
        );
    }
}

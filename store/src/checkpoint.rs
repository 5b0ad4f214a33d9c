//! The `checkpoint` file: where recovery may start.
//!
//! Layout (little-endian, 52 bytes): magic `u32` (`0x41_4D_43_50`), version
//! `u32` (1), `commit_log_flushed` `u64`, `commit_log_flush_ms` `u64`,
//! `cq_dispatched` `u64`, `cq_flush_ms` `u64`, `index_flush_ms` `u64`, crc32
//! `u32` of the preceding 48 bytes. Written to `checkpoint.tmp`, fsynced,
//! renamed over `checkpoint`, and the directory fsynced.

use std::io::Write;
use std::path::Path;

use crate::error::Result;
use crate::record::{get_u32, get_u64};

const MAGIC: u32 = 0x414D_4350;
const VERSION: u32 = 1;
/// Encoded size.
pub const CHECKPOINT_LEN: usize = 52;

/// Recovery checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Commit log bytes below this offset were flushed.
    pub commit_log_flushed: u64,
    /// When (ms) that flush happened.
    pub commit_log_flush_ms: u64,
    /// Every record below this offset is in the consume queues, and they were flushed.
    pub cq_dispatched: u64,
    /// When (ms) the consume queues were flushed.
    pub cq_flush_ms: u64,
    /// When (ms) the index was flushed.
    pub index_flush_ms: u64,
}

impl Checkpoint {
    /// Encodes with CRC.
    pub fn encode(&self) -> [u8; CHECKPOINT_LEN] {
        let mut b = [0u8; CHECKPOINT_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.commit_log_flushed.to_le_bytes());
        b[16..24].copy_from_slice(&self.commit_log_flush_ms.to_le_bytes());
        b[24..32].copy_from_slice(&self.cq_dispatched.to_le_bytes());
        b[32..40].copy_from_slice(&self.cq_flush_ms.to_le_bytes());
        b[40..48].copy_from_slice(&self.index_flush_ms.to_le_bytes());
        let crc = crc32fast::hash(&b[..48]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes; `None` if the length, magic, version or CRC is wrong.
    pub fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != CHECKPOINT_LEN
            || get_u32(b, 0) != MAGIC
            || get_u32(b, 4) != VERSION
            || crc32fast::hash(&b[..48]) != get_u32(b, 48)
        {
            return None;
        }
        Some(Checkpoint {
            commit_log_flushed: get_u64(b, 8),
            commit_log_flush_ms: get_u64(b, 16),
            cq_dispatched: get_u64(b, 24),
            cq_flush_ms: get_u64(b, 32),
            index_flush_ms: get_u64(b, 40),
        })
    }

    /// Loads `path`; `Ok(None)` if missing or invalid.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Checkpoint::decode(&b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes atomically (temp file, fsync, rename, fsync directory).
    pub fn store(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&self.encode())?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(all(test, not(actormq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_reject() {
        let c = Checkpoint {
            commit_log_flushed: 1,
            commit_log_flush_ms: 2,
            cq_dispatched: 3,
            cq_flush_ms: 4,
            index_flush_ms: 5,
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("checkpoint");
        assert_eq!(Checkpoint::load(&p).unwrap(), None);
        c.store(&p).unwrap();
        assert_eq!(Checkpoint::load(&p).unwrap(), Some(c));
        let mut b = c.encode();
        b[10] ^= 1;
        assert_eq!(Checkpoint::decode(&b), None);
    }
}

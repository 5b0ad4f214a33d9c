//! Consumer offsets kept by the client: [`OffsetTable`] (in memory, what
//! changed since the last persist) and [`LocalOffsetFile`] (broadcasting:
//! one file per group under a directory). Plain structs, no runtime.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use actormq_protocol::MessageQueue;

/// The offsets of the queues a consumer holds, and which changed.
#[derive(Debug, Clone, Default)]
pub struct OffsetTable {
    offsets: BTreeMap<MessageQueue, (u64, bool)>,
}

impl OffsetTable {
    /// Sets the offset of `mq` (marked dirty when it changed).
    pub fn update(&mut self, mq: &MessageQueue, offset: u64) {
        match self.offsets.get_mut(mq) {
            Some((o, dirty)) => {
                if *o != offset {
                    *o = offset;
                    *dirty = true;
                }
            }
            None => {
                self.offsets.insert(mq.clone(), (offset, true));
            }
        }
    }

    /// Sets the offset of `mq` as already persisted (loaded).
    pub fn load(&mut self, mq: &MessageQueue, offset: u64) {
        self.offsets.insert(mq.clone(), (offset, false));
    }

    /// The offset of `mq`.
    pub fn get(&self, mq: &MessageQueue) -> Option<u64> {
        self.offsets.get(mq).map(|(o, _)| *o)
    }

    /// Forgets `mq`, returning its offset.
    pub fn remove(&mut self, mq: &MessageQueue) -> Option<u64> {
        self.offsets.remove(mq).map(|(o, _)| o)
    }

    /// The changed offsets, now marked clean.
    pub fn take_dirty(&mut self) -> Vec<(MessageQueue, u64)> {
        self.offsets
            .iter_mut()
            .filter(|(_, (_, d))| *d)
            .map(|(mq, (o, d))| {
                *d = false;
                (mq.clone(), *o)
            })
            .collect()
    }

    /// Marks `mq` dirty again (its persist failed).
    pub fn mark_dirty(&mut self, mq: &MessageQueue) {
        if let Some((_, d)) = self.offsets.get_mut(mq) {
            *d = true;
        }
    }

    /// Every offset.
    pub fn all(&self) -> Vec<(MessageQueue, u64)> {
        self.offsets
            .iter()
            .map(|(mq, (o, _))| (mq.clone(), *o))
            .collect()
    }
}

/// Broadcasting offsets of one group in a local file
/// (`<dir>/<group>.offsets`, one `topic<TAB>broker<TAB>queue<TAB>offset`
/// line per queue, replaced atomically).
#[derive(Debug, Clone)]
pub struct LocalOffsetFile {
    path: PathBuf,
}

impl LocalOffsetFile {
    /// The file of `group` under `dir`.
    pub fn new(dir: &Path, group: &str) -> LocalOffsetFile {
        let safe: String = group
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.%".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        LocalOffsetFile {
            path: dir.join(format!("{safe}.offsets")),
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every saved offset (none when the file does not exist).
    pub fn read(&self) -> std::io::Result<BTreeMap<MessageQueue, u64>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let parts: Vec<&str> = line.split('\t').collect();
            if let [topic, broker, queue, offset] = parts[..]
                && let (Ok(queue_id), Ok(offset)) = (queue.parse(), offset.parse())
            {
                out.insert(
                    MessageQueue {
                        topic: topic.to_string(),
                        broker_name: broker.to_string(),
                        queue_id,
                    },
                    offset,
                );
            }
        }
        Ok(out)
    }

    /// Merges `offsets` into the file (write to a temp file, then rename).
    pub fn write(&self, offsets: &[(MessageQueue, u64)]) -> std::io::Result<()> {
        let mut all = self.read()?;
        for (mq, o) in offsets {
            all.insert(mq.clone(), *o);
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("offsets.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            for (mq, o) in &all {
                writeln!(
                    f,
                    "{}\t{}\t{}\t{}",
                    mq.topic, mq.broker_name, mq.queue_id, o
                )?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(q: u32) -> MessageQueue {
        MessageQueue {
            topic: "T".into(),
            broker_name: "b".into(),
            queue_id: q,
        }
    }

    #[test]
    fn table_tracks_dirty_offsets() {
        let mut t = OffsetTable::default();
        t.load(&mq(0), 5);
        assert!(t.take_dirty().is_empty());
        t.update(&mq(0), 5);
        assert!(t.take_dirty().is_empty());
        t.update(&mq(0), 7);
        t.update(&mq(1), 1);
        assert_eq!(t.take_dirty(), vec![(mq(0), 7), (mq(1), 1)]);
        assert!(t.take_dirty().is_empty());
        t.mark_dirty(&mq(1));
        assert_eq!(t.take_dirty(), vec![(mq(1), 1)]);
        assert_eq!(t.remove(&mq(0)), Some(7));
        assert_eq!(t.get(&mq(0)), None);
    }

    #[test]
    fn local_file_round_trips_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let f = LocalOffsetFile::new(dir.path(), "g/1");
        assert!(f.read().unwrap().is_empty());
        f.write(&[(mq(0), 3), (mq(1), 4)]).unwrap();
        f.write(&[(mq(1), 9)]).unwrap();
        let read = f.read().unwrap();
        assert_eq!(read.get(&mq(0)), Some(&3));
        assert_eq!(read.get(&mq(1)), Some(&9));
        assert!(f.path().starts_with(dir.path()));
    }
}

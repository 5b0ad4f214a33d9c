//! Raw commit-log bytes for master/slave replication (plain functions,
//! tested without files).
//!
//! A master streams its commit log to a slave byte for byte: chunks cut at
//! record boundaries inside one segment ([`cut_chunk`]), read straight from
//! the mapped segment. The slave checks every chunk before it writes a
//! byte ([`check_chunk`]): it must continue the slave's log exactly (each
//! record's physical offset is its position), every record's CRC must
//! hold, and a blank record must run to the segment end. So a slave never
//! silently diverges from its master: anything else is refused with a
//! reason.

use crate::record::{self, BLANK_MAGIC, MSG_MAGIC, Scan};

/// Why a chunk cannot be cut or taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The bytes at the start are not a record (the offset is not a record
    /// boundary of this log: the two logs diverged).
    #[error("no record starts at offset {offset}: {reason}")]
    NotARecord {
        /// Commit log offset.
        offset: u64,
        /// What was found.
        reason: &'static str,
    },
    /// A record's physical offset is not its position in the log.
    #[error("record at offset {offset} says it is at {claimed}")]
    Misplaced {
        /// Where it would be written.
        offset: u64,
        /// The physical offset in its header.
        claimed: u64,
    },
    /// A record's topic is not UTF-8.
    #[error("record at offset {offset}: topic not UTF-8")]
    Topic {
        /// Commit log offset.
        offset: u64,
    },
    /// A chunk that does not fit in the segment, or ends inside a record.
    #[error("chunk at offset {offset} of {len} bytes: {reason}")]
    Shape {
        /// Commit log offset.
        offset: u64,
        /// Chunk length.
        len: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// How many bytes of `buf` (published bytes of one segment from commit
/// log offset `from` on) make the next chunk: whole records only, at most
/// `max_len` bytes unless the first record alone is bigger, a blank record
/// (with its padding) always last. `0` means nothing whole is there yet.
pub fn cut_chunk(buf: &[u8], from: u64, max_len: usize) -> Result<usize, ReplicaError> {
    let mut p = 0usize;
    while p < buf.len() {
        let rest = &buf[p..];
        if rest.len() < record::BLANK_MIN {
            break;
        }
        let size = record::get_u32(rest, 0) as usize;
        let magic = record::get_u32(rest, 4);
        let at = from + p as u64;
        match magic {
            BLANK_MAGIC => {
                // The rest of the segment: only sent once all before it is.
                if size != rest.len() && p == 0 {
                    return Err(ReplicaError::NotARecord {
                        offset: at,
                        reason: "blank record does not reach the segment end",
                    });
                }
                if p > 0 && p + size > max_len {
                    break;
                }
                p += size.min(rest.len());
                break;
            }
            MSG_MAGIC if size >= record::HEADER_LEN && size <= rest.len() => {
                if p == 0 {
                    let claimed = record::get_u64(rest, 24);
                    if claimed != at {
                        return Err(ReplicaError::Misplaced {
                            offset: at,
                            claimed,
                        });
                    }
                }
                if p > 0 && p + size > max_len {
                    break;
                }
                p += size;
            }
            0 if size == 0 => break,
            _ if p == 0 => {
                return Err(ReplicaError::NotARecord {
                    offset: at,
                    reason: "bad magic or size",
                });
            }
            _ => break,
        }
    }
    Ok(p)
}

/// One record of a checked chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Byte range of the topic inside the chunk.
    pub topic: std::ops::Range<usize>,
    /// Queue id.
    pub queue_id: u32,
    /// Queue offset.
    pub queue_offset: u64,
    /// Store timestamp (ms).
    pub store_timestamp_ms: u64,
}

/// What a checked chunk holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckedChunk {
    /// The message records, in order.
    pub records: Vec<ChunkRecord>,
    /// Whether it ends with the segment's blank record.
    pub ends_segment: bool,
}

/// Checks a chunk that is to be written at commit log offset `at`, with
/// `room` bytes left in that segment: whole records with valid CRCs, each
/// at its own physical offset, a blank record only last and reaching the
/// segment end.
pub fn check_chunk(data: &[u8], at: u64, room: usize) -> Result<CheckedChunk, ReplicaError> {
    let shape = |reason| ReplicaError::Shape {
        offset: at,
        len: data.len(),
        reason,
    };
    if data.len() > room {
        return Err(shape("crosses the segment end"));
    }
    let mut out = CheckedChunk::default();
    let mut p = 0usize;
    while p < data.len() {
        let off = at + p as u64;
        let rest = &data[p..];
        if rest.len() >= record::BLANK_MIN && record::get_u32(rest, 4) == BLANK_MAGIC {
            let size = record::get_u32(rest, 0) as usize;
            if size != room - p || rest.len() != size {
                return Err(ReplicaError::NotARecord {
                    offset: off,
                    reason: "blank record not last or not reaching the segment end",
                });
            }
            out.ends_segment = true;
            break;
        }
        match record::scan(rest, true) {
            Scan::Message(h) => {
                if h.physical_offset != off {
                    return Err(ReplicaError::Misplaced {
                        offset: off,
                        claimed: h.physical_offset,
                    });
                }
                let topic = h.topic_range();
                if std::str::from_utf8(&rest[topic.clone()]).is_err() {
                    return Err(ReplicaError::Topic { offset: off });
                }
                out.records.push(ChunkRecord {
                    topic: p + topic.start..p + topic.end,
                    queue_id: h.queue_id,
                    queue_offset: h.queue_offset,
                    store_timestamp_ms: h.store_timestamp_ms,
                });
                p += h.total_size as usize;
            }
            Scan::Invalid { reason, .. } => {
                return Err(ReplicaError::NotARecord {
                    offset: off,
                    reason,
                });
            }
            Scan::End | Scan::Blank(_) => {
                return Err(shape("ends inside a record or holds zeroes"));
            }
        }
    }
    Ok(out)
}

#[cfg(all(test, not(actormq_loom)))]
mod tests {
    use super::*;
    use crate::record::{AppendMessage, blank_header, encode_into, validate};

    fn rec(at: u64, body: &[u8]) -> Vec<u8> {
        let m = AppendMessage {
            topic: "t",
            queue_id: 1,
            body,
            ..AppendMessage::default()
        };
        let size = validate(&m, 1 << 20).unwrap();
        let mut v = vec![0u8; size];
        encode_into(&mut v, &m, at / 1000, at, 7);
        v
    }

    fn log(start: u64, bodies: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for b in bodies {
            let r = rec(start + v.len() as u64, b);
            v.extend_from_slice(&r);
        }
        v
    }

    #[test]
    fn chunks_are_cut_at_record_boundaries() {
        let buf = log(100, &[b"aaaa", b"bbbbbbbb", b"cc"]);
        let first = rec(100, b"aaaa").len();
        // At least one record even when it alone exceeds the limit.
        assert_eq!(cut_chunk(&buf, 100, 1), Ok(first));
        assert_eq!(cut_chunk(&buf, 100, first + 1), Ok(first));
        assert_eq!(cut_chunk(&buf, 100, buf.len()), Ok(buf.len()));
        assert_eq!(
            cut_chunk(&buf[first..], 100 + first as u64, 1 << 20).unwrap(),
            buf.len() - first
        );
        assert_eq!(cut_chunk(&[], 100, 10), Ok(0));
        // Zeroes after the data are not sent.
        let mut z = buf.clone();
        z.extend_from_slice(&[0u8; 64]);
        assert_eq!(cut_chunk(&z, 100, 1 << 20), Ok(buf.len()));
    }

    #[test]
    fn a_diverged_offset_is_refused() {
        let buf = log(100, &[b"aaaa", b"bb"]);
        assert!(matches!(
            cut_chunk(&buf[3..], 103, 1 << 20),
            Err(ReplicaError::NotARecord { .. })
        ));
        // Right bytes, wrong offset.
        assert!(matches!(
            cut_chunk(&buf, 200, 1 << 20),
            Err(ReplicaError::Misplaced {
                offset: 200,
                claimed: 100
            })
        ));
    }

    #[test]
    fn a_blank_record_ends_the_chunk() {
        let mut seg = log(0, &[b"x"]);
        let room = 4096 - seg.len();
        let mut blank = vec![0u8; room];
        blank[..8].copy_from_slice(&blank_header(room));
        seg.extend_from_slice(&blank);
        assert_eq!(cut_chunk(&seg, 0, 1 << 20), Ok(4096));
        let c = check_chunk(&seg, 0, 4096).unwrap();
        assert!(c.ends_segment);
        assert_eq!(c.records.len(), 1);
        // A blank alone, sent on its own.
        let from = 4096 - room;
        assert_eq!(cut_chunk(&seg[from..], from as u64, 1), Ok(room));
        // Over the limit after a record: the blank waits for the next chunk.
        assert_eq!(cut_chunk(&seg, 0, from + 1), Ok(from));
    }

    #[test]
    fn check_takes_good_chunks_and_refuses_the_rest() {
        let buf = log(5000, &[b"one", b"two"]);
        let c = check_chunk(&buf, 5000, 1 << 20).unwrap();
        assert_eq!(c.records.len(), 2);
        assert_eq!(&buf[c.records[1].topic.clone()], b"t");
        assert!(!c.ends_segment);
        // Elsewhere than its offsets say.
        assert!(matches!(
            check_chunk(&buf, 5001, 1 << 20),
            Err(ReplicaError::Misplaced { .. })
        ));
        // Cut inside a record.
        assert!(check_chunk(&buf[..buf.len() - 1], 5000, 1 << 20).is_err());
        // A flipped body byte fails the CRC.
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            check_chunk(&bad, 5000, 1 << 20),
            Err(ReplicaError::NotARecord { .. })
        ));
        // Past the segment end.
        assert!(matches!(
            check_chunk(&buf, 5000, 10),
            Err(ReplicaError::Shape { .. })
        ));
        // Garbage.
        assert!(check_chunk(&[7u8; 200], 5000, 1 << 20).is_err());
        assert_eq!(
            check_chunk(&[], 5000, 1 << 20).unwrap(),
            CheckedChunk::default()
        );
    }
}

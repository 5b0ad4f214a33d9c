//! Commit log recovery: find the valid end of the log, verify CRCs, cut a
//! torn tail, and report mid-log corruption.

use std::path::{Path, PathBuf};

use crate::allocator::{Segment, open_segment, parse_name};
use crate::error::{Error, Result};
use crate::record::{self, MSG_MAGIC, Scan};
use crate::region::Region;

const PAGE: usize = 4096;

/// Result of commit log recovery.
#[derive(Debug)]
pub(crate) struct RecoveredLog {
    /// Kept segments, oldest first, with correct positions.
    pub segments: Vec<Segment>,
    /// End of valid data.
    pub end: u64,
    /// Bytes zeroed because they were a torn tail.
    pub truncated: u64,
    /// Records verified during the scan.
    pub scanned_records: u64,
}

fn file_mtime_ms(p: &Path) -> u64 {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lists `<dir>/<20 digits>` files, sorted, checking sizes and contiguity.
pub(crate) fn list_segments(dir: &Path, seg_size: u64) -> Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(start) = e.file_name().to_str().and_then(parse_name) {
            v.push((start, e.path()));
        }
    }
    v.sort();
    // A trailing file of the wrong size is a pre-allocation interrupted by a
    // crash (data is only ever written after sizing): remove it.
    while let Some((_, p)) = v.last() {
        if std::fs::metadata(p)?.len() == seg_size {
            break;
        }
        std::fs::remove_file(p)?;
        v.pop();
    }
    for (i, (start, path)) in v.iter().enumerate() {
        if start % seg_size != 0 {
            return Err(Error::corruption(
                path,
                0,
                "segment name not a multiple of the segment size",
            ));
        }
        if i > 0 && *start != v[i - 1].0 + seg_size {
            return Err(Error::corruption(
                path,
                0,
                "missing segment before this one",
            ));
        }
        let len = std::fs::metadata(path)?.len();
        if len != seg_size {
            return Err(Error::corruption(
                path,
                0,
                format!("segment size {len}, expected {seg_size}"),
            ));
        }
    }
    Ok(v)
}

fn bytes(seg: &Segment) -> &[u8] {
    // SAFETY: recovery has exclusive access to the freshly mapped segments
    // (no reader or writer exists yet); the range is the whole region.
    unsafe { seg.region().slice(0, seg.capacity()) }.unwrap_or(&[])
}

/// Looks for any valid message record at or after `from` in `buf` (a whole
/// segment starting at `seg_start`), up to `limit`. A record is accepted only
/// if its CRC is valid and its stored physical offset is its own position, so
/// random bytes are not mistaken for a record.
fn find_valid_after(buf: &[u8], seg_start: u64, from: usize, limit: usize) -> Option<usize> {
    let magic = MSG_MAGIC.to_le_bytes();
    let limit = limit.min(buf.len());
    let mut i = from;
    while i + record::HEADER_LEN <= limit {
        if buf[i + 4..i + 8] == magic {
            if let Scan::Message(h) = record::scan(&buf[i..], true) {
                if h.physical_offset == seg_start + i as u64 {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// End of the non-zero region starting at `from`: the start of the first
/// all-zero page at or after `min_end`.
fn dirty_end(buf: &[u8], from: usize, min_end: usize) -> usize {
    let mut p = min_end.max(from).min(buf.len());
    p = p.div_ceil(PAGE) * PAGE;
    while p < buf.len() {
        let e = (p + PAGE).min(buf.len());
        if buf[p..e].iter().all(|b| *b == 0) {
            return p;
        }
        p = e;
    }
    buf.len()
}

/// Recovers the commit log in `dir`. Scanning starts at `scan_from` (an
/// absolute offset on a record boundary, or the start of a segment); data
/// before it is trusted.
pub(crate) fn recover_commit_log(
    dir: &Path,
    seg_size: u64,
    scan_from: Option<u64>,
) -> Result<RecoveredLog> {
    let files = list_segments(dir, seg_size)?;
    let mut segs = Vec::with_capacity(files.len());
    for (start, path) in files {
        let cap = seg_size as usize;
        let s = open_segment(path, start, seg_size, cap)?;
        segs.push(s);
    }
    if segs.is_empty() {
        let end = scan_from.unwrap_or(0).div_ceil(seg_size) * seg_size;
        return Ok(RecoveredLog {
            segments: segs,
            end,
            truncated: 0,
            scanned_records: 0,
        });
    }
    let first = segs[0].start();
    let last_end = segs[segs.len() - 1].end();
    let from = scan_from.unwrap_or(first).clamp(first, last_end);
    let mut k = (((from - first) / seg_size) as usize).min(segs.len() - 1);
    let mut pos = (from - segs[k].start()) as usize;
    let mut truncated = 0u64;
    let mut scanned = 0u64;
    let end;
    loop {
        let seg = &segs[k];
        let buf = bytes(seg);
        let mut last_ms = 0;
        let mut stop: Option<usize> = None;
        loop {
            match record::scan(&buf[pos..], true) {
                Scan::Message(h) => {
                    if h.physical_offset != seg.start() + pos as u64 {
                        return Err(Error::corruption(
                            seg.path().unwrap_or(dir),
                            pos as u64,
                            "record physical offset mismatch",
                        ));
                    }
                    pos += h.total_size as usize;
                    last_ms = h.store_timestamp_ms;
                    scanned += 1;
                }
                Scan::Blank(_) => break,
                Scan::End => {
                    let dend = dirty_end(buf, pos, pos);
                    if find_valid_after(buf, seg.start(), pos + 1, dend).is_some()
                        || segs[k + 1..]
                            .iter()
                            .any(|s| matches!(record::scan(bytes(s), true), Scan::Message(_)))
                    {
                        let path = seg.path().unwrap_or(dir).to_path_buf();
                        return Err(Error::corruption(
                            path,
                            pos as u64,
                            "zeroed bytes followed by valid records",
                        ));
                    }
                    stop = Some(pos);
                    break;
                }
                Scan::Invalid { reason, size_hint } => {
                    let path = seg.path().unwrap_or(dir).to_path_buf();
                    let hint = size_hint.map(|s| s as usize).unwrap_or(0);
                    let dend = dirty_end(buf, pos, pos + hint);
                    let later_valid = find_valid_after(buf, seg.start(), pos + 1, dend).is_some()
                        || segs[k + 1..]
                            .iter()
                            .any(|s| matches!(record::scan(bytes(s), true), Scan::Message(_)));
                    if later_valid {
                        return Err(Error::corruption(path, pos as u64, reason));
                    }
                    // Torn tail: zero it so it can never be read.
                    let zeros = vec![0u8; dend - pos];
                    // SAFETY: exclusive access during recovery.
                    unsafe { seg.region().write(pos, &zeros) };
                    seg.region().flush(pos, dend - pos)?;
                    truncated += (dend - pos) as u64;
                    stop = Some(pos);
                    break;
                }
            }
        }
        seg.set_last_store_ms(if last_ms > 0 {
            last_ms
        } else {
            seg.path().map(file_mtime_ms).unwrap_or(0)
        });
        match stop {
            Some(p) => {
                seg.reset_position(p);
                end = seg.start() + p as u64;
                break;
            }
            None if k + 1 < segs.len() => {
                k += 1;
                pos = 0;
            }
            None => {
                end = seg.end();
                break;
            }
        }
    }
    // Segments before k keep full positions and get mtimes; those after k
    // must be empty (pre-allocated): delete them.
    for s in &segs[..k] {
        if s.last_store_ms() == 0 {
            s.set_last_store_ms(s.path().map(file_mtime_ms).unwrap_or(0));
        }
    }
    let extra: Vec<Segment> = segs.drain(k + 1..).collect();
    for s in extra {
        s.mark_removed();
    }
    // If the log ends exactly at the end of segment k, keep it (full).
    Ok(RecoveredLog {
        segments: segs,
        end,
        truncated,
        scanned_records: scanned,
    })
}

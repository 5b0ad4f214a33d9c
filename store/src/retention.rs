//! Retention: which commit log segments to delete. Pure decision logic,
//! unit-tested without files; the store applies it in `Store::clean_expired`.

/// Retention settings (see `StoreConfig`).
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    /// Keep a segment this long after its last store time (ms).
    pub reserved_ms: u64,
    /// Hour of day (UTC) at which expired segments are deleted.
    pub delete_hour: u8,
    /// Disk usage ratio above which expired segments are deleted at any hour.
    pub warn_ratio: f64,
    /// Disk usage ratio above which the oldest segments are deleted even if not expired.
    pub force_ratio: f64,
    /// At most this many segments per pass.
    pub max_per_pass: usize,
}

/// What one cleaning pass may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionMode {
    /// Nothing to do now.
    Idle,
    /// Delete expired segments.
    Expired,
    /// Delete the oldest segments even if not expired (disk nearly full).
    Force,
}

/// One segment as seen by the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Start offset.
    pub start: u64,
    /// Last store time (ms).
    pub last_store_ms: u64,
    /// Whether this is the active (last) segment.
    pub active: bool,
}

impl RetentionPolicy {
    /// The mode at `now_ms` with the given disk usage.
    pub fn mode(&self, now_ms: u64, disk_usage_ratio: f64) -> RetentionMode {
        let hour = ((now_ms / 3_600_000) % 24) as u8;
        if disk_usage_ratio >= self.force_ratio {
            RetentionMode::Force
        } else if disk_usage_ratio >= self.warn_ratio || hour == self.delete_hour {
            RetentionMode::Expired
        } else {
            RetentionMode::Idle
        }
    }

    /// How many of the oldest segments (a prefix of `segs`, ordered oldest
    /// first) to delete. The active segment is never deleted; deletion stops at
    /// the first segment that must be kept, so the log stays contiguous.
    pub fn select(&self, segs: &[SegmentInfo], now_ms: u64, disk_usage_ratio: f64) -> usize {
        let mode = self.mode(now_ms, disk_usage_ratio);
        let mut n = 0;
        for s in segs {
            if n >= self.max_per_pass || s.active {
                break;
            }
            let expired = now_ms.saturating_sub(s.last_store_ms) >= self.reserved_ms;
            let ok = match mode {
                RetentionMode::Idle => false,
                RetentionMode::Expired => expired,
                RetentionMode::Force => true,
            };
            if !ok {
                break;
            }
            n += 1;
        }
        n
    }
}

/// Used fraction of the file system holding `path` (0.0..=1.0).
pub fn disk_usage_ratio(path: &std::path::Path) -> std::io::Result<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains NUL"))?;
    // SAFETY: `statvfs` is plain old data; zeroed is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usage_ratio(
        st.f_blocks as u64,
        st.f_bfree as u64,
        st.f_bavail as u64,
    ))
}

/// Disk use as `df` shows it: used blocks over the blocks this process can
/// use (used + available to unprivileged users). Blocks reserved for root
/// count neither way, so a file system with a large reserve reads as full
/// only when what is usable is used up (`1 - avail / total` would call a
/// disk with 84 % reserved "84 % full" while empty).
pub fn usage_ratio(blocks: u64, free: u64, avail: u64) -> f64 {
    let used = blocks.saturating_sub(free);
    let usable = used + avail;
    if usable == 0 {
        return 0.0;
    }
    used as f64 / usable as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_ratio_is_dfs_use_percent() {
        // The machine this was found on: 252 GiB, 200 free, 39 usable.
        let r = usage_ratio(66_053_021, 52_478_793, 10_247_244);
        assert!((r - 0.5698).abs() < 0.001, "{r}");
        // No reserve: plain used / total.
        assert_eq!(usage_ratio(100, 25, 25), 0.75);
        // Everything usable used up, even with reserve left: full.
        assert_eq!(usage_ratio(100, 10, 0), 1.0);
        assert_eq!(usage_ratio(0, 0, 0), 0.0);
    }

    const H: u64 = 3_600_000;

    fn p() -> RetentionPolicy {
        RetentionPolicy {
            reserved_ms: 72 * H,
            delete_hour: 4,
            warn_ratio: 0.75,
            force_ratio: 0.85,
            max_per_pass: 10,
        }
    }

    fn segs(times: &[u64]) -> Vec<SegmentInfo> {
        let n = times.len();
        times
            .iter()
            .enumerate()
            .map(|(i, &t)| SegmentInfo {
                start: i as u64 * 100,
                last_store_ms: t,
                active: i + 1 == n,
            })
            .collect()
    }

    #[test]
    fn modes() {
        let day = 100 * 24 * H;
        assert_eq!(p().mode(day + 3 * H, 0.1), RetentionMode::Idle);
        assert_eq!(p().mode(day + 4 * H + 5, 0.1), RetentionMode::Expired);
        assert_eq!(p().mode(day + 3 * H, 0.8), RetentionMode::Expired);
        assert_eq!(p().mode(day + 3 * H, 0.9), RetentionMode::Force);
    }

    #[test]
    fn selects_expired_prefix_never_active() {
        let now = 100 * 24 * H + 4 * H;
        let old = now - 73 * H;
        let young = now - 10 * H;
        assert_eq!(p().select(&segs(&[old, old, young, old]), now, 0.1), 2);
        assert_eq!(p().select(&segs(&[old, old]), now, 0.1), 1);
        assert_eq!(p().select(&segs(&[old]), now, 0.99), 0);
        assert_eq!(p().select(&segs(&[old, old]), now - 3 * H + 1, 0.1), 0);
        assert_eq!(p().select(&segs(&[young, young, young]), now, 0.9), 2);
        let mut q = p();
        q.max_per_pass = 1;
        assert_eq!(q.select(&segs(&[old, old, old]), now, 0.1), 1);
    }

    #[test]
    fn disk_usage_works() {
        let r = disk_usage_ratio(std::path::Path::new("/")).unwrap();
        assert!((0.0..=1.0).contains(&r));
    }
}

//! Client ids: `HOST@INSTANCE@SUFFIX`, unique across hosts, containers,
//! processes and restarts (RocketMQ's `ip@instanceName` plus a unique
//! suffix).
//!
//! - `HOST`: the address this machine uses to reach the name servers (so
//!   two containers on one host differ), found by connecting a UDP socket
//!   (no packet is sent); `127.0.0.1` when that fails.
//! - `INSTANCE`: the instance name set on the builder, else the process id
//!   (equal in every container, hence the suffix).
//! - `SUFFIX`: 16 hex digits hashing the wall clock in nanoseconds, the
//!   process id, a per-process counter, the address of a stack slot and
//!   the thread id with the standard library's randomly keyed hasher.
//!   Two clients of one process with the same instance name differ by the
//!   counter; two processes (or a restart) by the clock and the hasher's
//!   random keys.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};

/// The local address used to reach `peers` (the first that resolves).
pub fn local_ip<S: AsRef<str>>(peers: &[S]) -> IpAddr {
    let fallback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let Some(peer) = peers
        .iter()
        .find_map(|p| p.as_ref().trim().parse::<SocketAddr>().ok())
    else {
        return fallback;
    };
    let bind: SocketAddr = if peer.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(bind)
        .and_then(|s| s.connect(peer).map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(fallback)
}

/// 16 hex digits, different on every call in any process.
pub fn unique_suffix() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let slot = 0u8;
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    h.write_usize(std::ptr::addr_of!(slot) as usize);
    h.write(format!("{:?}", std::thread::current().id()).as_bytes());
    format!("{:016x}", h.finish())
}

/// A new client id for a client reaching `namesrv`, named `instance` (the
/// process id when `None`).
pub fn new_client_id<S: AsRef<str>>(namesrv: &[S], instance: Option<&str>) -> String {
    let instance = instance
        .filter(|i| !i.is_empty())
        .map_or_else(|| std::process::id().to_string(), str::to_owned);
    format!("{}@{}@{}", local_ip(namesrv), instance, unique_suffix())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_unique_and_carry_host_and_instance() {
        let ns = ["127.0.0.1:9876"];
        let ids: HashSet<String> = (0..10_000)
            .map(|_| new_client_id(&ns, Some("same")))
            .collect();
        assert_eq!(ids.len(), 10_000, "every id distinct");
        for id in ids.iter().take(3) {
            let parts: Vec<&str> = id.split('@').collect();
            assert_eq!(parts.len(), 3, "{id}");
            assert_eq!(parts[0], "127.0.0.1", "loopback peer, loopback source");
            assert_eq!(parts[1], "same");
            assert_eq!(parts[2].len(), 16);
        }
        let default = new_client_id(&ns, None);
        assert_eq!(
            default.split('@').nth(1),
            Some(std::process::id().to_string().as_str())
        );
    }

    #[test]
    fn ids_from_threads_do_not_collide() {
        let ids: Vec<String> = (0..4)
            .map(|_| std::thread::spawn(|| (0..500).map(|_| unique_suffix()).collect::<Vec<_>>()))
            .flat_map(|t| t.join().unwrap())
            .collect();
        let set: HashSet<&String> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
    }

    #[test]
    fn host_falls_back_to_loopback() {
        assert_eq!(local_ip::<&str>(&[]), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            local_ip(&["not an address"]),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }
}

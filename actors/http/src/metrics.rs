//! `NodeMetrics`: everything `/metrics` shows, in one `prometheus-client`
//! registry per node.
//!
//! Traffic counters are the broker's own
//! ([`actormq_actors::broker::metrics::BrokerMetrics`], updated where the
//! traffic is); gauges (lag, disk, flush and replication lag, restarts,
//! connections, the process) are set by the [`crate::sampler::Sampler`]
//! every 2 s.
//!
//! `prometheus-client` encodes OpenMetrics; the endpoint answers the
//! Prometheus text format 0.0.4 (what `promtool check metrics` reads):
//! [`to_text_format`] renames a counter family's `# HELP`/`# TYPE` lines to
//! its `_total` sample name and drops `# EOF`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use actormq_actors::broker::metrics::BrokerMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `{group, topic, queue}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LagLabel {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    pub queue: String,
}

/// `{slave}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SlaveLabel {
    /// The slave's link id on this master.
    pub slave: String,
}

/// `{actor}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ActorLabel {
    /// The supervised child's name.
    pub actor: String,
}

/// `{kind}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    /// `native` (broker port), `namesrv`, ...
    pub kind: String,
}

/// The node's metrics. See the module docs.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
    /// `actormq_consumer_lag{group,topic,queue}`.
    pub consumer_lag: Family<LagLabel, Gauge>,
    /// `actormq_disk_used_ratio`.
    pub disk_used_ratio: Gauge<f64, AtomicU64>,
    /// `actormq_flush_lag_bytes`.
    pub flush_lag_bytes: Gauge,
    /// `actormq_replication_lag_bytes{slave}`.
    pub replication_lag_bytes: Family<SlaveLabel, Gauge>,
    /// `actormq_actor_restarts_total{actor}`.
    pub actor_restarts: Family<ActorLabel, Counter>,
    /// `actormq_connections{kind}`.
    pub connections: Family<KindLabel, Gauge>,
    /// `process_resident_memory_bytes`.
    pub resident_memory_bytes: Gauge,
    /// `process_cpu_seconds_total`.
    pub cpu_seconds: Counter<f64, AtomicU64>,
    /// `process_open_fds`.
    pub open_fds: Gauge,
    /// `process_start_time_seconds`.
    pub start_time_seconds: Gauge<f64, AtomicU64>,
}

impl NodeMetrics {
    /// The registry of a node, with the broker's counters when it has a
    /// broker.
    pub fn new(broker: Option<&BrokerMetrics>) -> Arc<Self> {
        let mut registry = Registry::default();
        if let Some(b) = broker {
            b.register(&mut registry);
        }
        let m = NodeMetrics {
            registry: Registry::default(),
            consumer_lag: Family::default(),
            disk_used_ratio: Gauge::default(),
            flush_lag_bytes: Gauge::default(),
            replication_lag_bytes: Family::default(),
            actor_restarts: Family::default(),
            connections: Family::default(),
            resident_memory_bytes: Gauge::default(),
            cpu_seconds: Counter::default(),
            open_fds: Gauge::default(),
            start_time_seconds: Gauge::default(),
        };
        if broker.is_some() {
            registry.register(
                "actormq_consumer_lag",
                "Messages not consumed yet: the queue's max offset minus the group's committed offset",
                m.consumer_lag.clone(),
            );
            registry.register(
                "actormq_disk_used_ratio",
                "Used share of the file system holding the data dir (0..1)",
                m.disk_used_ratio.clone(),
            );
            registry.register(
                "actormq_flush_lag_bytes",
                "Commit log bytes written but not flushed to disk yet",
                m.flush_lag_bytes.clone(),
            );
            registry.register(
                "actormq_replication_lag_bytes",
                "Commit log bytes a connected slave has not acknowledged yet",
                m.replication_lag_bytes.clone(),
            );
        }
        registry.register(
            "actormq_actor_restarts",
            "Restarts of each supervised child of the node",
            m.actor_restarts.clone(),
        );
        registry.register(
            "actormq_connections",
            "Client connections open now, by kind of port",
            m.connections.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            m.resident_memory_bytes.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time spent in seconds",
            m.cpu_seconds.clone(),
        );
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            m.open_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the epoch in seconds",
            m.start_time_seconds.clone(),
        );
        Arc::new(NodeMetrics { registry, ..m })
    }

    /// The `/metrics` text (Prometheus text format 0.0.4).
    pub fn render(&self) -> String {
        let mut open = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut open, &self.registry) {
            return format!("# encoding failed: {e}\n");
        }
        to_text_format(&open)
    }
}

/// OpenMetrics text as `prometheus-client` writes it → Prometheus text
/// format 0.0.4: a counter family's `# HELP`/`# TYPE` lines name its
/// `_total` samples, `# UNIT` and `# EOF` lines are dropped.
pub fn to_text_format(open_metrics: &str) -> String {
    let counters: HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 64);
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident set, bytes.
    pub rss_bytes: u64,
    /// User + system CPU, seconds.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Start time, seconds since the epoch.
    pub start_time_seconds: f64,
}

/// `/proc`'s clock tick (`USER_HZ`): 100 on every Linux architecture
/// (the kernel scales what it shows to it).
const USER_HZ: u64 = 100;

/// Reads [`ProcessStats`] (zeros where `/proc` is not there).
pub fn process_stats() -> ProcessStats {
    let mut s = ProcessStats::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(p) = parse_stat(&stat, USER_HZ)
    {
        s.cpu_seconds = p.0;
        if let Some(boot) = boot_time_seconds() {
            s.start_time_seconds = boot + p.1;
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        s.rss_bytes = parse_vm_rss(&status).unwrap_or(0);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        s.open_fds = dir.count() as u64;
    }
    s
}

/// `VmRSS` of a `/proc/PID/status`, bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb.saturating_mul(1024))
}

/// `(cpu seconds, start seconds after boot)` of a `/proc/PID/stat` line.
pub fn parse_stat(stat: &str, ticks_per_second: u64) -> Option<(f64, f64)> {
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. Then: state (3) ... utime (14), stime (15), starttime (22).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let t = ticks_per_second.max(1) as f64;
    Some(((field(14)? + field(15)?) as f64 / t, field(22)? as f64 / t))
}

fn boot_time_seconds() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<f64>()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples() {
        let open = "# HELP a_in Messages.\n# TYPE a_in counter\na_in_total{t=\"x\"} 1\n\
                    # HELP g A gauge.\n# TYPE g gauge\ng 2\n# UNIT g bytes\n# EOF\n";
        assert_eq!(
            to_text_format(open),
            "# HELP a_in_total Messages.\n# TYPE a_in_total counter\na_in_total{t=\"x\"} 1\n\
             # HELP g A gauge.\n# TYPE g gauge\ng 2\n"
        );
    }

    #[test]
    fn stat_fields_after_the_last_parenthesis() {
        let line = "42 (we (ird) name) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0 1000 0 0";
        assert_eq!(parse_stat(line, 100), Some((4.0, 10.0)));
        assert_eq!(parse_stat("garbage", 100), None);
        assert_eq!(
            parse_vm_rss("Name: x\nVmRSS:\t  2048 kB\n"),
            Some(2048 * 1024)
        );
    }

    #[test]
    fn the_registry_renders_every_family() {
        let b = BrokerMetrics::new();
        b.stored("t", 2, 10);
        let m = NodeMetrics::new(Some(&b));
        m.consumer_lag
            .get_or_create(&LagLabel {
                group: "g".into(),
                topic: "t".into(),
                queue: "0".into(),
            })
            .set(2);
        let text = m.render();
        for needle in [
            "# TYPE actormq_messages_in_total counter",
            "actormq_messages_in_total{topic=\"t\"} 2",
            "actormq_consumer_lag{group=\"g\",topic=\"t\",queue=\"0\"} 2",
            "# TYPE actormq_put_latency_seconds histogram",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }
}

//! `Sampler`: every 2 s, sets the node's gauges (consumer lag, disk, flush
//! and replication lag, restarts, connections, the process) and records
//! a [`StatsHistory`] sample. A supervised child of the node.
//!
//! It asks the actors by typed messages (the offset table, the
//! supervisor's children, the listeners' counters) and reads the store's
//! offsets; the arithmetic is in plain functions ([`lag_rows`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actormq_actors::broker::BrokerStore;
use actormq_actors::broker::ha::HaState;
use actormq_actors::broker::metrics::BrokerMetrics;
use actormq_actors::broker::offset_manager::{GetOffsetTable, OffsetManager, OffsetTable};
use actormq_actors::runtime::net::{GetListenerStats, Listener};
use actormq_actors::runtime::{ChildRef, GetChildStatus, Supervisor};
use slog::{Logger, debug};

use crate::metrics::{ActorLabel, KindLabel, LagLabel, NodeMetrics, SlaveLabel, process_stats};
use crate::stats::{SAMPLE_INTERVAL_MS, StatsHistory, now_ms};

/// The broker a node samples.
#[derive(Clone)]
pub struct BrokerSources {
    /// Its traffic counters.
    pub metrics: Arc<BrokerMetrics>,
    /// Its store (offsets, flush position, disk).
    pub store: BrokerStore,
    /// Its committed offsets.
    pub offsets: ChildRef<OffsetManager>,
    /// Its replication state.
    pub ha: Arc<HaState>,
}

/// What a node's sampler reads.
#[derive(Clone)]
pub struct Sources {
    /// The broker (absent on a name-server-only node).
    pub broker: Option<BrokerSources>,
    /// The node's supervisor (restart counts of its children).
    pub supervisor: Addr<Supervisor>,
    /// The node's client listeners, by kind (`native`, `namesrv`).
    pub listeners: Vec<(String, ChildRef<Listener>)>,
    /// Other counted front doors, by kind (`grpc`: its clients): each
    /// gives the current instance to ask, if it runs.
    pub others: Vec<(String, CountSource)>,
}

/// Where a front door that is not a [`Listener`] is asked for its
/// [`ListenerStats`](actormq_actors::runtime::net::ListenerStats).
pub type CountSource = Arc<
    dyn Fn() -> Option<Recipient<actormq_actors::runtime::net::GetListenerStats>> + Send + Sync,
>;

/// Consumer lag per `(group, topic, queue)`: the queue's max offset minus
/// the committed offset (0 when the group is ahead, e.g. after a
/// truncation); `max_offset` gives a queue's max offset.
pub fn lag_rows<'a>(
    committed: impl Iterator<Item = (&'a str, &'a str, u32, u64)>,
    max_offset: impl Fn(&str, u32) -> u64,
) -> Vec<(LagLabel, u64)> {
    committed
        .filter(|(_, _, _, o)| *o != u64::MAX)
        .map(|(g, t, q, o)| {
            (
                LagLabel {
                    group: g.to_owned(),
                    topic: t.to_owned(),
                    queue: q.to_string(),
                },
                max_offset(t, q).saturating_sub(o),
            )
        })
        .collect()
}

/// One sample's answers from the actors.
#[derive(Default)]
struct Answers {
    offsets: Option<OffsetTable>,
    children: Vec<(String, u64)>,
    connections: Vec<(String, usize)>,
}

/// The sampler actor. See the module docs.
pub struct Sampler {
    sources: Sources,
    metrics: Arc<NodeMetrics>,
    stats: Arc<StatsHistory>,
    /// Restart counts already added to the counters, by child.
    restarts_seen: BTreeMap<String, u64>,
    lag_labels: HashSet<LagLabel>,
    slave_labels: HashSet<SlaveLabel>,
    cpu_seen: f64,
    busy: bool,
    logger: Logger,
}

impl Sampler {
    /// A sampler of `sources` into `metrics` and `stats`.
    pub fn new(
        sources: Sources,
        metrics: Arc<NodeMetrics>,
        stats: Arc<StatsHistory>,
        logger: &Logger,
    ) -> Self {
        Self {
            sources,
            metrics,
            stats,
            restarts_seen: BTreeMap::new(),
            lag_labels: HashSet::new(),
            slave_labels: HashSet::new(),
            cpu_seen: 0.0,
            busy: false,
            logger: logger.new(slog::o!("actor" => "Sampler")),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let offsets = self
            .sources
            .broker
            .as_ref()
            .and_then(|b| b.offsets.addr())
            .map(|a| a.send(GetOffsetTable));
        let children = self.sources.supervisor.send(GetChildStatus);
        let listeners: Vec<_> = self
            .sources
            .listeners
            .iter()
            .filter_map(|(kind, l)| Some((kind.clone(), l.addr()?.send(GetListenerStats))))
            .collect();
        let others: Vec<_> = self
            .sources
            .others
            .iter()
            .filter_map(|(kind, source)| Some((kind.clone(), source()?.send(GetListenerStats))))
            .collect();
        let ask = async move {
            let mut a = Answers::default();
            if let Some(f) = offsets {
                a.offsets = f.await.ok();
            }
            if let Ok(c) = children.await {
                a.children = c.into_iter().map(|c| (c.name, c.restarts)).collect();
            }
            for (kind, f) in listeners {
                if let Ok(s) = f.await {
                    a.connections.push((kind, s.connections));
                }
            }
            for (kind, f) in others {
                if let Ok(s) = f.await {
                    a.connections.push((kind, s.connections));
                }
            }
            a
        };
        ctx.spawn(ask.into_actor(self).map(|answers, act, _| {
            act.busy = false;
            act.apply(answers);
        }));
    }

    fn apply(&mut self, a: Answers) {
        let m = &self.metrics;
        let mut total_lag = 0u64;
        if let Some(b) = &self.sources.broker {
            if let Some(table) = &a.offsets {
                let rows = lag_rows(table.entries(), |t, q| b.store.max_offset(t, q));
                let now: HashSet<LagLabel> = rows.iter().map(|(l, _)| l.clone()).collect();
                for gone in self.lag_labels.difference(&now) {
                    m.consumer_lag.remove(gone);
                }
                for (label, lag) in rows {
                    total_lag += lag;
                    m.consumer_lag
                        .get_or_create(&label)
                        .set(i64::try_from(lag).unwrap_or(i64::MAX));
                }
                self.lag_labels = now;
            }
            match b.store.disk_usage_ratio() {
                Ok(r) => {
                    m.disk_used_ratio.set(r);
                }
                Err(e) => debug!(self.logger, "disk usage unknown"; "error" => %e),
            }
            let max = b.store.commit_log_max_offset();
            let flush_lag = max.saturating_sub(b.store.flushed_offset());
            m.flush_lag_bytes
                .set(i64::try_from(flush_lag).unwrap_or(i64::MAX));
            let acks = b.ha.slave_acks_by_peer();
            let now: HashSet<SlaveLabel> = acks
                .iter()
                .map(|(peer, _)| SlaveLabel {
                    slave: peer.clone(),
                })
                .collect();
            for gone in self.slave_labels.difference(&now) {
                m.replication_lag_bytes.remove(gone);
            }
            for (peer, acked) in acks {
                m.replication_lag_bytes
                    .get_or_create(&SlaveLabel { slave: peer })
                    .set(i64::try_from(max.saturating_sub(acked)).unwrap_or(i64::MAX));
            }
            self.slave_labels = now;
        }
        for (name, restarts) in a.children {
            let seen = self.restarts_seen.entry(name.clone()).or_insert(0);
            let counter = m.actor_restarts.get_or_create(&ActorLabel { actor: name });
            if restarts > *seen {
                counter.inc_by(restarts - *seen);
                *seen = restarts;
            }
        }
        for (kind, n) in a.connections {
            m.connections
                .get_or_create(&KindLabel { kind })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let p = process_stats();
        m.resident_memory_bytes
            .set(i64::try_from(p.rss_bytes).unwrap_or(i64::MAX));
        m.open_fds
            .set(i64::try_from(p.open_fds).unwrap_or(i64::MAX));
        m.start_time_seconds.set(p.start_time_seconds);
        if p.cpu_seconds > self.cpu_seen {
            m.cpu_seconds.inc_by(p.cpu_seconds - self.cpu_seen);
            self.cpu_seen = p.cpu_seconds;
        }
        if let Some(b) = &self.sources.broker {
            self.stats.record(
                now_ms(),
                b.metrics.messages_in_total(),
                b.metrics.messages_out_total(),
                total_lag,
            );
        }
    }
}

impl Actor for Sampler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(Duration::from_millis(SAMPLE_INTERVAL_MS), |act, ctx| {
            act.tick(ctx)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_max_minus_committed_never_negative() {
        let committed = [
            ("g", "t", 0u32, 3u64),
            ("g", "t", 1, 9),
            ("h", "t", 0, u64::MAX),
        ];
        let rows = lag_rows(committed.iter().copied(), |_, q| if q == 0 { 5 } else { 7 });
        let lags: Vec<(String, u64)> = rows
            .into_iter()
            .map(|(l, v)| (format!("{}/{}/{}", l.group, l.topic, l.queue), v))
            .collect();
        assert_eq!(lags, vec![("g/t/0".into(), 2), ("g/t/1".into(), 0)]);
    }
}

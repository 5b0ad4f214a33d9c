//! `StatusService`: answers `GET_BROKER_RUNTIME_INFO` (28) and
//! `GET_BROKER_CONFIG` (26) for `actormq admin broker status | config`
//! and the HTTP API.
//!
//! It reads the store's offsets, the replication state, the traffic
//! counters ([`super::metrics::BrokerMetrics`]) and asks the node's
//! supervisor for its children. Rates come from a [`RateMeter`] fed every
//! 2 s, a plain struct.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actormq_protocol::request::{
    BrokerConfigResponse, BrokerRuntimeInfo, ChildInfo, GetBrokerConfigRequest,
    GetBrokerRuntimeInfoRequest,
};
use slog::{Logger, o};

use super::BrokerStore;
use super::ha::HaState;
use super::ha::role_name;
use super::metrics::BrokerMetrics;
use crate::runtime::{Call, GetChildStatus, Reply, ServiceError, Supervisor};

/// Messages per second in and out between two readings of the totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateMeter {
    last: Option<(Instant, u64, u64)>,
    tps: (f64, f64),
}

impl RateMeter {
    /// Takes the totals at `now`; the rates are over the time since the
    /// previous reading.
    pub fn record(&mut self, now: Instant, messages_in: u64, messages_out: u64) {
        if let Some((t, i, o)) = self.last {
            let secs = now.saturating_duration_since(t).as_secs_f64();
            if secs > 0.0 {
                self.tps = (
                    messages_in.saturating_sub(i) as f64 / secs,
                    messages_out.saturating_sub(o) as f64 / secs,
                );
            }
        }
        self.last = Some((now, messages_in, messages_out));
    }

    /// `(in, out)` messages per second.
    pub fn rates(&self) -> (f64, f64) {
        self.tps
    }
}

/// The status service. See the module docs.
pub struct StatusService {
    store: BrokerStore,
    ha: Arc<HaState>,
    metrics: Arc<BrokerMetrics>,
    supervisor: Addr<Supervisor>,
    config: Arc<BTreeMap<String, String>>,
    broker_name: String,
    started: Instant,
    rates: RateMeter,
    logger: Logger,
}

impl StatusService {
    /// A service over the broker's parts; `config` is what
    /// `GET_BROKER_CONFIG` answers; `started` the broker's start.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: BrokerStore,
        ha: Arc<HaState>,
        metrics: Arc<BrokerMetrics>,
        supervisor: Addr<Supervisor>,
        config: Arc<BTreeMap<String, String>>,
        broker_name: String,
        started: Instant,
        logger: &Logger,
    ) -> Self {
        Self {
            store,
            ha,
            metrics,
            supervisor,
            config,
            broker_name,
            started,
            rates: RateMeter::default(),
            logger: logger.new(o!("actor" => "StatusService")),
        }
    }

    fn sample(&mut self) {
        self.rates.record(
            Instant::now(),
            self.metrics.messages_in_total(),
            self.metrics.messages_out_total(),
        );
    }

    fn info(&self, children: Vec<ChildInfo>) -> BrokerRuntimeInfo {
        let role = self.ha.role();
        let (min, max) = (
            self.store.commit_log_min_offset(),
            self.store.commit_log_max_offset(),
        );
        let (tps_in, tps_out) = self.rates.rates();
        BrokerRuntimeInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            broker_name: self.broker_name.clone(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            role: if role.is_master() { "master" } else { "slave" }.to_owned(),
            ha_role: role_name(role).to_owned(),
            slaves: self.ha.slaves().0 as u64,
            store_bytes: max.saturating_sub(min),
            commit_log_min_offset: min,
            commit_log_max_offset: max,
            flushed_offset: self.store.flushed_offset(),
            disk_used_ratio: self.store.disk_usage_ratio().unwrap_or(0.0),
            messages_in_total: self.metrics.messages_in_total(),
            messages_out_total: self.metrics.messages_out_total(),
            tps_in,
            tps_out,
            children,
        }
    }
}

impl Actor for StatusService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.sample();
        ctx.run_interval(Duration::from_secs(2), |act, _| act.sample());
        slog::debug!(self.logger, "status service started");
    }
}

impl Handler<Call<GetBrokerRuntimeInfoRequest>> for StatusService {
    type Result = ResponseActFuture<Self, Result<Reply<BrokerRuntimeInfo>, ServiceError>>;

    fn handle(
        &mut self,
        _: Call<GetBrokerRuntimeInfoRequest>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let ask = self.supervisor.send(GetChildStatus);
        Box::pin(
            async move { ask.await.unwrap_or_default() }
                .into_actor(self)
                .map(|children, act, _| {
                    let children = children
                        .into_iter()
                        .map(|c| ChildInfo {
                            name: c.name,
                            running: c.running,
                            restarts: c.restarts,
                        })
                        .collect();
                    Ok(Reply::ok(act.info(children)))
                }),
        )
    }
}

impl Handler<Call<GetBrokerConfigRequest>> for StatusService {
    type Result = Result<Reply<BrokerConfigResponse>, ServiceError>;

    fn handle(&mut self, _: Call<GetBrokerConfigRequest>, _: &mut Context<Self>) -> Self::Result {
        Ok(Reply::ok(BrokerConfigResponse {
            config: self.config.as_ref().clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_over_the_time_between_readings() {
        let mut m = RateMeter::default();
        let t = Instant::now();
        m.record(t, 0, 0);
        assert_eq!(m.rates(), (0.0, 0.0));
        m.record(t + Duration::from_secs(2), 100, 40);
        assert_eq!(m.rates(), (50.0, 20.0));
        // No time passed: the rates stay.
        m.record(t + Duration::from_secs(2), 500, 40);
        assert_eq!(m.rates(), (50.0, 20.0));
    }
}

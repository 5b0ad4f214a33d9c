//! `HaClient`: the slave side of replication, and the broker's role switch
//! ([`SwitchRole`]). See the [module docs](super).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use slog::{Logger, info, o, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config_sync::{ConfigSnapshot, SnapshotSink};
use super::replicator::LinkError;
use super::wire::{self, Frame};
use super::{HaConfig, HaRole, HaState};
use crate::broker::broker_store::BrokerStore;
use crate::broker::dispatcher::LogAppended;
use crate::runtime::{Call, Reply, ServiceError};
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{PromoteBrokerRequest, PromoteBrokerResponse};

/// Switch this broker's role (what `admin broker promote` sends to a
/// slave, and what a consensus module would send). A slave may become a
/// master (it stops replicating and takes writes from its last
/// replicated offset); a master may switch between async and sync; a
/// master is not turned into a slave while running (restart it as one).
/// Replies with the previous role.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<HaRole, SwitchRoleError>")]
pub struct SwitchRole {
    /// The new role.
    pub to: HaRole,
}

/// Why a role switch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SwitchRoleError {
    /// A running master cannot become a slave.
    #[error("a running master cannot become a slave (restart it with --ha-role slave)")]
    Demotion,
}

/// The slave's replication actor: connects to the master's HA port,
/// appends what it streams, reports progress, reconnects with backoff.
/// On a master it idles (it still serves [`SwitchRole`]).
pub struct HaClient {
    store: BrokerStore,
    ha: Arc<HaState>,
    config: HaConfig,
    dispatcher: Option<Recipient<LogAppended>>,
    sink: Option<SnapshotSink>,
    broker_name: String,
    logger: Logger,
}

impl HaClient {
    /// A client replicating into `store` from `config.master` while the
    /// role in `ha` is slave; nudges `dispatcher` after every append and
    /// hands the master's config snapshots to `sink`.
    pub fn new(
        store: BrokerStore,
        ha: Arc<HaState>,
        config: HaConfig,
        dispatcher: Option<Recipient<LogAppended>>,
        sink: Option<SnapshotSink>,
        broker_name: &str,
        logger: &Logger,
    ) -> Self {
        let master = config.master.map(|m| m.to_string()).unwrap_or_default();
        Self {
            store,
            ha,
            config,
            dispatcher,
            sink,
            broker_name: broker_name.to_string(),
            logger: logger.new(o!("actor" => "HaClient", "master" => master)),
        }
    }
}

impl Actor for HaClient {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let run = run(
            self.store.clone(),
            self.ha.clone(),
            self.config.clone(),
            self.dispatcher.clone(),
            self.sink.clone(),
            self.logger.clone(),
        );
        ctx.spawn(actix::fut::wrap_future::<_, Self>(run));
    }
}

impl Handler<Call<PromoteBrokerRequest>> for HaClient {
    type Result = Result<Reply<PromoteBrokerResponse>, ServiceError>;

    fn handle(
        &mut self,
        call: Call<PromoteBrokerRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let req = call.req;
        if req.broker_name != self.broker_name {
            return Err(ServiceError::new(
                ResponseCode::NoPermission,
                format!(
                    "this broker is {:?}, not {:?}",
                    self.broker_name, req.broker_name
                ),
            ));
        }
        let from = self.ha.role();
        if from == HaRole::Slave {
            warn!(self.logger, "promotion requested"; "broker_id" => req.broker_id);
            <Self as Handler<SwitchRole>>::handle(
                self,
                SwitchRole {
                    to: HaRole::AsyncMaster,
                },
                ctx,
            )
            .map_err(|e| ServiceError::new(ResponseCode::SystemError, e.to_string()))?;
        }
        Ok(Reply::ok(PromoteBrokerResponse {
            previous_role: role_name(from).into(),
            role: role_name(self.ha.role()).into(),
            commit_log_offset: self.store.commit_log_max_offset(),
        }))
    }
}

/// The role as the command line spells it.
pub fn role_name(role: HaRole) -> &'static str {
    match role {
        HaRole::AsyncMaster => "async-master",
        HaRole::SyncMaster => "sync-master",
        HaRole::Slave => "slave",
    }
}

impl Handler<SwitchRole> for HaClient {
    type Result = Result<HaRole, SwitchRoleError>;

    fn handle(&mut self, msg: SwitchRole, _: &mut Context<Self>) -> Self::Result {
        let from = self.ha.role();
        if from.is_master() && msg.to == HaRole::Slave {
            return Err(SwitchRoleError::Demotion);
        }
        if from != msg.to {
            self.ha.set_role(msg.to);
            let end = self.store.commit_log_max_offset();
            info!(self.logger, "role switched"; "from" => ?from, "to" => ?msg.to,
                "commit_log_end" => end);
        }
        Ok(from)
    }
}

async fn run(
    store: BrokerStore,
    ha: Arc<HaState>,
    config: HaConfig,
    dispatcher: Option<Recipient<LogAppended>>,
    sink: Option<SnapshotSink>,
    logger: Logger,
) {
    let mut roles = ha.watch_role();
    let mut backoff = config.reconnect_min;
    loop {
        let master = match (ha.role(), config.master) {
            (HaRole::Slave, Some(m)) => m,
            (HaRole::Slave, None) => {
                warn!(logger, "slave without a master address: not replicating");
                if roles.changed().await.is_err() {
                    return;
                }
                continue;
            }
            _ => {
                if roles.changed().await.is_err() {
                    return;
                }
                continue;
            }
        };
        let mut progressed = false;
        let res = link(
            master,
            &store,
            &ha,
            &config,
            dispatcher.as_ref(),
            sink.as_ref(),
            &mut roles,
            &mut progressed,
            &logger,
        )
        .await;
        ha.update_slave_status(|s| s.connected = false);
        if let Err(e) = res {
            warn!(logger, "replication link ended"; "error" => %e,
                "local_offset" => store.commit_log_max_offset());
            ha.update_slave_status(|s| s.error = Some(e.to_string()));
        }
        if progressed {
            backoff = config.reconnect_min;
        }
        if ha.role() != HaRole::Slave {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = roles.changed() => {}
        }
        backoff = (backoff * 2).min(config.reconnect_max);
    }
}

#[allow(clippy::too_many_arguments)]
async fn link(
    master: std::net::SocketAddr,
    store: &BrokerStore,
    ha: &HaState,
    config: &HaConfig,
    dispatcher: Option<&Recipient<LogAppended>>,
    sink: Option<&SnapshotSink>,
    roles: &mut tokio::sync::watch::Receiver<HaRole>,
    progressed: &mut bool,
    logger: &Logger,
) -> Result<(), LinkError> {
    let connect_timeout = config.idle_timeout.min(Duration::from_secs(5));
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(master))
        .await
        .map_err(|_| LinkError::Silent(connect_timeout))??;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut end = store.commit_log_max_offset();
    wr.write_all(&wire::encode_report(end)).await?;
    info!(logger, "connected to master"; "from" => end);
    ha.update_slave_status(|s| {
        s.connected = true;
        s.local_offset = end;
    });
    let mut buf = BytesMut::with_capacity(config.chunk_bytes + wire::FRAME_HEADER_LEN);
    let mut last_report = Instant::now();
    let mut last_heard = Instant::now();
    loop {
        let mut appended = false;
        while let Some(frame) = Frame::decode(&mut buf)? {
            if ha.role() != HaRole::Slave {
                // Promoted: the writer owns the log from here on.
                info!(logger, "no longer a slave: replication stops"; "local_offset" => end);
                return Ok(());
            }
            match frame {
                Frame::Data { offset, body } => {
                    end = store.append_raw(offset, &body).map_err(|e| {
                        LinkError::Refused(format!(
                            "cannot take the master's bytes at {offset} (local end {end}): {e}"
                        ))
                    })?;
                    appended = true;
                    *progressed = true;
                }
                Frame::Heartbeat { master_offset } => {
                    ha.update_slave_status(|s| s.master_offset = master_offset);
                }
                Frame::Config { body, .. } => match ConfigSnapshot::decode(&body) {
                    Ok(snapshot) => {
                        if let Some(apply) = sink {
                            apply(snapshot).await;
                        }
                    }
                    Err(e) => warn!(logger, "bad config snapshot from the master"; "error" => %e),
                },
                Frame::Error { reason, .. } => {
                    return Err(LinkError::Refused(format!("the master refused: {reason}")));
                }
            }
        }
        if appended {
            if let Some(d) = dispatcher {
                d.do_send(LogAppended);
            }
            ha.update_slave_status(|s| {
                s.local_offset = end;
                s.master_offset = s.master_offset.max(end);
                s.error = None;
            });
        }
        if appended || last_report.elapsed() >= config.heartbeat {
            wr.write_all(&wire::encode_report(end)).await?;
            last_report = Instant::now();
        }
        tokio::select! {
            r = tokio::time::timeout(config.heartbeat, rd.read_buf(&mut buf)) => match r {
                Ok(Ok(0)) => {
                    return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(Ok(_)) => last_heard = Instant::now(),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    if last_heard.elapsed() >= config.idle_timeout {
                        return Err(LinkError::Silent(config.idle_timeout));
                    }
                }
            },
            _ = roles.changed() => {
                if ha.role() != HaRole::Slave {
                    info!(logger, "no longer a slave: replication stops"; "local_offset" => end);
                    return Ok(());
                }
            }
        }
    }
}

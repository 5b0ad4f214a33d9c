//! `HaReplicator` (the master's HA listener) and `HaConnection` (one per
//! connected slave). See the [module docs](super).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actormq_store::RawRead;
use bytes::BytesMut;
use slog::{Logger, info, o, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::config_sync::SnapshotSource;
use super::wire::{self, Frame};
use super::{HaConfig, HaState, transfer_start};
use crate::broker::broker_store::BrokerStore;

/// Why a link to a slave ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Socket error or close.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not the HA format.
    #[error("not an HA peer: {0}")]
    Wire(#[from] wire::WireError),
    /// The peer was silent for too long.
    #[error("peer silent for {0:?}")]
    Silent(Duration),
    /// The slave cannot be served from where it is.
    #[error("{0}")]
    Refused(String),
}

/// The master's HA listener: accepts slaves and starts an
/// [`HaConnection`] for each; expires sync sends nobody acknowledged.
pub struct HaReplicator {
    listener: Option<std::net::TcpListener>,
    store: BrokerStore,
    ha: Arc<HaState>,
    config: HaConfig,
    configs: Option<SnapshotSource>,
    connections: Vec<Addr<HaConnection>>,
    logger: Logger,
}

impl HaReplicator {
    /// A replicator accepting on `listener` (already bound); `configs`
    /// snapshots the configs sent to slaves (`None`: none sent).
    pub fn new(
        listener: std::net::TcpListener,
        store: BrokerStore,
        ha: Arc<HaState>,
        config: HaConfig,
        configs: Option<SnapshotSource>,
        logger: &Logger,
    ) -> Self {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        Self {
            listener: Some(listener),
            store,
            ha,
            config,
            configs,
            connections: Vec::new(),
            logger: logger.new(o!("actor" => "HaReplicator", "addr" => addr)),
        }
    }

    fn accept(listener: Rc<TcpListener>, ctx: &mut Context<Self>) {
        let next = listener.clone();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(async move { listener.accept().await }).map(
                move |res, act, ctx| {
                    match res {
                        Ok((stream, peer)) => act.open(stream, peer),
                        Err(e) => warn!(act.logger, "accept failed"; "error" => %e),
                    }
                    Self::accept(next, ctx);
                },
            ),
        );
    }

    fn open(&mut self, stream: TcpStream, peer: SocketAddr) {
        self.connections.retain(|c| c.connected());
        let conn = HaConnection {
            stream: Some(stream),
            store: self.store.clone(),
            ha: self.ha.clone(),
            config: self.config.clone(),
            configs: self.configs.clone(),
            logger: self.logger.new(o!("slave" => peer.to_string())),
        };
        self.connections.push(conn.start());
    }
}

impl Actor for HaReplicator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(std_listener) = self.listener.take() else {
            ctx.stop();
            return;
        };
        let socket = std_listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(std_listener));
        match socket {
            Ok(l) => {
                info!(self.logger, "HA listening");
                Self::accept(Rc::new(l), ctx);
            }
            Err(e) => {
                warn!(self.logger, "cannot listen"; "error" => %e);
                ctx.stop();
                return;
            }
        }
        ctx.run_interval(Duration::from_millis(10), |act, _| {
            act.ha.expire(Instant::now())
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for c in self.connections.drain(..) {
            c.do_send(CloseLink);
        }
    }
}

/// Ends a link.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct CloseLink;

/// One connected slave: streams the commit log to it and takes its
/// acknowledgements. Not restarted: a slave reconnects.
pub struct HaConnection {
    stream: Option<TcpStream>,
    store: BrokerStore,
    ha: Arc<HaState>,
    config: HaConfig,
    configs: Option<SnapshotSource>,
    logger: Logger,
}

impl Actor for HaConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(stream) = self.stream.take() else {
            ctx.stop();
            return;
        };
        let (store, ha, config, configs, logger) = (
            self.store.clone(),
            self.ha.clone(),
            self.config.clone(),
            self.configs.clone(),
            self.logger.clone(),
        );
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(serve(stream, store, ha, config, configs, logger))
                .map(|res, act, ctx| {
                    match res {
                        Ok(()) => info!(act.logger, "slave link closed"),
                        Err(e) => warn!(act.logger, "slave link ended"; "error" => %e),
                    }
                    ctx.stop();
                }),
        );
    }
}

impl Handler<CloseLink> for HaConnection {
    type Result = ();
    fn handle(&mut self, _: CloseLink, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Takes the slave's id back out of the table when the link ends, however.
struct Registered {
    ha: Arc<HaState>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.ha.slave_gone(self.id);
    }
}

async fn read_report(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    idle: Duration,
) -> Result<u64, LinkError> {
    loop {
        if let Some(offset) = wire::decode_reports(buf)? {
            return Ok(offset);
        }
        let n = tokio::time::timeout(idle, rd.read_buf(buf))
            .await
            .map_err(|_| LinkError::Silent(idle))??;
        if n == 0 {
            return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

async fn send_frame(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    frame: &Frame,
) -> Result<(), LinkError> {
    let mut head = BytesMut::with_capacity(wire::FRAME_HEADER_LEN);
    frame.encode_header(&mut head);
    wr.write_all(&head).await?;
    if let Frame::Data { body, .. } | Frame::Config { body, .. } = frame {
        // Data: straight from the mapped segment.
        wr.write_all(body).await?;
    }
    Ok(())
}

async fn serve(
    stream: TcpStream,
    store: BrokerStore,
    ha: Arc<HaState>,
    config: HaConfig,
    configs: Option<SnapshotSource>,
    logger: Logger,
) -> Result<(), LinkError> {
    stream.set_nodelay(true)?;
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (mut rd, mut wr) = stream.into_split();
    let mut inbuf = BytesMut::with_capacity(256);
    let first = read_report(&mut rd, &mut inbuf, config.idle_timeout).await?;
    let (min, max) = (store.commit_log_min_offset(), store.commit_log_max_offset());
    let start = match transfer_start(first, min, max) {
        Ok(s) => s,
        Err(refusal) => {
            let reason = refusal.to_string();
            let frame = Frame::Error {
                master_offset: max,
                reason: reason.clone(),
            };
            // Best effort: the slave logs the reason.
            drop(send_frame(&mut wr, &frame).await);
            return Err(LinkError::Refused(reason));
        }
    };
    info!(logger, "slave connected"; "from" => start, "master_offset" => max);
    let registered = Registered {
        id: ha.slave_connected(first),
        ha: ha.clone(),
    };
    if !peer.is_empty() {
        ha.slave_peer(registered.id, peer);
    }
    let acks = take_acks(rd, inbuf, registered, config.idle_timeout);
    let transfer = async move {
        let mut next = start;
        let mut next_config = Instant::now();
        let mut sent_version = None;
        loop {
            if let Some(source) = &configs
                && (Instant::now() >= next_config || sent_version != Some((source.version)()))
            {
                next_config = Instant::now() + config.config_sync;
                sent_version = Some((source.version)());
                let snapshot = (source.snapshot)().await;
                if let Some(body) = snapshot.and_then(|s| s.encode().ok()) {
                    let master_offset = store.commit_log_max_offset();
                    let frame = Frame::Config {
                        master_offset,
                        body: body.into(),
                    };
                    send_frame(&mut wr, &frame).await?;
                }
            }
            let grew = ha.grew.notified();
            tokio::pin!(grew);
            grew.as_mut().enable();
            match store.read_raw(next, config.chunk_bytes) {
                RawRead::Chunk(body) => {
                    let len = body.len() as u64;
                    send_frame(&mut wr, &Frame::Data { offset: next, body }).await?;
                    next += len;
                }
                RawRead::CaughtUp => {
                    let mut wait = config.heartbeat;
                    if configs.is_some() {
                        wait = wait.min(next_config.saturating_duration_since(Instant::now()));
                    }
                    if tokio::time::timeout(wait, grew).await.is_err() {
                        let master_offset = store.commit_log_max_offset();
                        send_frame(&mut wr, &Frame::Heartbeat { master_offset }).await?;
                    }
                }
                other => {
                    let reason = match other {
                        RawRead::TooOld { min_offset } => super::StartRefusal::TooFarBehind {
                            slave: next,
                            master_min: min_offset,
                        }
                        .to_string(),
                        RawRead::Ahead { max_offset } => {
                            format!("slave ahead of its master at {next} (master end {max_offset})")
                        }
                        RawRead::Diverged(e) => format!("logs diverged: {e}"),
                        _ => "unexpected".into(),
                    };
                    let master_offset = store.commit_log_max_offset();
                    drop(
                        send_frame(
                            &mut wr,
                            &Frame::Error {
                                master_offset,
                                reason: reason.clone(),
                            },
                        )
                        .await,
                    );
                    return Err::<(), LinkError>(LinkError::Refused(reason));
                }
            }
        }
    };
    tokio::select! {
        r = acks => r,
        r = transfer => r,
    }
}

/// Reads the slave's reports until the link ends: each acknowledges its end.
async fn take_acks(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut buf: BytesMut,
    registered: Registered,
    idle: Duration,
) -> Result<(), LinkError> {
    loop {
        let offset = read_report(&mut rd, &mut buf, idle).await?;
        registered.ha.slave_acked(registered.id, offset);
    }
}

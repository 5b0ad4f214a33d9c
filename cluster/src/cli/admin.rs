//! `actormq admin`: clusters and topics (through the name servers and the
//! brokers, by [`actormq_sdk::admin`], which the HTTP admin API uses
//! too); group progress is in [`super::consume`], group configs in
//! [`super::subscription_group`], message lookups in [`super::msg`];
//! offset reset asks every master broker of the topic's route; dead
//! letters in [`super::dlq`].

use actormq_sdk::ClientError;
use actormq_sdk::admin::{Admin, CreateTopic};
use actormq_sdk::protocol::request::{
    ClusterInfo, GetBrokerClusterInfoRequest, GetRouteInfoByTopicRequest, PromoteBrokerRequest,
    ResetOffsetRequest, TopicRouteData,
};
use actormq_sdk::protocol::{Bytes, ResponseCode};
use actormq_sdk::route::RouteCache;
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;
use slog::Logger;

use super::subscription_group::{self, CreateGroupArgs, GroupArg};
use super::{CliError, CommonArgs, GroupProgressArgs, emit, run_group_progress};

/// `actormq admin`.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// What to administer.
    #[command(subcommand)]
    pub what: AdminCommand,
}

/// Admin areas.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Brokers and clusters.
    Cluster {
        /// The action.
        #[command(subcommand)]
        action: ClusterCommand,
    },
    /// Topics: create, list, route, status, delete.
    Topic {
        /// The action.
        #[command(subcommand)]
        action: TopicCommand,
    },
    /// Consumer groups.
    Group {
        /// The action.
        #[command(subcommand)]
        action: GroupCommand,
    },
    /// Look up messages by id or key.
    Msg {
        /// The action.
        #[command(subcommand)]
        action: MsgCommand,
    },
    /// Consumer offsets.
    Offset {
        /// The action.
        #[command(subcommand)]
        action: OffsetCommand,
    },
    /// Dead-letter queues.
    Dlq {
        /// The action.
        #[command(subcommand)]
        action: DlqCommand,
    },
    /// Brokers: status, config, promotion (high availability).
    Broker {
        /// The action.
        #[command(subcommand)]
        action: BrokerCommand,
    },
    /// The clients online in a consumer or producer group: client id,
    /// address, language and version, one line per client.
    Connections(ConnectionsArgs),
}

/// `admin connections`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["group", "producer_group"])))]
pub struct ConnectionsArgs {
    /// Consumer group.
    #[arg(short, long)]
    pub group: Option<String>,
    /// Producer group.
    #[arg(long, value_name = "GROUP")]
    pub producer_group: Option<String>,
}

/// `admin broker …`.
#[derive(Debug, Clone, Subcommand)]
pub enum BrokerCommand {
    /// Runtime status of every broker (or of one broker name): version,
    /// uptime, roles, commit log offsets and size, rates in and out, and
    /// the node's supervised children with their restart counts. One line
    /// per broker address.
    Status {
        /// Only this broker name (master and slaves).
        #[arg(long, value_name = "NAME")]
        broker: Option<String>,
    },
    /// The effective configuration of every broker (or of one broker
    /// name), as `key = value` (keys as in the node's TOML). One object
    /// per broker address with --json.
    Config {
        /// Only this broker name (master and slaves).
        #[arg(long, value_name = "NAME")]
        broker: Option<String>,
    },
    /// Make a slave the master of its broker name (its master is gone for
    /// good): it stops replicating, takes writes from its last replicated
    /// offset and registers as broker id 0. Under async replication the
    /// sends the master acknowledged but had not streamed yet are lost;
    /// under sync replication every acknowledged send is on the slave.
    Promote {
        /// Broker name (master and slaves share it).
        #[arg(long, value_name = "NAME")]
        broker: String,
        /// The slave's broker id (> 0), as the name servers list it.
        #[arg(long, value_name = "N")]
        broker_id: u64,
    },
}

/// `admin cluster …`.
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Every broker the name servers know: one line per broker address.
    List,
}

/// `-t TOPIC`.
#[derive(Debug, Clone, Args)]
pub struct TopicArg {
    /// Topic.
    #[arg(short, long)]
    pub topic: String,
}

/// `admin topic create`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("target").args(["broker", "cluster"])))]
pub struct CreateTopicArgs {
    /// Topic.
    #[arg(short, long)]
    pub topic: String,
    /// Read and write queues per broker [default: 8; 1 with --order].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub queues: Option<u32>,
    /// Create on this broker (its master) only.
    #[arg(long, value_name = "NAME")]
    pub broker: Option<String>,
    /// Create on every master broker of this cluster [default: every master
    /// broker the name servers know].
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// An ordered topic: producers keep every send on the queue it was
    /// given (no failover to another queue), so each queue is in send
    /// order; with one queue (the default with --order) the whole topic is
    /// (global order). Consume it with `consume --orderly`.
    #[arg(long)]
    pub order: bool,
}

/// `admin topic …`.
#[derive(Debug, Clone, Subcommand)]
pub enum TopicCommand {
    /// Create (or update) a topic on master brokers; they re-register it with
    /// the name servers.
    Create(CreateTopicArgs),
    /// Every topic the name servers know: one line per topic.
    List,
    /// The topic's route: one line per broker.
    Route(TopicArg),
    /// Per queue: min and max offset.
    Status(TopicArg),
    /// Delete a topic from its brokers and from every name server.
    Delete(TopicArg),
}

/// `admin group …`.
#[derive(Debug, Clone, Subcommand)]
pub enum GroupCommand {
    /// Per queue: broker offset, consumer offset, lag; then the total lag.
    Progress(GroupProgressArgs),
    /// Every consumer group config of every master broker: one line per
    /// group and broker.
    List,
    /// Create a consumer group's config on every master broker, or replace
    /// it where it exists (flags not given take their defaults).
    Create(CreateGroupArgs),
    /// Delete a consumer group's config from every master broker; fails
    /// when no broker has it.
    Delete(GroupArg),
}

/// `admin msg …`.
#[derive(Debug, Clone, Subcommand)]
pub enum MsgCommand {
    /// A message by id.
    Get {
        /// Message id.
        #[arg(long, value_name = "MSG_ID")]
        id: String,
    },
    /// Messages of a topic by key.
    Query {
        /// Topic.
        #[arg(short, long)]
        topic: String,
        /// Key.
        #[arg(long)]
        key: String,
        /// From (ms since the epoch).
        #[arg(long, value_name = "TS")]
        begin_ms: Option<u64>,
        /// To (ms since the epoch).
        #[arg(long, value_name = "TS")]
        end_ms: Option<u64>,
    },
}

/// `admin offset …`.
#[derive(Debug, Clone, Subcommand)]
pub enum OffsetCommand {
    /// Reset a group's offsets on every queue of a topic to the first
    /// message stored at or after a time (forward or back; after the last
    /// message: the end; before the first: the start). Consumers online
    /// continue from there without a restart; with none online, the next
    /// one starts there. One line per queue: topic, broker, queue, new
    /// offset.
    Reset {
        /// Consumer group.
        #[arg(short, long)]
        group: String,
        /// Topic.
        #[arg(short, long)]
        topic: String,
        /// The time (ms since the epoch).
        #[arg(long, value_name = "TS")]
        timestamp_ms: u64,
    },
}

/// `admin dlq …`.
#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// Send dead letters of a group back to the topics they first failed
    /// on (reconsume times 0); a second run resends only newer ones.
    /// One line per message, then {"resent":N,"remaining":M}.
    Resend {
        /// Consumer group.
        #[arg(short, long)]
        group: String,
        /// At most N messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

/// `actormq admin …`.
pub async fn run(common: &CommonArgs, args: &AdminArgs, log: &Logger) -> Result<(), CliError> {
    match &args.what {
        AdminCommand::Cluster {
            action: ClusterCommand::List,
        } => cluster_list(common, &common.admin(log)?).await,
        AdminCommand::Topic { action } => {
            let admin = common.admin(log)?;
            match action {
                TopicCommand::Create(a) => topic_create(common, &admin, a).await,
                TopicCommand::List => topic_list(common, &admin).await,
                TopicCommand::Route(a) => topic_route(common, &admin, &a.topic).await,
                TopicCommand::Status(a) => topic_status(common, &admin, &a.topic).await,
                TopicCommand::Delete(a) => topic_delete(common, &admin, &a.topic).await,
            }
        }
        AdminCommand::Group { action } => match action {
            GroupCommand::Progress(a) => run_group_progress(common, a, log).await,
            GroupCommand::List => subscription_group::list(common, &common.admin(log)?).await,
            GroupCommand::Create(a) => {
                subscription_group::create(common, &common.admin(log)?, a).await
            }
            GroupCommand::Delete(a) => {
                subscription_group::delete(common, &common.admin(log)?, &a.group).await
            }
        },
        AdminCommand::Msg { action } => super::msg::run(common, action, log).await,
        AdminCommand::Offset { action } => offset_reset(common, action, log).await,
        AdminCommand::Dlq {
            action: DlqCommand::Resend { group, count },
        } => super::dlq::resend(common, &common.admin(log)?, group, *count).await,
        AdminCommand::Broker {
            action: BrokerCommand::Promote { broker, broker_id },
        } => broker_promote(common, &common.route_cache(log)?, broker, *broker_id).await,
        AdminCommand::Broker {
            action: BrokerCommand::Status { broker },
        } => broker_status(common, &common.admin(log)?, broker.as_deref()).await,
        AdminCommand::Broker {
            action: BrokerCommand::Config { broker },
        } => broker_config(common, &common.admin(log)?, broker.as_deref()).await,
        AdminCommand::Connections(a) => connections(common, &common.admin(log)?, a).await,
    }
}

/// `admin broker promote`: finds the slave through the name servers and
/// asks it to become the master (`PROMOTE_BROKER`).
async fn broker_promote(
    common: &CommonArgs,
    routes: &RouteCache,
    broker: &str,
    broker_id: u64,
) -> Result<(), CliError> {
    if broker_id == 0 {
        return Err(CliError(
            "--broker-id 0 is the master already; give the slave's id".into(),
        ));
    }
    let info = cluster_info(routes).await?;
    let addr = info
        .broker_addr_table
        .get(broker)
        .and_then(|d| d.broker_addrs.get(&broker_id))
        .cloned()
        .ok_or_else(|| {
            CliError(format!(
                "no broker {broker} with id {broker_id} is registered with the name servers"
            ))
        })?;
    let req = PromoteBrokerRequest {
        broker_name: broker.to_owned(),
        broker_id,
    };
    let r = routes
        .connections()
        .call(&addr, req, Bytes::new(), common.timeout())
        .await
        .map_err(|e| CliError(format!("promote {broker} id {broker_id} ({addr}): {e}")))?
        .fields;
    emit(
        common.json,
        &json!({"broker": broker, "broker_id": broker_id, "addr": addr,
            "previous_role": r.previous_role, "role": r.role,
            "commit_log_offset": r.commit_log_offset}),
        || {
            format!(
                "{broker} ({addr}) was {} and is now {}, writing from commit log offset {}",
                r.previous_role, r.role, r.commit_log_offset
            )
        },
    );
    Ok(())
}

async fn broker_status(
    common: &CommonArgs,
    admin: &Admin,
    broker: Option<&str>,
) -> Result<(), CliError> {
    for b in admin.broker_status(broker).await? {
        emit(common.json, &b, || {
            let i = &b.info;
            let mut text = format!(
                "{} id={} {} version={} uptime={}s role={} ha_role={} slaves={}\n  \
                 commit log: min={} max={} flushed={} size={} bytes, disk used {:.1}%\n  \
                 messages: in={} ({:.1}/s) out={} ({:.1}/s)\n  supervised children:",
                b.broker,
                b.broker_id,
                b.addr,
                i.version,
                i.uptime_ms / 1000,
                i.role,
                i.ha_role,
                i.slaves,
                i.commit_log_min_offset,
                i.commit_log_max_offset,
                i.flushed_offset,
                i.store_bytes,
                i.disk_used_ratio * 100.0,
                i.messages_in_total,
                i.tps_in,
                i.messages_out_total,
                i.tps_out,
            );
            for c in &i.children {
                text.push_str(&format!(
                    "\n    {:<28} {} restarts={}",
                    c.name,
                    if c.running { "running" } else { "stopped" },
                    c.restarts
                ));
            }
            text
        });
    }
    Ok(())
}

async fn broker_config(
    common: &CommonArgs,
    admin: &Admin,
    broker: Option<&str>,
) -> Result<(), CliError> {
    for b in admin.broker_config(broker).await? {
        emit(common.json, &b, || {
            let mut text = format!("# {} id={} {}", b.broker, b.broker_id, b.addr);
            for (k, v) in &b.config {
                text.push_str(&format!("\n{k} = {v}"));
            }
            text
        });
    }
    Ok(())
}

async fn connections(
    common: &CommonArgs,
    admin: &Admin,
    a: &ConnectionsArgs,
) -> Result<(), CliError> {
    let (kind, group, list) = match (&a.group, &a.producer_group) {
        (Some(g), _) => ("consumer", g, admin.group_clients(g).await?),
        (None, Some(g)) => ("producer", g, admin.producer_clients(g).await?),
        (None, None) => return Err(CliError("-g GROUP or --producer-group GROUP".into())),
    };
    if list.is_empty() {
        return Err(CliError(format!(
            "no client of {kind} group {group} is online"
        )));
    }
    for c in &list {
        emit(common.json, c, || {
            format!("{}\t{}\t{}\t{}", c.client_id, c.addr, c.language, c.version)
        });
    }
    Ok(())
}

async fn cluster_info(routes: &RouteCache) -> Result<ClusterInfo, CliError> {
    Ok(routes
        .namesrv_call(GetBrokerClusterInfoRequest {})
        .await?
        .fields)
}

/// The route of `topic`, or "topic T does not exist".
async fn route_data(routes: &RouteCache, topic: &str) -> Result<TopicRouteData, CliError> {
    match routes
        .namesrv_call(GetRouteInfoByTopicRequest {
            topic: topic.to_owned(),
        })
        .await
    {
        Ok(r) => Ok(r.fields),
        Err(ClientError::Broker {
            code: ResponseCode::TopicNotExist,
            ..
        }) => Err(CliError(format!("topic {topic} does not exist"))),
        Err(e) => Err(e.into()),
    }
}

async fn cluster_list(common: &CommonArgs, admin: &Admin) -> Result<(), CliError> {
    for b in admin.cluster_list().await? {
        emit(common.json, &b, || {
            format!(
                "{}\t{}\t{}\t{}\t{}",
                b.cluster, b.broker, b.broker_id, b.addr, b.role
            )
        });
    }
    Ok(())
}

async fn topic_create(
    common: &CommonArgs,
    admin: &Admin,
    a: &CreateTopicArgs,
) -> Result<(), CliError> {
    let created = admin
        .create_topic(&CreateTopic {
            topic: a.topic.clone(),
            queues: a.queues,
            broker: a.broker.clone(),
            cluster: a.cluster.clone(),
            order: a.order,
        })
        .await?;
    for c in &created {
        emit(common.json, c, || {
            format!(
                "created {} on {} ({}) with {} queues",
                c.topic, c.broker, c.addr, c.queues
            )
        });
    }
    Ok(())
}

async fn topic_list(common: &CommonArgs, admin: &Admin) -> Result<(), CliError> {
    for t in admin.topic_names().await? {
        emit(common.json, &json!({"topic": t}), || t.clone());
    }
    Ok(())
}

async fn topic_route(common: &CommonArgs, admin: &Admin, topic: &str) -> Result<(), CliError> {
    for r in admin.topic_route(topic).await? {
        emit(common.json, &r, || {
            format!(
                "{topic}\t{}\t{}\tread={} write={} perm={}",
                r.broker, r.master, r.read_queues, r.write_queues, r.perm
            )
        });
    }
    Ok(())
}

async fn topic_status(common: &CommonArgs, admin: &Admin, topic: &str) -> Result<(), CliError> {
    for q in admin.topic_status(topic).await? {
        emit(common.json, &q, || {
            format!(
                "{topic}\t{}\t{}\tmin={} max={}",
                q.broker, q.queue_id, q.min_offset, q.max_offset
            )
        });
    }
    Ok(())
}

async fn topic_delete(common: &CommonArgs, admin: &Admin, topic: &str) -> Result<(), CliError> {
    let d = admin.delete_topic(topic).await?;
    emit(common.json, &d, || {
        format!(
            "deleted {topic} from brokers {:?} and name servers {:?}",
            d.brokers, d.namesrvs
        )
    });
    Ok(())
}

/// `admin offset reset`: `INVOKE_BROKER_TO_RESET_OFFSET` (forced: forward
/// or back) to every master broker of the topic's route.
async fn offset_reset(
    common: &CommonArgs,
    action: &OffsetCommand,
    log: &Logger,
) -> Result<(), CliError> {
    let OffsetCommand::Reset {
        group,
        topic,
        timestamp_ms,
    } = action;
    if group.is_empty() {
        return Err(CliError("a consumer group is required (-g)".into()));
    }
    actormq_sdk::protocol::validate_topic(topic).map_err(|e| CliError(e.to_string()))?;
    let routes = common.route_cache(log)?;
    let data = route_data(&routes, topic).await?;
    let mut brokers: Vec<(String, String)> = data
        .broker_datas
        .iter()
        .filter_map(|b| Some((b.broker_name.clone(), b.master_addr()?.to_owned())))
        .collect();
    brokers.sort();
    if brokers.is_empty() {
        return Err(CliError(format!("no master broker serves topic {topic}")));
    }
    for (name, addr) in &brokers {
        let req = ResetOffsetRequest {
            consumer_group: group.clone(),
            topic: topic.clone(),
            timestamp_ms: *timestamp_ms,
            force: true,
        };
        let reply = routes
            .connections()
            .call(addr, req, Bytes::new(), common.timeout())
            .await
            .map_err(|e| CliError(format!("reset on {name} ({addr}): {e}")))?;
        for qo in &reply.fields.offsets {
            emit(
                common.json,
                &json!({"group": group, "topic": topic, "broker": qo.queue.broker_name,
                    "queue_id": qo.queue.queue_id, "offset": qo.offset}),
                || {
                    format!(
                        "{topic}\t{}\t{}\toffset={}",
                        qo.queue.broker_name, qo.queue.queue_id, qo.offset
                    )
                },
            );
        }
    }
    Ok(())
}

//! A custom actor plugged into a broker: an audit that counts the
//! messages stored per topic and answers a request code of its own.
//!
//! Run it: `cargo run -p actormq-examples --example custom_actor`.

use std::collections::BTreeMap;
use std::time::Duration;

use actormq_cluster::actors::broker::MessagesStored;
use actormq_cluster::actors::broker::plugin::{BrokerContext, BrokerPlugin};
use actormq_sdk::prelude::*;
use actormq_sdk::protocol::Bytes;
use actormq_sdk::protocol::request::SendMessageRequest;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

// ANCHOR: request
/// "How many messages were stored per topic?" — a request of our own.
/// The reply waits until at least `wait_for_total` messages were counted
/// (or `timeout_ms` passed), the way a long poll waits for messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicCounts {
    /// Answer once this many messages were counted in all.
    pub wait_for_total: u64,
    /// Give up waiting after this long and answer with what there is.
    pub timeout_ms: u64,
}

impl Rpc for TopicCounts {
    /// A code from the range reserved for user requests.
    const CODE: u32 = USER_CODES.start + 100;
    type Response = BTreeMap<String, u64>;
}
// ANCHOR_END: request

// ANCHOR: actor
/// Counts stored messages per topic, from the broker's events.
#[derive(Default)]
pub struct Audit {
    counts: BTreeMap<String, u64>,
    waiting: Vec<(u64, oneshot::Sender<BTreeMap<String, u64>>)>,
}

impl Actor for Audit {
    type Context = Context<Self>;
}

impl Handler<MessagesStored> for Audit {
    type Result = ();
    fn handle(&mut self, event: MessagesStored, _: &mut Context<Self>) {
        *self.counts.entry(event.topic).or_default() += event.count;
        let total: u64 = self.counts.values().sum();
        let (ready, still): (Vec<_>, Vec<_>) =
            self.waiting.drain(..).partition(|(want, _)| *want <= total);
        self.waiting = still;
        for (_, reply) in ready {
            let _ = reply.send(self.counts.clone());
        }
    }
}

impl Handler<Call<TopicCounts>> for Audit {
    type Result = ResponseFuture<Result<Reply<BTreeMap<String, u64>>, ServiceError>>;
    fn handle(&mut self, call: Call<TopicCounts>, _: &mut Context<Self>) -> Self::Result {
        let total: u64 = self.counts.values().sum();
        if total >= call.req.wait_for_total {
            let counts = self.counts.clone();
            return Box::pin(async move { Ok(Reply::ok(counts)) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.push((call.req.wait_for_total, tx));
        let fallback = self.counts.clone();
        let timeout = Duration::from_millis(call.req.timeout_ms);
        Box::pin(async move {
            match actix_rt::time::timeout(timeout, rx).await {
                Ok(Ok(counts)) => Ok(Reply::ok(counts)),
                _ => Ok(Reply::ok(fallback)),
            }
        })
    }
}
// ANCHOR_END: actor

// ANCHOR: plugin
/// Installs the audit into a broker: supervised, routed, subscribed.
pub struct AuditPlugin;

impl BrokerPlugin for AuditPlugin {
    fn name(&self) -> &str {
        "audit"
    }

    fn install(self: Box<Self>, broker: &mut BrokerContext) {
        // Restarted from this factory if it ever fails (counts start over).
        let audit = broker.spawn(ChildSpec::new("audit", || Ok(Audit::default())));
        broker.route::<TopicCounts, _>(&audit);
        broker.subscribe_stored(&audit);
    }
}
// ANCHOR_END: plugin

/// The scenario: a broker with the audit plugged in; a client sends three
/// messages to `orders` and two to `payments`, then asks the audit, over
/// the broker's port, for the counts. Returns them.
pub async fn run() -> Result<BTreeMap<String, u64>, Box<dyn std::error::Error>> {
    let example = crate::node::start(vec![Box::new(AuditPlugin)]).await?;
    let broker = example.node.broker_addr.ok_or("no broker")?;
    let log = slog::Logger::root(slog::Discard, slog::o!());
    // ANCHOR: client
    // The client's table of sessions; the session to the broker is one
    // supervised actor, reached through its handle.
    let clients = ClientSessions::new(&log);
    let client = clients.session_at(broker, Lane::Main);
    for (topic, n) in [("orders", 3), ("payments", 2)] {
        for i in 0..n {
            let req = SendMessageRequest {
                topic: topic.into(),
                ..SendMessageRequest::default()
            };
            let body = Bytes::from(format!("{topic} #{i}"));
            client.send(Call::with_body(req, body)).await?;
        }
    }
    let ask = TopicCounts {
        wait_for_total: 5,
        timeout_ms: 10_000,
    };
    let counts = client.send(Call::new(ask)).await?.fields;
    // ANCHOR_END: client
    example.node.shutdown().await;
    Ok(counts)
}

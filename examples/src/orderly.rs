//! Orderly consumption: each order's `created`, `paid` and `shipped`
//! events are sent to the queue of its order id (the producer hashes the
//! key), and two orderly push consumers of the group `fulfillment` get
//! each order's events in that order. One `paid` event fails once: its
//! queue is suspended and the same event is delivered again (with
//! `reconsume_times` 1) before anything after it on that queue. The book's
//! "Orderly consumption" chapter includes this file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumer, PushConsumerBuilder};
use actormq_sdk::protocol::Message;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::wait::{body_text, recv_n, rest};

/// One delivery as a listener saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Which consumer instance (`"east"` or `"west"`).
    pub instance: &'static str,
    /// The order id (the message key).
    pub order: String,
    /// `created`, `paid` or `shipped`.
    pub event: String,
    /// Times delivered before.
    pub reconsume_times: u32,
    /// The listener failed it ("later").
    pub failed: bool,
}

/// What the scenario saw.
#[derive(Debug, Clone, Default)]
pub struct OrderlyReport {
    /// Orders sent (three events each).
    pub orders: usize,
    /// Every delivery, in the order the listeners ran.
    pub deliveries: Vec<Delivery>,
}

impl OrderlyReport {
    /// Each order's events as consumed (failed deliveries left out).
    pub fn events_per_order(&self) -> BTreeMap<String, Vec<String>> {
        let mut per: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in self.deliveries.iter().filter(|d| !d.failed) {
            per.entry(d.order.clone())
                .or_default()
                .push(d.event.clone());
        }
        per
    }
}

// ANCHOR: consumer
/// An orderly consumer of `orders` in the group `fulfillment`. The first
/// `paid` event of `order-0` fails once (when `fail_once` is still set).
async fn fulfillment(
    namesrv: &str,
    instance: &'static str,
    tx: UnboundedSender<Delivery>,
    fail_once: Arc<AtomicBool>,
) -> Result<PushConsumer, actormq_sdk::consumer::ConsumerError> {
    PushConsumerBuilder::new("fulfillment")
        .namesrv(namesrv)
        .subscribe("orders", "*")
        .consume_from(ConsumeFrom::First)
        .instance_name(instance)
        .orderly()
        // A failed event suspends its queue this long before it comes again.
        .configure(|c| c.suspend_ms = 100)
        .listener(move |msgs| {
            for m in msgs {
                let order = m.message.keys.clone().unwrap_or_default();
                let event = body_text(m);
                let fail = order == "order-0"
                    && event == "paid"
                    && fail_once.swap(false, Ordering::SeqCst);
                let _ = tx.send(Delivery {
                    instance,
                    order,
                    event,
                    reconsume_times: m.reconsume_times,
                    failed: fail,
                });
                if fail {
                    // Nothing after it on its queue is delivered meanwhile.
                    return ConsumeResult::Later;
                }
            }
            ConsumeResult::Success
        })
        .start()
        .await
}
// ANCHOR_END: consumer

/// An order event: body `event`, key the order id.
fn event(order: &str, event: &str) -> Message {
    let mut msg = Message::new("orders", event.to_owned());
    msg.keys = Some(order.to_owned());
    msg
}

/// Runs the scenario with `n` orders.
pub async fn run(n: usize) -> Result<OrderlyReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("shop")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    // The topic exists before the consumers subscribe.
    producer
        .send_with_selector(event("order-0", "created"), "order-0")
        .await?;

    let (tx, mut rx) = unbounded_channel();
    let fail_once = Arc::new(AtomicBool::new(true));
    let east = fulfillment(&namesrv, "east", tx.clone(), fail_once.clone()).await?;
    let west = fulfillment(&namesrv, "west", tx, fail_once).await?;

    // ANCHOR: produce
    // Events of many orders interleave; each order's go to one queue
    // (hash of the order id), in order.
    for event in ["created", "paid", "shipped"] {
        for i in 0..n {
            if event == "created" && i == 0 {
                continue; // sent above
            }
            let order = format!("order-{i}");
            producer
                .send_with_selector(self::event(&order, event), &order)
                .await?;
        }
    }
    // ANCHOR_END: produce
    producer.shutdown().await;

    // 3 events per order, plus the one failed delivery.
    let mut deliveries = recv_n(&mut rx, 3 * n + 1, Duration::from_secs(30)).await;
    east.shutdown().await;
    west.shutdown().await;
    deliveries.extend(rest(&mut rx));
    example.node.shutdown().await;
    Ok(OrderlyReport {
        orders: n,
        deliveries,
    })
}

//! Broadcasting: two push consumers of one group, in the BROADCASTING
//! model, each receive every message of the topic (in clustering they
//! would share the queues). Broadcasting offsets are not kept on the
//! broker but in a local file per instance, which the scenario reads back
//! after shutdown. The book's "Consumers and rebalance" chapter includes
//! this file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::offset_store::LocalOffsetFile;
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumer, PushConsumerBuilder};
use actormq_sdk::protocol::{Message, MessageQueue};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::wait::{body_text, recv_n, rest};

/// What one broadcasting instance saw.
#[derive(Debug, Clone, Default)]
pub struct Reader {
    /// Its instance name.
    pub instance: String,
    /// Bodies it received, sorted.
    pub received: Vec<String>,
    /// Its local offset file (in a temp dir removed when the scenario
    /// ends).
    pub offset_file: PathBuf,
    /// The offsets in that file after shutdown.
    pub offsets: BTreeMap<MessageQueue, u64>,
}

/// What the scenario saw.
#[derive(Debug, Clone, Default)]
pub struct BroadcastReport {
    /// Messages sent.
    pub sent: usize,
    /// The two instances.
    pub readers: Vec<Reader>,
}

const GROUP: &str = "news-readers";

// ANCHOR: reader
/// Starts one broadcasting instance of the group; its listener forwards
/// the bodies it gets to the returned channel.
async fn start_reader(
    namesrv: &str,
    instance: &str,
    offset_dir: PathBuf,
) -> Result<(PushConsumer, UnboundedReceiver<String>), Box<dyn std::error::Error>> {
    let (tx, rx) = unbounded_channel();
    let consumer = PushConsumerBuilder::new(GROUP)
        .namesrv(namesrv)
        .subscribe("news", "*")
        .broadcasting()
        // Two instances of one group in one process (or on one host) need
        // different instance names: the offset file is
        // `<offset_dir>/<instance>/<group>.offsets`.
        .instance_name(instance)
        .offset_dir(offset_dir)
        .consume_from(ConsumeFrom::First)
        .listener(move |msgs| {
            for m in msgs {
                let _ = tx.send(body_text(m));
            }
            ConsumeResult::Success
        })
        .start()
        .await?;
    Ok((consumer, rx))
}
// ANCHOR_END: reader

/// Runs the scenario with `n` messages.
pub async fn run(n: usize) -> Result<BroadcastReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let offsets = tempfile::tempdir()?;

    let producer = ProducerBuilder::new("news-producer")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    for i in 0..n {
        producer
            .send(Message::new("news", format!("headline-{i}")))
            .await?;
    }
    producer.shutdown().await;

    let mut report = BroadcastReport {
        sent: n,
        readers: Vec::new(),
    };
    let mut running = Vec::new();
    for instance in ["reader-a", "reader-b"] {
        let (consumer, rx) = start_reader(&namesrv, instance, offsets.path().into()).await?;
        running.push((instance, consumer, rx));
    }
    for (instance, consumer, mut rx) in running {
        let mut received = recv_n(&mut rx, n, Duration::from_secs(20)).await;
        // ANCHOR: offsets
        // Shutdown writes the instance's offsets to its local file.
        consumer.shutdown().await;
        let file = LocalOffsetFile::new(&offsets.path().join(instance), GROUP);
        let saved = file.read()?;
        // ANCHOR_END: offsets
        // Anything delivered meanwhile counts too (a duplicate would show).
        received.extend(rest(&mut rx));
        received.sort();
        report.readers.push(Reader {
            instance: instance.to_string(),
            received,
            offset_file: file.path().to_path_buf(),
            offsets: saved,
        });
    }
    example.node.shutdown().await;
    Ok(report)
}

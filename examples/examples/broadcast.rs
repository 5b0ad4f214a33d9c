//! Two broadcasting consumers of one group each receive every message,
//! against an in-process node: `cargo run -p actormq-examples --example broadcast`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::broadcast::run(8).await?;
    println!("sent {} messages to topic news", report.sent);
    for r in &report.readers {
        println!(
            "{} received {} messages: {:?}",
            r.instance,
            r.received.len(),
            r.received
        );
        println!("{} offset file {}:", r.instance, r.offset_file.display());
        for (mq, offset) in &r.offsets {
            println!(
                "  {} {} queue {} -> {offset}",
                mq.topic, mq.broker_name, mq.queue_id
            );
        }
        if r.received.len() != report.sent {
            return Err(format!("{} missed messages", r.instance).into());
        }
    }
    Ok(())
}

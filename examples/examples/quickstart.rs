//! Start a node in-process, produce 10 messages, consume them all:
//! `cargo run -p actormq-examples --example quickstart`.

// ANCHOR: main
#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::quickstart::run(10).await?;
    for r in &report.sent {
        println!(
            "sent {} {} queue {} offset {}",
            r.status, r.msg_id, r.queue_id, r.queue_offset
        );
    }
    for body in &report.received {
        println!("received {body}");
    }
    if report.received.len() != report.sent.len() {
        return Err(format!(
            "received {} of {} messages",
            report.received.len(),
            report.sent.len()
        )
        .into());
    }
    Ok(())
}
// ANCHOR_END: main

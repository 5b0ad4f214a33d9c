//! Sync and ordered sends against an in-process node:
//! `cargo run -p actormq-examples --example producer` (async and oneway
//! sends: `--example async_oneway`; batches: `--example batch`).

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::producer::run().await?;
    for r in &report.sync {
        println!(
            "{} {} queue {} offset {}",
            r.status, r.msg_id, r.queue_id, r.queue_offset
        );
    }
    println!("order-42 went to queues {:?}", report.ordered_queues);
    Ok(())
}

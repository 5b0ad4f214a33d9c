//! Sync, async, oneway, batch and ordered sends against an in-process
//! node: `cargo run -p actormq-examples --example producer`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::producer::run().await?;
    for r in report.sync.iter().chain(&report.async_) {
        println!(
            "{} {} queue {} offset {}",
            r.status, r.msg_id, r.queue_id, r.queue_offset
        );
    }
    println!("oneway sends: {}", report.oneway);
    println!("batch: {:?}", report.batch);
    println!("order-42 went to queues {:?}", report.ordered_queues);
    Ok(())
}

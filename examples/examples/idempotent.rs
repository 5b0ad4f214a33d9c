//! Idempotent retries through a link that loses replies, against an
//! in-process node: `cargo run -p actormq-examples --example idempotent`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::idempotent::run(9).await?;
    println!("producer id {}", report.producer_id);
    for r in &report.results {
        println!(
            "{} queue {} offset {} {}",
            r.status, r.queue_id, r.queue_offset, r.msg_id
        );
    }
    println!(
        "{} replies lost and retried; {} sends, {} messages stored",
        report.lost_replies,
        report.results.len(),
        report.stored.len()
    );
    if report.stored.len() != report.results.len() {
        return Err("a retried send was stored twice".into());
    }
    Ok(())
}

//! Failed messages retried by the broker, then a dead letter, against an
//! in-process node: `cargo run -p actormq-examples --example retry_dlq`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::retry_dlq::run().await?;
    println!(
        "payment deliveries (reconsume times, topic): {:?}",
        report.payment
    );
    println!(
        "broken order deliveries (reconsume times): {:?}",
        report.broken
    );
    println!("dead letter: {:?}", report.dead_letter);
    if report.payment.len() != 3 || report.dead_letter.is_none() {
        return Err("expected 3 payment deliveries and a dead letter".into());
    }
    Ok(())
}

//! A push consumer with a `view_listener` (borrowed messages) totals meter
//! readings, against an in-process node:
//! `cargo run -p actormq-examples --example fast_consumer`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::fast_consumer::run(3000).await?;
    println!(
        "sent {} readings, delivered {}",
        report.sent, report.delivered
    );
    println!("total {}", report.total);
    for (meter, high) in &report.highest {
        println!("highest reading of {meter}: {high}");
    }
    if report.delivered != report.sent {
        return Err("not every reading was delivered".into());
    }
    Ok(())
}

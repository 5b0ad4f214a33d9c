//! A money transfer with a transactional message and a check-back, against
//! an in-process node: `cargo run -p actormq-examples --example transfer`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::transfer::run().await?;
    for (id, state) in &report.local {
        println!("{id}: local transaction {state:?}");
    }
    println!("credited: {:?}", report.credited);
    println!(
        "balances: {:?} (broker checks: {})",
        report.balances, report.checks
    );
    Ok(())
}

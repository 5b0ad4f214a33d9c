//! An order-timeout check sent with a delay level, against an in-process
//! node: `cargo run -p actormq-examples --example delayed`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::delayed::run().await?;
    println!("after {:?}: {:?}", report.waited, report.decisions);
    if report.decisions.len() != 2 {
        return Err("expected both checks".into());
    }
    Ok(())
}

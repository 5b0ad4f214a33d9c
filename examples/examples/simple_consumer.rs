//! The simple (pop) consumer against an in-process node:
//! `cargo run -p actormq-examples --example simple_consumer`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::simple_consumer::run().await?;
    println!("jobs done (body, reconsume times): {:?}", report.done);
    println!("stale receipt refused: {}", report.stale_refused);
    if report.done.len() != 3 || !report.stale_refused {
        return Err("expected 3 jobs done and the stale receipt refused".into());
    }
    Ok(())
}

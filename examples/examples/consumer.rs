//! Pull consumer and push consumer with a tag filter, against an
//! in-process node: `cargo run -p actormq-examples --example consumer`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::consumer::run().await?;
    for (queue, bodies) in &report.pulled {
        println!("pulled queue {queue}: {bodies:?}");
    }
    println!("pushed (paid || shipped): {:?}", report.pushed);
    Ok(())
}

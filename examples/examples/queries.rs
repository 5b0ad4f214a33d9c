//! Messages looked up by id, by key and by queue offset, against an
//! in-process node: `cargo run -p actormq-examples --example queries`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::queries::run().await?;
    println!("by id:     {:?}", report.by_id);
    println!("by key:    {:?}", report.by_key);
    println!("by offset: {:?}", report.by_offset);
    Ok(())
}

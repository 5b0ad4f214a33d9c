//! A consumer group's config, auto-created by its first consumer and then
//! updated by an admin, against an in-process node:
//! `cargo run -p actormq-examples --example subscription_group`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::subscription_group::run().await?;
    println!("auto-created: {:?}", report.auto_created);
    println!("after update: {:?}", report.after_update);
    println!("groups on the broker: {:?}", report.listed);
    Ok(())
}

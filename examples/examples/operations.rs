//! A node's `/metrics` and `/api/groups/{group}` read over HTTP, against
//! an in-process node: `cargo run -p actormq-examples --example operations`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::operations::run().await?;
    println!("messages in: {}", report.messages_in);
    println!("total lag:   {}", report.total_lag);
    Ok(())
}

//! Async and oneway sends, checked by reading the topic back, against an
//! in-process node: `cargo run -p actormq-examples --example async_oneway`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::async_oneway::run(5, 5).await?;
    for r in &report.async_results {
        println!(
            "async {} {} queue {} offset {}",
            r.status, r.msg_id, r.queue_id, r.queue_offset
        );
    }
    println!("oneway sends: {}", report.oneway_sent);
    println!("read back: {:?}", report.received);
    let expected = report.async_results.len() + report.oneway_sent;
    if report.received.len() != expected {
        return Err(format!("read back {} of {expected}", report.received.len()).into());
    }
    Ok(())
}

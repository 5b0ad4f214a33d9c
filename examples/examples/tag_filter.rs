//! A push consumer subscribed with `paid || shipped` receives only those
//! tags, against an in-process node:
//! `cargo run -p actormq-examples --example tag_filter`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::tag_filter::run(4).await?;
    println!(
        "sent {} messages each tagged created, paid, shipped",
        report.sent_per_tag
    );
    for (tag, body) in &report.delivered {
        println!("delivered [{tag}] {body}");
    }
    println!("group caught up with every queue: {}", report.caught_up);
    if report.delivered.iter().any(|(tag, _)| tag == "created") {
        return Err("a `created` message got through the filter".into());
    }
    if report.delivered.len() != 2 * report.sent_per_tag || !report.caught_up {
        return Err("not every matching message was delivered".into());
    }
    Ok(())
}

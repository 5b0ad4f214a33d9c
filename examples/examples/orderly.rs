//! Two orderly push consumers get each order's created / paid / shipped
//! events in order, against an in-process node:
//! `cargo run -p actormq-examples --example orderly`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::orderly::run(6).await?;
    for d in &report.deliveries {
        println!(
            "{:<5} {:<8} {:<8} reconsume={}{}",
            d.instance,
            d.order,
            d.event,
            d.reconsume_times,
            if d.failed {
                " FAILED (retried in place)"
            } else {
                ""
            }
        );
    }
    for (order, events) in report.events_per_order() {
        if events != ["created", "paid", "shipped"] {
            return Err(format!("{order}: {events:?}").into());
        }
    }
    Ok(())
}

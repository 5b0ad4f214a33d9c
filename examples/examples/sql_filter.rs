//! A push consumer subscribed with a SQL92 expression receives only the
//! matching orders, against an in-process node:
//! `cargo run -p actormq-examples --example sql_filter`.

use actormq_examples::sql_filter::{EXPRESSION, matches, run};

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = run(12).await?;
    for (body, amount, region) in &report.sent {
        println!("sent {body}: amount={amount} region={region:?}");
    }
    println!("subscribed with: {EXPRESSION}");
    for body in &report.delivered {
        println!("delivered {body}");
    }
    println!("group caught up with every queue: {}", report.caught_up);
    let want: Vec<String> = {
        let mut w: Vec<String> = (0..report.sent.len())
            .filter(|i| matches(*i))
            .map(|i| format!("order-{i}"))
            .collect();
        w.sort();
        w
    };
    if report.delivered != want || !report.caught_up {
        return Err(format!("expected {want:?}, delivered {:?}", report.delivered).into());
    }
    Ok(())
}

//! A running consumer group is reset to a time and gets the messages from
//! there again, against an in-process node:
//! `cargo run -p actormq-examples --example offset_reset`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::offset_reset::run(5).await?;
    println!("consumed before the reset: {:?}", report.first_pass);
    println!(
        "reset to {} ms: new offsets {:?}",
        report.reset_to_ms, report.new_offsets
    );
    println!("delivered again: {:?}", report.replayed);
    if report.replayed.iter().any(|b| b.starts_with("morning")) || report.replayed.len() != 5 {
        return Err("expected the evening messages again, once each".into());
    }
    Ok(())
}

//! A custom actor plugged into a broker (see `src/custom_actor.rs`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counts = actix_rt::System::new().block_on(actormq_examples::custom_actor::run())?;
    println!("messages stored per topic: {counts:?}");
    Ok(())
}

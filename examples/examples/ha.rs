//! A sync master, its slave, the master gone and the slave promoted, in
//! one process: `cargo run -p actormq-examples --example ha`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::ha::run().await?;
    println!("{report:?}");
    if report.slave_end < report.master_end {
        return Err("the slave lost acknowledged messages".into());
    }
    Ok(())
}

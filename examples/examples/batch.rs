//! A batch send read back by a pull consumer, against an in-process node:
//! `cargo run -p actormq-examples --example batch`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::batch::run(10).await?;
    let r = &report.result;
    println!(
        "batch {} of {} messages: queue {} first offset {}",
        r.status,
        report.ids.len(),
        r.queue_id,
        r.queue_offset
    );
    for ((id, body), offset) in report
        .pulled_ids
        .iter()
        .zip(&report.pulled_bodies)
        .zip(&report.pulled_offsets)
    {
        println!("read back offset {offset} {id} {body}");
    }
    if report.pulled_ids != report.ids {
        return Err("the ids read back differ from the batch's ids".into());
    }
    Ok(())
}

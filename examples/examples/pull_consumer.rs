//! A pull consumer reading explicit queues and offsets and committing
//! them, against an in-process node:
//! `cargo run -p actormq-examples --example pull_consumer`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::pull_consumer::run(12).await?;
    for (queue, q) in &report {
        println!(
            "queue {queue}: pulled {:?} from offset {}, committed {:?} (max offset {}), \
             {} new after resume",
            q.bodies, q.start, q.committed, q.max_offset, q.after_resume
        );
        if q.committed != Some(q.max_offset) {
            return Err(format!("queue {queue}: committed offset not read back").into());
        }
    }
    Ok(())
}

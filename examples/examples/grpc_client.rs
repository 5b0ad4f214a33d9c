//! The RocketMQ 5 gRPC API called from Rust with its generated tonic
//! client, against an in-process node:
//! `cargo run -p actormq-examples --example grpc_client`.

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = actormq_examples::grpc_client::run().await?;
    println!("read natively:      {:?}", report.read_natively);
    println!("received over gRPC: {:?}", report.received_over_grpc);
    println!("ack status:         {}", report.ack_code);
    Ok(())
}

//! Every example scenario runs as a test against an in-process node.

#[actix_rt::test]
async fn custom_actor_counts_stored_messages_per_topic() {
    let counts = actormq_examples::custom_actor::run()
        .await
        .expect("scenario runs");
    let got: Vec<(&str, u64)> = counts.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    assert_eq!(got, [("orders", 3), ("payments", 2)]);
}

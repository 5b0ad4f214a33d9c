//! Every example scenario runs as a test against an in-process node.

#[actix_rt::test]
async fn custom_actor_counts_stored_messages_per_topic() {
    let counts = actormq_examples::custom_actor::run()
        .await
        .expect("scenario runs");
    let got: Vec<(&str, u64)> = counts.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    assert_eq!(got, [("orders", 3), ("payments", 2)]);
}

#[actix_rt::test]
async fn consumer_pulls_every_queue_and_push_filters_by_tag() {
    let report = actormq_examples::consumer::run()
        .await
        .expect("scenario runs");
    let pulled: usize = report.pulled.values().map(Vec::len).sum();
    assert_eq!(pulled, 24, "{report:?}");
    assert_eq!(report.pulled.len(), 4);
    assert_eq!(report.pushed.len(), 16, "{report:?}");
    assert!(
        report
            .pushed
            .iter()
            .all(|b| b.starts_with("paid-") || b.starts_with("shipped-"))
    );
}

#[actix_rt::test]
async fn producer_sends_sync_async_oneway_batch_and_ordered() {
    use actormq_sdk::SendStatus;
    let report = actormq_examples::producer::run()
        .await
        .expect("scenario runs");
    assert_eq!(report.sync.len(), 3);
    assert_eq!(report.async_.len(), 3);
    assert!(
        report
            .sync
            .iter()
            .chain(&report.async_)
            .all(|r| r.status == SendStatus::SendOk && r.topic == "orders")
    );
    assert_eq!(report.oneway, 2);
    let batch = report.batch.expect("batch result");
    assert_eq!(batch.msg_id.split(',').count(), 10);
    assert_eq!(report.ordered_queues.len(), 3);
    assert!(report.ordered_queues.windows(2).all(|w| w[0] == w[1]));
}

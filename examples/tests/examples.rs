//! Every example scenario runs as a test against an in-process node.

use actormq_sdk::SendStatus;

#[actix_rt::test]
async fn custom_actor_counts_stored_messages_per_topic() {
    let counts = actormq_examples::custom_actor::run()
        .await
        .expect("scenario runs");
    let got: Vec<(&str, u64)> = counts.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    assert_eq!(got, [("orders", 3), ("payments", 2)]);
}

#[actix_rt::test]
async fn quickstart_consumes_every_message_produced() {
    let report = actormq_examples::quickstart::run(10)
        .await
        .expect("scenario runs");
    assert_eq!(report.sent.len(), 10);
    assert!(
        report
            .sent
            .iter()
            .all(|r| r.status == SendStatus::SendOk && r.topic == "quickstart"),
        "{report:?}"
    );
    let mut received = report.received.clone();
    received.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("hello-{i}")).collect();
    expected.sort();
    assert_eq!(received, expected, "each message exactly once");
}

#[actix_rt::test]
async fn producer_sends_sync_and_ordered() {
    let report = actormq_examples::producer::run()
        .await
        .expect("scenario runs");
    assert_eq!(report.sync.len(), 3);
    assert!(
        report
            .sync
            .iter()
            .all(|r| r.status == SendStatus::SendOk && r.topic == "orders")
    );
    assert_eq!(report.ordered_queues.len(), 3);
    assert!(report.ordered_queues.windows(2).all(|w| w[0] == w[1]));
}

#[actix_rt::test]
async fn async_and_oneway_sends_are_all_stored() {
    let report = actormq_examples::async_oneway::run(6, 6)
        .await
        .expect("scenario runs");
    assert_eq!(report.async_results.len(), 6);
    assert!(
        report
            .async_results
            .iter()
            .all(|r| r.status == SendStatus::SendOk && r.topic == "events")
    );
    assert_eq!(report.oneway_sent, 6);
    let mut expected: Vec<String> = (0..6)
        .flat_map(|i| [format!("async-{i}"), format!("oneway-{i}")])
        .collect();
    expected.sort();
    assert_eq!(report.received, expected, "every message read back once");
}

#[actix_rt::test]
async fn batch_is_stored_contiguously_with_the_returned_ids() {
    let report = actormq_examples::batch::run(10)
        .await
        .expect("scenario runs");
    assert_eq!(report.result.status, SendStatus::SendOk);
    assert_eq!(report.ids.len(), 10, "{report:?}");
    assert_eq!(report.pulled_ids, report.ids, "ids read back = ids sent");
    let bodies: Vec<String> = (0..10).map(|i| format!("batched-{i}")).collect();
    assert_eq!(report.pulled_bodies, bodies, "in batch order");
    let first = report.result.queue_offset;
    let offsets: Vec<u64> = (first..first + 10).collect();
    assert_eq!(report.pulled_offsets, offsets, "consecutive offsets");
}

#[actix_rt::test]
async fn broadcast_delivers_every_message_to_every_instance() {
    let report = actormq_examples::broadcast::run(8)
        .await
        .expect("scenario runs");
    let mut expected: Vec<String> = (0..8).map(|i| format!("headline-{i}")).collect();
    expected.sort();
    assert_eq!(report.readers.len(), 2);
    for reader in &report.readers {
        assert_eq!(reader.received, expected, "{}", reader.instance);
        // The file lived in a temp dir, gone now; its content was read.
        assert!(
            reader
                .offset_file
                .ends_with(format!("{}/news-readers.offsets", reader.instance)),
            "{reader:?}"
        );
        assert_eq!(reader.offsets.len(), 4, "one offset per queue: {reader:?}");
        let consumed: u64 = reader.offsets.values().sum();
        assert_eq!(consumed, 8, "local offsets cover every message: {reader:?}");
    }
    assert_ne!(report.readers[0].offset_file, report.readers[1].offset_file);
}

#[actix_rt::test]
async fn pull_consumer_reads_every_queue_and_commits() {
    let report = actormq_examples::pull_consumer::run(12)
        .await
        .expect("scenario runs");
    assert_eq!(report.len(), 4, "{report:?}");
    let mut bodies: Vec<String> = report.values().flat_map(|q| q.bodies.clone()).collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..12).map(|i| format!("entry-{i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected);
    for (queue, q) in &report {
        assert_eq!(q.start, 0, "queue {queue}");
        assert_eq!(q.bodies.len() as u64, q.max_offset, "queue {queue}");
        assert_eq!(q.committed, Some(q.max_offset), "queue {queue}");
        assert_eq!(q.after_resume, 0, "queue {queue}");
    }
}

#[actix_rt::test]
async fn tag_filter_delivers_only_matching_tags() {
    let report = actormq_examples::tag_filter::run(4)
        .await
        .expect("scenario runs");
    assert!(report.caught_up, "{report:?}");
    let mut expected: Vec<(String, String)> = (0..4)
        .flat_map(|i| ["paid", "shipped"].map(|tag| (tag.to_string(), format!("{tag}-{i}"))))
        .collect();
    expected.sort();
    assert_eq!(report.delivered, expected);
}

#[actix_rt::test]
async fn fast_consumer_reads_borrowed_messages() {
    let n = 3000;
    let report = actormq_examples::fast_consumer::run(n)
        .await
        .expect("scenario runs");
    assert_eq!(report.delivered, n, "{report:?}");
    let total: u64 = (0..n as u64).map(|i| i * 7 % 1000).sum();
    assert_eq!(report.total, total);
    let mut highest = std::collections::BTreeMap::new();
    for i in 0..n as u64 {
        let h = highest.entry(format!("m{}", i % 3)).or_insert(0);
        *h = (*h).max(i * 7 % 1000);
    }
    assert_eq!(report.highest, highest);
}

#[actix_rt::test]
async fn queries_find_messages_by_id_key_and_offset() {
    let report = actormq_examples::queries::run()
        .await
        .expect("scenario runs");
    assert_eq!(report.by_id.as_deref(), Some("created"));
    assert_eq!(report.by_key, ["created", "paid"]);
    assert_eq!(report.by_offset.as_deref(), Some("paid"));
}

#[actix_rt::test]
async fn subscription_group_is_auto_created_then_updated() {
    use actormq_sdk::protocol::request::SubscriptionGroupConfig;
    let report = actormq_examples::subscription_group::run()
        .await
        .expect("scenario runs");
    assert_eq!(
        report.auto_created,
        SubscriptionGroupConfig::new("order-processors"),
        "defaults: retry max 16, not orderly, broadcast allowed"
    );
    assert_eq!(report.auto_created.retry_max_times, 16);
    assert!(
        report.switch_off_refused.contains("not available yet"),
        "{}",
        report.switch_off_refused
    );
    assert_eq!(
        report.after_update,
        SubscriptionGroupConfig {
            consume_message_orderly: true,
            retry_max_times: 5,
            ..SubscriptionGroupConfig::new("order-processors")
        }
    );
    assert_eq!(report.listed, vec!["order-processors".to_string()]);
}

#[actix_rt::test]
async fn offset_reset_replays_from_the_time_without_a_restart() {
    let report = actormq_examples::offset_reset::run(5)
        .await
        .expect("scenario runs");
    let morning: Vec<String> = (0..5).map(|i| format!("morning-{i}")).collect();
    let evening: Vec<String> = (0..5).map(|i| format!("evening-{i}")).collect();
    let mut both = [evening.clone(), morning].concat();
    both.sort();
    assert_eq!(report.first_pass, both, "{report:?}");
    assert_eq!(
        report.replayed, evening,
        "evening again, once each: {report:?}"
    );
    // The default topic has 4 queues; each now starts at its first
    // evening message, so together they skip the 5 morning ones.
    assert_eq!(report.new_offsets.iter().sum::<u64>(), 5, "{report:?}");
}

#[actix_rt::test]
async fn sql_filter_delivers_exactly_the_matching_orders() {
    use actormq_examples::sql_filter::{matches, run};
    let report = run(12).await.expect("scenario runs");
    assert!(report.caught_up, "{report:?}");
    let mut expected: Vec<String> = (0..12)
        .filter(|i| matches(*i))
        .map(|i| format!("order-{i}"))
        .collect();
    expected.sort();
    // Only orders 1 and 10 (us, 150); the others are too small, of
    // another region, without a region (7) or with amount "n/a" (4).
    assert_eq!(expected, ["order-1", "order-10"]);
    assert_eq!(report.delivered, expected);
}

#[actix_rt::test]
async fn retry_dlq_retries_then_moves_to_the_dead_letter_queue() {
    let report = actormq_examples::retry_dlq::run()
        .await
        .expect("scenario runs");
    assert_eq!(
        report.payment,
        vec![
            (0, "orders".to_string()),
            (1, "orders".to_string()),
            (2, "orders".to_string())
        ],
        "{report:?}"
    );
    assert_eq!(report.broken, vec![0, 1, 2], "{report:?}");
    assert_eq!(
        report.dead_letter,
        Some((
            "%DLQ%shipping".to_string(),
            "orders".to_string(),
            "ship order-2".to_string()
        )),
        "{report:?}"
    );
}

#[actix_rt::test]
async fn delayed_checks_arrive_after_their_delay() {
    let report = actormq_examples::delayed::run()
        .await
        .expect("scenario runs");
    let mut d = report.decisions.clone();
    d.sort();
    assert_eq!(
        d,
        vec![
            ("order-1".to_string(), "keep"),
            ("order-2".to_string(), "cancel")
        ],
        "{report:?}"
    );
    assert!(
        report.waited >= std::time::Duration::from_millis(1_900),
        "{report:?}"
    );
}

#[actix_rt::test]
async fn transfer_commits_once_rolls_back_and_resolves_by_check_back() {
    use actormq_sdk::TransactionState;
    let report = actormq_examples::transfer::run()
        .await
        .expect("scenario runs");
    assert_eq!(report.local["t-1"], TransactionState::Commit);
    assert_eq!(report.local["t-2"], TransactionState::Rollback);
    assert_eq!(report.local["t-3-crash"], TransactionState::Unknown);
    let mut credited = report.credited.clone();
    credited.sort();
    assert_eq!(
        credited,
        ["t-1 alice bob 30", "t-3-crash alice carol 20"],
        "each committed transfer once, the rolled back one never"
    );
    assert!(report.checks >= 1, "t-3 was resolved by a check");
    assert_eq!(report.balances["alice"], 50);
}

#[actix_rt::test]
async fn orderly_consumers_keep_each_orders_events_in_order() {
    let report = actormq_examples::orderly::run(6)
        .await
        .expect("scenario runs");
    let per_order = report.events_per_order();
    assert_eq!(per_order.len(), 6, "{report:?}");
    for (order, events) in &per_order {
        assert_eq!(
            events,
            &["created", "paid", "shipped"],
            "{order}: {report:?}"
        );
    }
    // The failed `paid` of order-0 came again, one reconsume higher,
    // before anything after it on its queue.
    let failed: Vec<_> = report.deliveries.iter().filter(|d| d.failed).collect();
    assert_eq!(failed.len(), 1, "{report:?}");
    let at = report
        .deliveries
        .iter()
        .position(|d| d.failed)
        .expect("a failed delivery");
    let retried = report.deliveries[at + 1..]
        .iter()
        .find(|d| d.order == "order-0")
        .expect("order-0 delivered again");
    assert_eq!(
        (retried.event.as_str(), retried.reconsume_times),
        ("paid", 1)
    );
}

#[actix_rt::test]
async fn idempotent_retries_store_each_message_once() {
    let report = actormq_examples::idempotent::run(9)
        .await
        .expect("scenario runs");
    assert_eq!(report.producer_id.len(), 32);
    assert!(report.lost_replies >= 3, "{report:?}");
    assert!(
        report
            .results
            .iter()
            .all(|r| r.status == SendStatus::SendOk),
        "{report:?}"
    );
    let mut stored = report.stored.clone();
    stored.sort();
    let mut sent: Vec<String> = (0..9).map(|i| format!("payment-{i}")).collect();
    sent.sort();
    assert_eq!(stored, sent, "each message exactly once");
}

#[actix_rt::test]
async fn simple_consumer_acks_extends_and_gets_an_unacked_job_back() {
    let report = actormq_examples::simple_consumer::run()
        .await
        .expect("scenario runs");
    assert!(report.stale_refused, "{report:?}");
    let mut done = report.done.clone();
    done.sort();
    assert_eq!(
        done,
        vec![
            ("resize photo-1".to_string(), 0),
            ("resize photo-2".to_string(), 1),
            ("transcode video-1".to_string(), 0),
        ],
        "{report:?}"
    );
    // The crashed job came back last.
    assert_eq!(
        report.done.last().unwrap(),
        &("resize photo-2".to_string(), 1)
    );
}

#[actix_rt::test]
async fn ha_slave_has_every_acknowledged_message_and_takes_writes_once_promoted() {
    use actormq_cluster::actors::broker::ha::HaRole;
    let report = actormq_examples::ha::run().await.expect("scenario runs");
    assert_eq!(report.acknowledged, 100, "{report:?}");
    assert_eq!(report.slave_end, report.master_end, "{report:?}");
    assert_eq!(report.previous_role, Some(HaRole::Slave), "{report:?}");
    assert_eq!(
        report.after_promotion,
        Some(actormq_sdk::SendStatus::SendOk),
        "{report:?}"
    );
}

#[actix_rt::test]
async fn operations_reads_metrics_and_lag_over_http() {
    let report = actormq_examples::operations::run()
        .await
        .expect("scenario runs");
    assert_eq!(report.messages_in, 8);
    assert_eq!(report.total_lag, 2);
    assert!(report.has_process_metrics);
}

#[actix_rt::test]
async fn grpc_client_sends_and_receives_over_the_rocketmq_5_api() {
    let report = actormq_examples::grpc_client::run()
        .await
        .expect("scenario runs");
    assert_eq!(
        report.read_natively,
        Some((
            "order 1 created".to_string(),
            "created".to_string(),
            "order-1".to_string(),
            "eu".to_string()
        ))
    );
    assert_eq!(
        report.received_over_grpc,
        ["order 1 created", "order 2 created"]
    );
    assert_eq!(report.ack_code, 20000);
    assert_eq!(report.after_ack_code, 40401);
}

//! Round trips: every request and response struct through a real frame and
//! the codec; batches; message ids; the worked example of the book.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use actormq_protocol::batch::{decode_messages, decode_stored, messages_to_bytes, stored_to_bytes};
use actormq_protocol::request::*;
use actormq_protocol::{Delay, Frame, FrameCodec, Message, MessageId, MessageQueue, StoredMessage};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use crate::Rng;

/// Builds a random value from a seeded PRNG.
trait Sample {
    fn sample(r: &mut Rng) -> Self;
}

impl Sample for u8 {
    fn sample(r: &mut Rng) -> Self {
        r.next_u64() as u8
    }
}
impl Sample for u32 {
    fn sample(r: &mut Rng) -> Self {
        match r.below(4) {
            0 => 0,
            1 => u32::MAX,
            _ => r.next_u64() as u32 >> r.below(32),
        }
    }
}
impl Sample for u64 {
    fn sample(r: &mut Rng) -> Self {
        match r.below(4) {
            0 => 0,
            1 => u64::MAX,
            _ => r.next_u64() >> r.below(64),
        }
    }
}
impl Sample for i64 {
    fn sample(r: &mut Rng) -> Self {
        r.next_u64() as i64 >> r.below(64)
    }
}
impl Sample for bool {
    fn sample(r: &mut Rng) -> Self {
        r.below(2) == 0
    }
}
impl Sample for String {
    fn sample(r: &mut Rng) -> Self {
        const PARTS: &[&str] = &[
            "a", "Z", "0", "_", "-", "%", "|", " ", "é", "😀", "topic", "\0",
        ];
        let n = r.below(12);
        (0..n)
            .map(|_| PARTS[r.below(PARTS.len() as u64) as usize])
            .collect()
    }
}
impl<T: Sample> Sample for Option<T> {
    fn sample(r: &mut Rng) -> Self {
        (r.below(2) == 0).then(|| T::sample(r))
    }
}
impl<T: Sample> Sample for Vec<T> {
    fn sample(r: &mut Rng) -> Self {
        (0..r.below(4)).map(|_| T::sample(r)).collect()
    }
}
impl<K: Sample + Ord, V: Sample> Sample for BTreeMap<K, V> {
    fn sample(r: &mut Rng) -> Self {
        (0..r.below(4))
            .map(|_| (K::sample(r), V::sample(r)))
            .collect()
    }
}
impl Sample for Perm {
    fn sample(r: &mut Rng) -> Self {
        Perm(u8::sample(r))
    }
}
impl Sample for SocketAddr {
    fn sample(r: &mut Rng) -> Self {
        let ip = if r.below(2) == 0 {
            IpAddr::V4(Ipv4Addr::from(r.next_u64() as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(
                u128::from(r.next_u64()) << 64 | u128::from(r.next_u64()),
            ))
        };
        SocketAddr::new(ip, r.next_u64() as u16)
    }
}
impl Sample for Delay {
    fn sample(r: &mut Rng) -> Self {
        match r.below(3) {
            0 => Delay::None,
            // Level 0 means "none" on the wire, so it does not round-trip.
            1 => Delay::Level(1 + (r.next_u64() % 255) as u8),
            _ => Delay::DeliverAtMs(u64::sample(r)),
        }
    }
}
impl Sample for Bytes {
    fn sample(r: &mut Rng) -> Self {
        let n = r.below(200) as usize;
        (0..n)
            .map(|_| r.next_u64() as u8)
            .collect::<Vec<u8>>()
            .into()
    }
}

macro_rules! sample_enum {
    ($($t:ident { $($v:ident),* })*) => {$(
        impl Sample for $t {
            fn sample(r: &mut Rng) -> Self {
                let all = [$($t::$v),*];
                all[r.below(all.len() as u64) as usize]
            }
        }
    )*};
}
sample_enum! {
    ConsumeType { ConsumePassively, ConsumeActively, ConsumePop }
    MessageModel { Clustering, Broadcasting }
    ConsumeFromWhere { LastOffset, FirstOffset, Timestamp }
    TransactionDecision { Commit, Rollback, Unknown }
}

/// Struct literals list every field, so a new field fails to compile here
/// until the round trip covers it.
macro_rules! sample_struct {
    ($($t:ident { $($f:ident),* $(,)? })*) => {$(
        impl Sample for $t {
            fn sample(r: &mut Rng) -> Self {
                let _ = &r; // unused by field-less structs
                $t { $($f: Sample::sample(r)),* }
            }
        }
    )*};
}
sample_struct! {
    Empty {}
    Message { topic, tags, keys, body, properties, delay, flags }
    StoredMessage {
        message, queue_id, queue_offset, commit_log_offset, store_size, born_timestamp_ms,
        store_timestamp_ms, born_host, store_host, body_crc, reconsume_times,
        prepared_transaction_offset,
    }
    MessageQueue { topic, broker_name, queue_id }
    SendMessageRequest {
        producer_group, topic, queue_id, born_timestamp_ms, tags, keys, properties, delay_level,
        deliver_at_ms, flags, reconsume_times, producer_id, sequence,
    }
    SendMessageResponse { msg_id, queue_id, queue_offset, transaction_id }
    SendBatchMessageRequest {
        producer_group, topic, queue_id, born_timestamp_ms, producer_id, sequence,
    }
    SendBatchMessageResponse { msg_id, queue_id, queue_offset }
    PullMessageRequest {
        consumer_group, topic, queue_id, queue_offset, max_msg_nums, commit_offset,
        suspend_timeout_ms, subscription, expression_type, records,
    }
    PullMessageResponse {
        next_begin_offset, min_offset, max_offset, suggest_which_broker_id, records,
    }
    QueryMessageRequest { topic, key, max_num, begin_timestamp_ms, end_timestamp_ms }
    QueryMessageResponse { index_last_update_timestamp_ms, index_last_update_phy_offset }
    ViewMessageByIdRequest { commit_log_offset }
    QueryConsumerOffsetRequest { consumer_group, topic, queue_id }
    UpdateConsumerOffsetRequest { consumer_group, topic, queue_id, commit_offset }
    GetMaxOffsetRequest { topic, queue_id }
    GetMinOffsetRequest { topic, queue_id }
    SearchOffsetByTimestampRequest { topic, queue_id, timestamp_ms }
    OffsetResponse { offset }
    ResetOffsetRequest { consumer_group, topic, timestamp_ms, force }
    QueueOffset { queue, offset }
    ResetOffsetResponse { offsets }
    GetConsumerListByGroupRequest { consumer_group }
    GetConsumerListByGroupResponse { consumer_ids }
    NotifyConsumerIdsChangedRequest { consumer_group }
    LockBatchMqRequest { consumer_group, client_id, mq_set }
    LockBatchMqResponse { lock_ok_mq_set }
    UnlockBatchMqRequest { consumer_group, client_id, mq_set }
    ConsumerSendMsgBackRequest {
        consumer_group, commit_log_offset, delay_level, origin_msg_id, origin_topic,
        max_reconsume_times, reconsume_times, more,
    }
    SendBackEntry { commit_log_offset, origin_msg_id, origin_topic, reconsume_times }
    ResendDeadLettersRequest { consumer_group, max_count }
    ResentMessage { msg_id, origin_msg_id, topic, queue_id, queue_offset }
    ResendDeadLettersResponse { resent, remaining }
    SubscriptionData { topic, sub_string, expression_type, tags_set, code_set, sub_version }
    ProducerData { group_name }
    ConsumerData {
        group_name, consume_type, message_model, consume_from_where, subscription_data_set,
    }
    HeartbeatRequest { client_id, producer_data_set, consumer_data_set, language, version }
    HeartbeatResponse { subscription_groups }
    RetryPolicy { first_delay_level }
    SubscriptionGroupConfig {
        group_name, consume_enable, consume_from_where, consume_timestamp_ms,
        consume_broadcast_enable, consume_message_orderly, retry_max_times, retry_policy,
    }
    CreateSubscriptionGroupRequest { config }
    DeleteSubscriptionGroupRequest { group_name }
    GetAllSubscriptionGroupRequest {}
    AllSubscriptionGroupConfig { subscription_group_table, data_version }
    EndTransactionRequest {
        producer_group, tran_state_table_offset, commit_log_offset, decision,
        from_transaction_check, msg_id, transaction_id,
    }
    CheckTransactionStateRequest {
        producer_group, tran_state_table_offset, commit_log_offset, msg_id, transaction_id,
    }
    PopMessageRequest {
        consumer_group, topic, queue_id, max_msg_nums, invisible_time_ms, poll_time_ms,
        born_time_ms, expression, expression_type, order,
    }
    PopMessageResponse { pop_time_ms, invisible_time_ms, revive_queue_id, rest_num }
    AckMessageRequest { consumer_group, topic, queue_id, offset, extra_info }
    BatchAckEntry { queue_id, offset, extra_info }
    BatchAckMessageRequest { consumer_group, topic, acks }
    BatchAckFailure { index, code, remark }
    BatchAckMessageResponse { failed }
    ChangeInvisibleTimeRequest {
        consumer_group, topic, queue_id, offset, extra_info, invisible_time_ms,
    }
    ChangeInvisibleTimeResponse { pop_time_ms, invisible_time_ms, revive_queue_id, extra_info }
    TopicConfig { topic_name, read_queue_nums, write_queue_nums, perm, topic_sys_flag, order }
    CreateTopicRequest { config }
    DeleteTopicInBrokerRequest { topic }
    DeleteTopicInNamesrvRequest { topic, cluster_name }
    GetAllTopicListFromNamesrvRequest {}
    TopicList { topics }
    GetAllTopicConfigRequest {}
    AllTopicConfig { topic_config_table, data_version }
    GetRouteInfoByTopicRequest { topic }
    QueueData { broker_name, read_queue_nums, write_queue_nums, perm, topic_sys_flag }
    BrokerData { cluster, broker_name, broker_addrs }
    TopicRouteData { queue_datas, broker_datas, order_topic_conf }
    GetBrokerClusterInfoRequest {}
    ClusterInfo { broker_addr_table, cluster_addr_table }
    RegisterBrokerRequest {
        cluster_name, broker_name, broker_addr, broker_id, ha_server_addr, topic_configs,
        data_version, heartbeat_timeout_ms,
    }
    RegisterBrokerResponse { ha_server_addr, master_addr }
    UnregisterBrokerRequest { cluster_name, broker_name, broker_addr, broker_id }
}

/// Encodes `frame` with the codec and decodes it back.
fn through_codec(frame: &Frame) -> Frame {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    codec.encode(frame, &mut buf).unwrap();
    let got = codec.decode(&mut buf).unwrap().expect("a whole frame");
    assert!(buf.is_empty(), "codec left bytes behind");
    got
}

fn check_request<R: Request + Sample + PartialEq + std::fmt::Debug>(r: &mut Rng) {
    let req = R::sample(r);
    let id = r.next_u64();
    let body = Bytes::sample(r);
    let got = through_codec(&Frame::request(id, &req, body.clone()).unwrap());
    assert_eq!(got.request_code().unwrap(), R::CODE);
    assert_eq!(got.header.request_id, id);
    assert!(!got.is_response());
    assert_eq!(got.body, body);
    assert_eq!(got.decode_request::<R>().unwrap(), req);
}

fn check_response<T: Serialize + DeserializeOwned + Sample + PartialEq + std::fmt::Debug>(
    r: &mut Rng,
) {
    let resp = T::sample(r);
    let id = r.next_u64();
    let got = through_codec(&Frame::success(id, &resp, Bytes::new()).unwrap());
    assert!(got.is_response());
    assert_eq!(got.header.request_id, id);
    assert_eq!(got.decode_fields::<T>().unwrap(), resp);
}

macro_rules! roundtrip {
    ($($name:ident: $req:ty;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            $(
                #[test]
                fn $name(seed: u64) {
                    let mut r = Rng(seed);
                    check_request::<$req>(&mut r);
                    check_response::<<$req as Request>::Response>(&mut r);
                }
            )*
        }
    };
}

roundtrip! {
    send_message: SendMessageRequest;
    send_batch_message: SendBatchMessageRequest;
    pull_message: PullMessageRequest;
    query_message: QueryMessageRequest;
    view_message_by_id: ViewMessageByIdRequest;
    query_consumer_offset: QueryConsumerOffsetRequest;
    update_consumer_offset: UpdateConsumerOffsetRequest;
    get_max_offset: GetMaxOffsetRequest;
    get_min_offset: GetMinOffsetRequest;
    search_offset_by_timestamp: SearchOffsetByTimestampRequest;
    reset_offset: ResetOffsetRequest;
    get_consumer_list_by_group: GetConsumerListByGroupRequest;
    notify_consumer_ids_changed: NotifyConsumerIdsChangedRequest;
    lock_batch_mq: LockBatchMqRequest;
    unlock_batch_mq: UnlockBatchMqRequest;
    consumer_send_msg_back: ConsumerSendMsgBackRequest;
    resend_dead_letters: ResendDeadLettersRequest;
    heartbeat: HeartbeatRequest;
    end_transaction: EndTransactionRequest;
    check_transaction_state: CheckTransactionStateRequest;
    pop_message: PopMessageRequest;
    ack_message: AckMessageRequest;
    batch_ack_message: BatchAckMessageRequest;
    change_invisible_time: ChangeInvisibleTimeRequest;
    create_topic: CreateTopicRequest;
    delete_topic_in_broker: DeleteTopicInBrokerRequest;
    delete_topic_in_namesrv: DeleteTopicInNamesrvRequest;
    get_all_topic_list: GetAllTopicListFromNamesrvRequest;
    get_all_topic_config: GetAllTopicConfigRequest;
    create_subscription_group: CreateSubscriptionGroupRequest;
    delete_subscription_group: DeleteSubscriptionGroupRequest;
    get_all_subscription_group: GetAllSubscriptionGroupRequest;
    get_route_info_by_topic: GetRouteInfoByTopicRequest;
    get_broker_cluster_info: GetBrokerClusterInfoRequest;
    register_broker: RegisterBrokerRequest;
    unregister_broker: UnregisterBrokerRequest;
}

fn assert_bodies_borrowed(input: &Bytes, bodies: impl Iterator<Item = Bytes>) {
    let range = input.as_ptr_range();
    for b in bodies.filter(|b| !b.is_empty()) {
        let r = b.as_ptr_range();
        assert!(
            range.start <= r.start && r.end <= range.end,
            "a body was copied"
        );
    }
}

proptest! {
    #[test]
    fn batch_of_messages(seed: u64) {
        let mut r = Rng(seed);
        let msgs: Vec<Message> = (0..r.below(40)).map(|_| Message::sample(&mut r)).collect();
        let bytes = messages_to_bytes(&msgs);
        let got = decode_messages(&bytes).unwrap();
        prop_assert_eq!(&got, &msgs);
        assert_bodies_borrowed(&bytes, got.into_iter().map(|m| m.body));
    }

    #[test]
    fn batch_of_stored_messages(seed: u64) {
        let mut r = Rng(seed);
        let msgs: Vec<StoredMessage> =
            (0..r.below(40)).map(|_| StoredMessage::sample(&mut r)).collect();
        let bytes = stored_to_bytes(&msgs);
        let got = decode_stored(&bytes).unwrap();
        prop_assert_eq!(&got, &msgs);
        assert_bodies_borrowed(&bytes, got.into_iter().map(|m| m.message.body));
        // A stored batch also reads as plain messages.
        let plain = decode_messages(&bytes).unwrap();
        prop_assert_eq!(plain, msgs.into_iter().map(|s| s.message).collect::<Vec<_>>());
    }

    #[test]
    fn message_id(seed: u64) {
        let mut r = Rng(seed);
        let id = MessageId { store_host: SocketAddr::sample(&mut r), commit_log_offset: u64::sample(&mut r) };
        let s = id.encode();
        prop_assert_eq!(s.len(), if id.store_host.is_ipv4() { 32 } else { 56 });
        prop_assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
        prop_assert_eq!(MessageId::decode(&s).unwrap(), id);
        prop_assert_eq!(MessageId::decode(&s.to_lowercase()).unwrap(), id);
    }

    #[test]
    fn send_request_carries_the_message(seed: u64) {
        let mut r = Rng(seed);
        let msg = Message::sample(&mut r);
        let req = SendMessageRequest::new("g", 1, 2, &msg);
        let got = through_codec(&Frame::request(1, &req, msg.body.clone()).unwrap());
        let back = got.decode_request::<SendMessageRequest>().unwrap().into_message(got.body).unwrap();
        prop_assert_eq!(back, msg);
    }
}

/// The frame shown byte by byte in the book chapter "Wire protocol".
#[test]
fn worked_example_frame() {
    let req = GetMaxOffsetRequest {
        topic: "t".into(),
        queue_id: 1,
    };
    let frame = Frame::request(1, &req, Bytes::from_static(b"hi")).unwrap();
    let mut buf = BytesMut::new();
    FrameCodec::new().encode(&frame, &mut buf).unwrap();
    let hex: Vec<String> = buf.iter().map(|b| format!("{b:02x}")).collect();
    println!("{}", hex.join(" "));
    let expected = concat!(
        "00 00 00 2d ",                   // frame length 45
        "00 00 00 27 ",                   // header length 39
        "83 a4 63 6f 64 65 1e ",          // {"code": 30,
        "a2 69 64 01 ",                   //  "id": 1,
        "a3 76 65 72 ce 00 01 00 00 ",    //  "ver": 0x00010000}
        "82 a5 74 6f 70 69 63 a1 74 ",    // {"topic": "t",
        "a8 71 75 65 75 65 5f 69 64 01 ", //  "queue_id": 1}
        "68 69",                          // body "hi"
    );
    assert_eq!(hex.join(" "), expected);
    assert_eq!(FrameCodec::new().decode(&mut buf).unwrap().unwrap(), frame);
}

/// Forward and backward compatibility of typed fields: an old peer's map
/// (fewer fields) and a newer peer's map (an unknown field) both decode.
#[test]
fn typed_fields_tolerate_older_and_newer_peers() {
    #[derive(Serialize)]
    struct OldOrNewSend {
        producer_group: &'static str,
        topic: &'static str,
        queue_id: u32,
        born_timestamp_ms: u64,
        field_from_the_future: Vec<u32>,
    }
    let peer = OldOrNewSend {
        producer_group: "g",
        topic: "orders",
        queue_id: 3,
        born_timestamp_ms: 9,
        field_from_the_future: vec![1, 2],
    };
    let frame = Frame {
        header: actormq_protocol::Header::request(10, 1),
        fields: Bytes::from(rmp_serde::to_vec_named(&peer).unwrap()),
        body: Bytes::new(),
    };
    let got: SendMessageRequest = through_codec(&frame).decode_request().unwrap();
    assert_eq!(
        got,
        SendMessageRequest {
            producer_group: "g".into(),
            topic: "orders".into(),
            queue_id: 3,
            born_timestamp_ms: 9,
            ..Default::default()
        }
    );
}

#[test]
fn batch_reply_ids_split_in_order() {
    let r = actormq_protocol::request::SendBatchMessageResponse {
        msg_id: "A,B,C".into(),
        queue_id: 0,
        queue_offset: 0,
    };
    assert_eq!(r.msg_ids().collect::<Vec<_>>(), ["A", "B", "C"]);
    let empty = actormq_protocol::request::SendBatchMessageResponse::default();
    assert_eq!(empty.msg_ids().count(), 0);
}

#[test]
fn borrowed_send_request_encodes_like_the_owned_one() {
    let mut plain = Message::new("t", Bytes::from_static(b"body"));
    plain
        .properties
        .insert("UNIQ_KEY".into(), "0A0000010000000000000001".into());
    let mut full = Message::new("topic-x", Bytes::from_static(b"b"));
    full.tags = Some("TagA".into());
    full.keys = Some("k1 k2".into());
    full.properties.insert("a".into(), "b".into());
    full.delay = Delay::Level(3);
    full.flags = 9;
    let mut at = Message::new("t", Bytes::from_static(b"b"));
    at.delay = Delay::DeliverAtMs(123_456);
    let bare = Message::new("t", Bytes::new());
    let mut long = Message::new("t".repeat(200), Bytes::from_static(b"b"));
    long.keys = Some("k".repeat(70_000));
    long.properties.insert("p".repeat(40), "v".repeat(300));
    for i in 0..20 {
        long.properties.insert(format!("k{i}"), i.to_string());
    }
    long.flags = u32::MAX;
    long.delay = Delay::Level(200);
    let mut big_at = Message::new("t", Bytes::from_static(b"b"));
    big_at.delay = Delay::DeliverAtMs(u64::MAX);
    for m in [&plain, &full, &at, &bare, &long, &big_at] {
        let owned = rmp_serde::to_vec_named(&SendMessageRequest::new("g", 3, 77, m)).unwrap();
        let borrowed = SendMessageRef::new("g", 3, 77, m);
        assert_eq!(rmp_serde::to_vec_named(&borrowed).unwrap(), owned, "{m:?}");
        let mut direct = BytesMut::new();
        borrowed.encode_fields(&mut direct);
        assert_eq!(&direct[..], &owned[..], "{m:?}");
        // Idempotent: the producer id and sequence go last, as serde
        // writes them, and decode back.
        let mut req = SendMessageRequest::new("g", 3, 77, m);
        req.producer_id = Some("0123456789abcdef0123456789abcdef".into());
        req.sequence = Some(u64::MAX - 1);
        let owned = rmp_serde::to_vec_named(&req).unwrap();
        let borrowed = borrowed.idempotent("0123456789abcdef0123456789abcdef", u64::MAX - 1);
        assert_eq!(rmp_serde::to_vec_named(&borrowed).unwrap(), owned, "{m:?}");
        let mut direct = BytesMut::new();
        borrowed.encode_fields(&mut direct);
        assert_eq!(&direct[..], &owned[..], "{m:?}");
        let back: SendMessageRequest = rmp_serde::from_slice(&direct).unwrap();
        assert_eq!(back, req);
    }
}

#[test]
fn send_requests_without_idempotence_fields_decode_as_not_idempotent() {
    // An older producer's request (no producer_id / sequence keys).
    let m = Message::new("t", Bytes::from_static(b"b"));
    let mut direct = BytesMut::new();
    SendMessageRef::new("g", 1, 2, &m).encode_fields(&mut direct);
    let back: SendMessageRequest = rmp_serde::from_slice(&direct).unwrap();
    assert_eq!((back.producer_id, back.sequence), (None, None));
    let batch = SendBatchMessageRequest {
        producer_group: "g".into(),
        topic: "t".into(),
        queue_id: 1,
        born_timestamp_ms: 2,
        producer_id: Some("ab".into()),
        sequence: Some(7),
    };
    let bytes = rmp_serde::to_vec_named(&batch).unwrap();
    let back: SendBatchMessageRequest = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, batch);
    let plain = SendBatchMessageRequest {
        producer_id: None,
        sequence: None,
        ..batch
    };
    let bytes = rmp_serde::to_vec_named(&plain).unwrap();
    assert!(!bytes.windows(8).any(|w| w == b"sequence"));
}

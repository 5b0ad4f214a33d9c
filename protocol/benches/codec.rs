//! Codec benchmarks: (a) send-request frame encode + decode, (b) decode
//! (owned and borrowed) and encode of a 32-message batch with 128-byte
//! bodies.
//!
//! Run: `cargo bench -p actormq-protocol --bench codec -- --warm-up-time 1 --measurement-time 3`

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use actormq_protocol::UniqueKeyGenerator;
use actormq_protocol::batch::{
    decode_messages, decode_stored, encode_messages, encode_messages_keyed, encode_stored,
    iter_messages, iter_raw, messages_to_bytes,
};
use actormq_protocol::request::SendMessageRequest;
use actormq_protocol::{Frame, FrameCodec, Message, StoredMessage};
use bytes::{Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio_util::codec::{Decoder, Encoder};

fn sample_message(i: usize) -> Message {
    let mut m = Message::new("bench_topic", Bytes::from(vec![i as u8; 128]));
    m.tags = Some("TagA".into());
    m.keys = Some(format!("order-{i}"));
    m.properties.insert(
        "UNIQ_KEY".into(),
        format!("0192A7C3D2E1000012340000{i:02X}"),
    );
    m
}

fn send_header(c: &mut Criterion) {
    let msg = sample_message(1);
    let req = SendMessageRequest::new("bench_group", 3, 1_700_000_000_000, &msg);
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::with_capacity(4096);
    c.bench_function("send_header_encode_decode", |b| {
        b.iter(|| {
            let frame = Frame::request(42, black_box(&req), Bytes::new()).unwrap();
            codec.encode(&frame, &mut buf).unwrap();
            let got = codec.decode(&mut buf).unwrap().unwrap();
            let fields: SendMessageRequest = got.decode_request().unwrap();
            black_box(fields);
        })
    });
}

fn batch(c: &mut Criterion) {
    // Topic + tag + body: the shape of most batched sends.
    let plain: Vec<Message> = (0..32)
        .map(|i| {
            let mut m = Message::new("bench_topic", Bytes::from(vec![i as u8; 128]));
            m.tags = Some("TagA".into());
            m
        })
        .collect();
    let plain_bytes = messages_to_bytes(&plain);
    c.bench_function("batch32_decode_topic_tag", |b| {
        b.iter(|| black_box(decode_messages(black_box(&plain_bytes)).unwrap()))
    });
    // Plus keys and a UNIQ_KEY property: six allocations per message.
    let msgs: Vec<Message> = (0..32).map(sample_message).collect();
    let bytes = messages_to_bytes(&msgs);
    c.bench_function("batch32_decode", |b| {
        b.iter(|| black_box(decode_messages(black_box(&bytes)).unwrap()))
    });
    c.bench_function("batch32_iter_refs", |b| {
        b.iter(|| {
            for m in iter_messages(black_box(&bytes)) {
                black_box(m.unwrap());
            }
        })
    });
    // What `actormq bench produce --batch 1000` sends: topic and a 128-byte
    // body, the unique key stamped while encoding; and how the broker reads it.
    let thousand: Vec<Message> = (0..1000)
        .map(|i| Message::new("bench_topic", Bytes::from(vec![i as u8; 128])))
        .collect();
    let keys = UniqueKeyGenerator::new(7);
    c.bench_function("batch1000_encode_keyed", |b| {
        b.iter(|| {
            let mut dst = BytesMut::new();
            encode_messages_keyed(black_box(&thousand), &keys, &mut dst);
            black_box(dst)
        })
    });
    let mut keyed = BytesMut::new();
    encode_messages_keyed(&thousand, &keys, &mut keyed);
    let keyed = keyed.freeze();
    c.bench_function("batch1000_iter_raw", |b| {
        b.iter(|| {
            for m in iter_raw(black_box(&keyed)) {
                black_box(m.unwrap());
            }
        })
    });
    // What a consumer decodes: a pull reply of 256 stored messages (topic,
    // 128-byte body, a unique key).
    let host = "127.0.0.1:10911".parse().unwrap();
    let stored: Vec<StoredMessage> = (0..256u64)
        .map(|i| {
            let mut m = Message::new("bench_topic", Bytes::from(vec![i as u8; 128]));
            m.properties.insert(
                "UNIQ_KEY".into(),
                format!("0192A7C3D2E1000012340000{i:02X}"),
            );
            StoredMessage {
                message: m,
                queue_id: 1,
                queue_offset: i,
                commit_log_offset: 1 << 30 | (i * 270),
                store_size: 270,
                born_timestamp_ms: 1_700_000_000_000 + i,
                store_timestamp_ms: 1_700_000_000_001 + i,
                born_host: host,
                store_host: host,
                body_crc: 0xDEAD_BEEF,
                reconsume_times: 0,
                prepared_transaction_offset: 0,
            }
        })
        .collect();
    let mut pulled = BytesMut::new();
    encode_stored(&stored, &mut pulled);
    let pulled = pulled.freeze();
    c.bench_function("stored256_decode", |b| {
        b.iter(|| black_box(decode_stored(black_box(&pulled)).unwrap()))
    });
    c.bench_function("batch32_encode", |b| {
        b.iter(|| {
            let mut dst = BytesMut::new();
            encode_messages(black_box(&msgs), &mut dst);
            black_box(dst)
        })
    });
}

criterion_group!(benches, send_header, batch);
criterion_main!(benches);

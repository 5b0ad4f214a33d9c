//! Random input: the decoders never panic, and return `Ok(None)` (need
//! more bytes), `Ok(frame)` or `Err` only.

use std::net::SocketAddr;

use actormq_protocol::batch::{decode_messages, decode_stored, messages_to_bytes, stored_to_bytes};
use actormq_protocol::request::*;
use actormq_protocol::{Frame, FrameCodec, Message, MessageId, StoredMessage};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use crate::{Rng, serve};

/// Valid frames to mutate: mutations of real frames reach deeper than
/// pure noise, which mostly fails the length checks.
fn seeds() -> Vec<Vec<u8>> {
    let mut msg = Message::new("orders", &b"hello"[..]);
    msg.tags = Some("TagA".into());
    msg.properties.insert("k".into(), "v".into());
    let host: SocketAddr = "10.0.0.1:10911".parse().unwrap();
    let stored = StoredMessage {
        message: msg.clone(),
        queue_id: 1,
        queue_offset: 2,
        commit_log_offset: 3,
        store_size: 4,
        born_timestamp_ms: 5,
        store_timestamp_ms: 6,
        born_host: host,
        store_host: host,
        body_crc: 7,
        reconsume_times: 8,
        prepared_transaction_offset: 9,
    };
    let frames = [
        Frame::request(
            1,
            &SendMessageRequest::new("g", 0, 1, &msg),
            msg.body.clone(),
        )
        .unwrap(),
        Frame::request(
            2,
            &SendBatchMessageRequest {
                topic: "orders".into(),
                ..Default::default()
            },
            messages_to_bytes(&[msg.clone(), msg.clone()]),
        )
        .unwrap(),
        Frame::request(
            3,
            &CheckTransactionStateRequest {
                msg_id: MessageId {
                    store_host: host,
                    commit_log_offset: 3,
                }
                .encode(),
                ..Default::default()
            },
            stored_to_bytes(&[stored]),
        )
        .unwrap(),
        Frame::request(
            4,
            &GetMaxOffsetRequest {
                topic: "t".into(),
                queue_id: 1,
            },
            Bytes::new(),
        )
        .unwrap(),
        Frame::success(5, &PullMessageResponse::default(), Bytes::new()).unwrap(),
        Frame::error(6, actormq_protocol::ResponseCode::SystemBusy, "busy"),
    ];
    frames
        .iter()
        .map(|f| {
            let mut b = BytesMut::new();
            FrameCodec::new().encode(f, &mut b).unwrap();
            b.to_vec()
        })
        .collect()
}

fn mutate(r: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..=r.below(4) {
        match r.below(5) {
            0 if !bytes.is_empty() => {
                let i = r.below(bytes.len() as u64) as usize;
                bytes[i] = r.next_u64() as u8;
            }
            1 if !bytes.is_empty() => {
                let i = r.below(bytes.len() as u64) as usize;
                bytes[i] ^= 1 << r.below(8);
            }
            2 => {
                let n = r.below(bytes.len() as u64 + 1) as usize;
                bytes.truncate(n);
            }
            3 => {
                let i = r.below(bytes.len() as u64 + 1) as usize;
                bytes.insert(i, r.next_u64() as u8);
            }
            _ => {}
        }
    }
    bytes
}

#[derive(Debug, Default)]
struct Outcomes {
    need_more: usize,
    frames: usize,
    errors: usize,
}

/// One input through the codec alone and through the whole pipeline.
fn feed(bytes: &[u8], seen: &mut Outcomes) {
    let mut src = BytesMut::from(bytes);
    match FrameCodec::with_max_frame_len(crate::TEST_MAX_FRAME).decode(&mut src) {
        Ok(None) => assert_eq!(src.len(), bytes.len(), "Ok(None) must not consume input"),
        Ok(Some(f)) => {
            // Typed decoders on whatever the frame carries: no panics.
            let _ = f.decode_fields::<SendMessageRequest>();
            let _ = f.decode_fields::<HeartbeatRequest>();
            let _ = decode_stored(&f.body);
        }
        Err(_) => {}
    }
    match serve(bytes) {
        Ok(None) => seen.need_more += 1,
        Ok(Some(_)) => seen.frames += 1,
        Err(e) => {
            let _ = e.response_code();
            seen.errors += 1;
        }
    }
    // The same bytes as a batch body and as a message id.
    let b = Bytes::copy_from_slice(bytes);
    let _ = decode_messages(&b);
    let _ = decode_stored(&b);
    let _ = MessageId::decode(&String::from_utf8_lossy(bytes));
}

#[test]
fn prng_loop_100k_inputs() {
    let seeds = seeds();
    let mut r = Rng(0x0005_EED0_FAC7_04D0);
    let mut seen = Outcomes::default();
    for i in 0..100_000u32 {
        let input = if i % 4 == 0 {
            (0..r.below(64)).map(|_| r.next_u64() as u8).collect()
        } else {
            let seed = seeds[r.below(seeds.len() as u64) as usize].clone();
            mutate(&mut r, seed)
        };
        feed(&input, &mut seen);
    }
    // The loop exercised every outcome, so it reached past the length checks.
    assert!(
        seen.need_more > 1000 && seen.frames > 1000 && seen.errors > 1000,
        "{seen:?}"
    );
}

#[test]
fn unmutated_seeds_are_accepted() {
    for s in seeds() {
        assert!(serve(&s).unwrap().is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        feed(&bytes, &mut Outcomes::default());
    }

    #[test]
    fn mutated_frames_never_panic(seed: u64) {
        let mut r = Rng(seed);
        let seeds = seeds();
        let s = seeds[r.below(seeds.len() as u64) as usize].clone();
        feed(&mutate(&mut r, s), &mut Outcomes::default());
    }

    #[test]
    fn split_input_decodes_the_same(seed: u64, cut in 0usize..400) {
        // Any frame, delivered in two reads, decodes to the same frame.
        let seeds = seeds();
        let whole = &seeds[(seed % seeds.len() as u64) as usize];
        let cut = cut.min(whole.len());
        let mut codec = FrameCodec::new();
        let mut src = BytesMut::from(&whole[..cut]);
        let first = codec.decode(&mut src).unwrap();
        prop_assert_eq!(first.is_some(), cut == whole.len());
        src.extend_from_slice(&whole[cut..]);
        let frame = first.or_else(|| codec.decode(&mut src).unwrap());
        let expected = FrameCodec::new().decode(&mut BytesMut::from(&whole[..])).unwrap();
        prop_assert_eq!(frame, expected);
    }
}

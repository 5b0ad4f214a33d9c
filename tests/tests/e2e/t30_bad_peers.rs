//! Hostile and broken peers against a running node: each gets an error
//! reply or a closed connection, while a well-behaved client on another
//! connection is served throughout and after, and the node stays up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use actormq_protocol::Bytes;
use actormq_protocol::request::{GetAllTopicConfigRequest, QueryConsumerOffsetRequest};
use actormq_protocol::{BytesMut, Frame, Header, ResponseCode, Version};
use actormq_tests::client::{Client, RawConn, RawEvent, encode, within};

use crate::common::*;

const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// A frame with hand-made header bytes: `u32 F | u32 H | header | body`.
fn raw_frame(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
    v.extend_from_slice(&(header.len() as u32).to_be_bytes());
    v.extend_from_slice(header);
    v.extend_from_slice(body);
    v
}

fn common_header(h: &Header) -> Vec<u8> {
    let mut b = BytesMut::new();
    h.encode_into(&mut b);
    b.to_vec()
}

/// Deterministic noise.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// Every frame the peer sent before closing must be an error reply.
fn assert_error_replies(what: &str, frames: &[Frame]) {
    for f in frames {
        assert!(f.is_response(), "{what}: a non-reply frame {f:?}");
        assert_ne!(
            f.response_code().ok(),
            Some(ResponseCode::Success),
            "{what}: success reply {f:?}"
        );
    }
}

/// Sends `bytes`, then expects error replies (or none) and a close.
async fn expect_closed(addr: SocketAddr, what: &str, bytes: &[u8]) -> Vec<Frame> {
    let mut conn = RawConn::connect(addr).await.expect("connect");
    // The node may close before reading everything: a failed write is fine.
    let _ = conn.write(bytes).await;
    let frames = conn
        .frames_until_close(CLOSE_LIMIT)
        .await
        .unwrap_or_else(|f| {
            panic!("{what}: connection not closed within {CLOSE_LIMIT:?} (got {f:?})")
        });
    assert_error_replies(what, &frames);
    frames
}

/// A well-behaved client hammering the broker until told to stop.
struct GoodClient {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl GoodClient {
    async fn start(addr: SocketAddr) -> GoodClient {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let mut c = connect(addr).await;
        c.set_timeout(Duration::from_secs(5));
        let (s, n) = (stop.clone(), served.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let r = c
                    .call(&GetAllTopicConfigRequest {}, Bytes::new())
                    .await
                    .map_err(|e| format!("good client call: {e}"))?;
                r.ok().map_err(|e| format!("good client reply: {e}"))?;
                n.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(())
        });
        GoodClient { stop, served, task }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        within(Duration::from_secs(10), self.task)
            .await
            .expect("good client stops")
            .expect("good client task")
            .expect("good client served throughout");
        self.served.load(Ordering::Relaxed)
    }
}

/// One fresh, well-behaved call (the node still serves new connections).
async fn fresh_call_works(addr: SocketAddr) {
    let mut c = connect(addr).await;
    c.call(&GetAllTopicConfigRequest {}, Bytes::new())
        .await
        .expect("fresh call")
        .ok()
        .expect("fresh call succeeds");
}

async fn bad_peers_against(addr: SocketAddr, is_broker: bool) {
    let good = if is_broker {
        Some(GoodClient::start(addr).await)
    } else {
        None
    };
    let check = |name: &'static str| async move {
        if is_broker {
            fresh_call_works(addr).await;
        } else {
            // The name server port serves cluster info.
            cluster_info(addr)
                .await
                .unwrap_or_else(|e| panic!("after {name}: {e}"));
        }
    };

    // 1. Garbage bytes: an HTTP request (its first four bytes read as a
    //    ~1.2 GB frame length).
    expect_closed(addr, "http garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    check("http garbage").await;

    // 2. Garbage bytes: noise, then end of stream (whatever the noise
    //    parses as, the connection must end).
    let mut conn = RawConn::connect(addr).await.unwrap();
    let _ = conn.write(&noise(4096, 7)).await;
    let _ = conn.shutdown_write().await;
    let frames = conn
        .frames_until_close(CLOSE_LIMIT)
        .await
        .unwrap_or_else(|f| panic!("noise: not closed ({f:?})"));
    assert_error_replies("noise", &frames);
    check("noise").await;

    // 3. Frame length below the minimum (4).
    expect_closed(addr, "short frame length", &[0, 0, 0, 2, 0xde, 0xad]).await;

    // 4. Oversized frame: length just over 16 MiB; the node must not wait
    //    for (or buffer) the 16 MiB.
    let mut big = ((16u32 << 20) + 1).to_be_bytes().to_vec();
    big.extend_from_slice(&[0, 0, 0, 8]);
    big.extend_from_slice(&noise(1024, 3));
    let frames = expect_closed(addr, "oversized frame", &big).await;
    if let Some(f) = frames.first() {
        assert_eq!(
            f.response_code().ok(),
            Some(ResponseCode::MalformedFrame),
            "{f:?}"
        );
    }
    check("oversized").await;

    // 5. Header length larger than the frame.
    let mut hl = 8u32.to_be_bytes().to_vec();
    hl.extend_from_slice(&100u32.to_be_bytes());
    hl.extend_from_slice(&[0x80; 4]);
    expect_closed(addr, "header longer than frame", &hl).await;

    // 6. Bad MessagePack in the common header (0xc1 is never valid).
    let frames = expect_closed(
        addr,
        "bad header msgpack",
        &raw_frame(&[0xc1, 0xc1, 0xc1], b""),
    )
    .await;
    assert!(frames.len() <= 1, "{frames:?}");
    // A header map without the required `code`.
    let no_code = {
        // {"id": 5, "ver": 65536} written by hand.
        let mut v = vec![
            0x82, 0xa2, b'i', b'd', 0x05, 0xa3, b'v', b'e', b'r', 0xce, 0, 1, 0, 0,
        ];
        v.push(0x80);
        v
    };
    expect_closed(addr, "header without code", &raw_frame(&no_code, b"")).await;
    check("bad header").await;

    // 7. Unsupported protocol major version: VERSION_NOT_SUPPORTED, close.
    let mut h = Header::request(21, 9);
    h.version = Version { major: 2, minor: 0 };
    let mut hv = common_header(&h);
    hv.push(0x80);
    let frames = expect_closed(addr, "version 2", &raw_frame(&hv, b"")).await;
    if let Some(f) = frames.first() {
        assert_eq!(
            f.response_code().ok(),
            Some(ResponseCode::VersionNotSupported),
            "{f:?}"
        );
    }

    // 8. Unknown request code: REQUEST_CODE_NOT_SUPPORTED for that id, and
    //    the connection keeps serving.
    let mut conn = RawConn::connect(addr).await.unwrap();
    let unknown = Frame {
        header: Header::request(9999, 77),
        fields: Bytes::from_static(&[0x80]),
        body: Bytes::from_static(b"whatever"),
    };
    conn.write(&encode(&unknown).unwrap()).await.unwrap();
    match conn.next_event(CLOSE_LIMIT).await {
        RawEvent::Frame(f) => {
            assert!(f.is_response());
            assert_eq!(f.header.request_id, 77);
            assert_eq!(
                f.response_code().ok(),
                Some(ResponseCode::RequestCodeNotSupported),
                "{f:?}"
            );
        }
        other => panic!("unknown code: {other:?}"),
    }

    // 9. Bad typed fields for a known code, on the same connection: an
    //    error reply for that id (the connection may stay open).
    let mut bad_fields = common_header(&Header::request(14, 78));
    bad_fields.extend_from_slice(&[0xc1, 0xc1]);
    conn.write(&raw_frame(&bad_fields, b"")).await.unwrap();
    match conn.next_event(CLOSE_LIMIT).await {
        RawEvent::Frame(f) => {
            assert!(f.is_response());
            assert_eq!(f.header.request_id, 78);
            assert_ne!(f.response_code().ok(), Some(ResponseCode::Success), "{f:?}");
        }
        RawEvent::Closed => {}
        other => panic!("bad fields: {other:?}"),
    }
    // Fields of the wrong shape (a map missing required keys).
    let mut c = connect(addr).await;
    let wrong = Frame {
        header: Header::request(14, 79),
        fields: Bytes::from_static(&[0x81, 0xa1, b'x', 0x01]),
        body: Bytes::new(),
    };
    let reply = c.call_frame(wrong).await.expect("reply to wrong fields");
    assert_ne!(
        reply.response_code().ok(),
        Some(ResponseCode::Success),
        "{reply:?}"
    );
    if is_broker {
        // And the same connection still serves a good request.
        let ok = c
            .call(
                &QueryConsumerOffsetRequest {
                    consumer_group: "t30".into(),
                    topic: "t30".into(),
                    queue_id: 0,
                },
                Bytes::new(),
            )
            .await
            .expect("good call after a bad one");
        assert!(
            matches!(ok.code, ResponseCode::Success | ResponseCode::QueryNotFound),
            "{:?}",
            ok.code
        );
    }
    drop(conn);

    // 10. Truncated frame, then the peer disconnects (both ways: half
    //     close and waiting for the verdict, and a plain drop).
    let mut t = 100u32.to_be_bytes().to_vec();
    t.extend_from_slice(&noise(20, 9));
    let mut conn = RawConn::connect(addr).await.unwrap();
    conn.write(&t).await.unwrap();
    conn.shutdown_write().await.unwrap();
    let frames = conn
        .frames_until_close(CLOSE_LIMIT)
        .await
        .unwrap_or_else(|f| panic!("truncated: not closed ({f:?})"));
    assert_error_replies("truncated", &frames);
    // The verdict names the fault: a malformed frame, not a system error.
    let codes: Vec<_> = frames.iter().map(|f| f.response_code().ok()).collect();
    assert_eq!(
        codes,
        [Some(ResponseCode::MalformedFrame)],
        "truncated: {frames:?}"
    );
    let mut conn = RawConn::connect(addr).await.unwrap();
    conn.write(&t).await.unwrap();
    drop(conn);
    // Truncated in the middle of a valid frame.
    let valid =
        encode(&Frame::request(5, &GetAllTopicConfigRequest {}, Bytes::new()).unwrap()).unwrap();
    let mut conn = RawConn::connect(addr).await.unwrap();
    conn.write(&valid[..valid.len() - 1]).await.unwrap();
    drop(conn);
    check("truncated").await;

    // 11. A peer that pipelines without reading, then vanishes.
    let mut conn = RawConn::connect(addr).await.unwrap();
    let mut burst = Vec::new();
    for id in 0..20_000u64 {
        burst.extend_from_slice(
            &encode(&Frame::request(id, &GetAllTopicConfigRequest {}, Bytes::new()).unwrap())
                .unwrap(),
        );
    }
    // The node may stop reading (backpressure): bounded write, then drop.
    let _ = within(Duration::from_secs(2), conn.write(&burst)).await;
    drop(conn);
    check("pipelining without reading").await;

    if let Some(good) = good {
        let before = good.served();
        let total = good.finish().await;
        assert!(total > 0 && total >= before, "good client served {total}");
    }
}

#[tokio::test]
async fn t30_bad_peers_broker_port() {
    bounded(async {
        let mut node = combined(NO_ARGS);
        bad_peers_against(node.broker(), true).await;
        assert!(node.is_alive(), "node died:\n{}", node.stderr_tail(40));
        fresh_call_works(node.broker()).await;
        node.terminate().expect("clean exit after the abuse");
    })
    .await;
}

#[tokio::test]
async fn t30_bad_peers_namesrv_port() {
    bounded(async {
        let mut node = combined(NO_ARGS);
        bad_peers_against(node.namesrv(), false).await;
        assert!(node.is_alive(), "node died:\n{}", node.stderr_tail(40));
        cluster_info(node.namesrv())
            .await
            .expect("name server still serves");
        let _: Client = connect(node.broker()).await;
        node.terminate().expect("clean exit after the abuse");
    })
    .await;
}

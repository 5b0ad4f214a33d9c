//! A peer that pipelines requests and never reads the replies: the server
//! stops reading (bounded memory), cuts it after the stall timeout, and
//! serves other clients throughout.

use std::time::{Duration, Instant};

use actix::prelude::*;
use actormq_actors::runtime::net::GetSessionStats;
use actormq_actors::runtime::{Call, Listener, ListenerOptions, SessionLimits, SubscribeClosed};
use actormq_protocol::{Encoder, Frame, FrameCodec, Header};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::t20_net::{Collector, Counter, Echo, echo, logger, router_for};

const BODY: usize = 1024;

#[actix_rt::test]
async fn a_peer_that_never_reads_is_throttled_then_cut() {
    let limits = SessionLimits {
        max_in_flight: 64,
        max_write_buffer: 64 * 1024,
        write_stall_timeout: Duration::from_secs(1),
        ..SessionLimits::default()
    };
    let (tx, mut closed) = mpsc::unbounded_channel();
    let counter = Counter::default().start();
    let options = ListenerOptions {
        arbiters: vec![Arbiter::new().handle()],
        subscribers: vec![],
        max_connections: None,
        max_connection_memory: None,
    };
    let (listener, addr) = Listener::bind_with(
        "127.0.0.1:0",
        router_for(&counter),
        limits,
        options,
        &logger(),
    )
    .unwrap();
    listener
        .send(SubscribeClosed(Collector(tx).start().recipient()))
        .await
        .unwrap();

    // 64 pipelined requests with 1 KiB bodies per write.
    let mut chunk = BytesMut::new();
    for n in 0..64 {
        let f = Frame {
            header: Header::request(<Echo as actormq_actors::runtime::Rpc>::CODE, n + 1),
            fields: Bytes::from(rmp_serde::to_vec_named(&echo(n, "hog")).unwrap()),
            body: Bytes::from(vec![0xab; BODY]),
        };
        FrameCodec::new().encode(&f, &mut chunk).unwrap();
    }
    let reply_size = chunk.len() / 64 + 64; // echo replies carry the body back
    let mut hog = TcpStream::connect(addr).await.unwrap();
    let budget = 256usize << 20;
    let mut sent = 0;
    // Write until a write stays blocked and the server reports it is not
    // reading this session (a blocked write alone could be a slow server).
    let hog_stats = loop {
        match tokio::time::timeout(Duration::from_millis(300), hog.write_all(&chunk)).await {
            Ok(res) => {
                res.unwrap();
                sent += chunk.len();
                assert!(
                    sent < budget,
                    "the server kept reading {sent} bytes from a peer that never reads"
                );
            }
            Err(_) => {
                let stats = listener.send(GetSessionStats).await.unwrap();
                assert_eq!(stats.len(), 1, "{stats:?}");
                if !stats[0].reading {
                    break stats[0];
                }
            }
        }
    };

    // Its reply buffer is bounded: the cap plus the replies in flight when
    // the cap was reached.
    let bound = limits.max_write_buffer + limits.max_in_flight * reply_size;
    assert!(
        hog_stats.max_buffered_bytes <= bound,
        "buffered {} > bound {bound}",
        hog_stats.max_buffered_bytes
    );
    assert!(
        hog_stats.buffered_bytes >= limits.max_write_buffer,
        "{hog_stats:?}"
    );
    eprintln!(
        "hog: sent {sent} bytes before blocking; server read {} frames, buffered max {} (bound {bound})",
        hog_stats.frames_read, hog_stats.max_buffered_bytes
    );

    // Another client is served meanwhile.
    let clients = actormq_actors::runtime::ClientSessions::new(&logger());
    let client = clients.session_at(addr, actormq_actors::runtime::Lane::Main);
    let r = client.send(Call::new(echo(7, "good"))).await.unwrap();
    assert_eq!(r.fields.n, 7);

    // After the stall timeout the hog is cut off, and only the hog.
    let start = Instant::now();
    let event = tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("hog cut within 10 s")
        .unwrap();
    assert_eq!(event.conn_id, hog_stats.conn_id);
    assert!(start.elapsed() <= Duration::from_secs(5));
    let r = client.send(Call::new(echo(8, "good"))).await.unwrap();
    assert_eq!(r.fields.n, 8);

    // The hog sees its connection end after the replies in flight.
    let mut sink = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match hog.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "hog connection still open");
}

//! Broker-side connections under faults, over real sockets on 127.0.0.1:0:
//! a panic in one connection's session (in a handler, and in the driver
//! while it writes a reply) with requests pipelined behind it; the
//! connection cap; the memory cap across connections with many peers that
//! do not read.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actormq_actors::runtime::net::{
    GetListenerStats, GetSessionStats, InjectSessionPanic, ListenerOptions,
};
use actormq_actors::runtime::{Call, Listener, Reply, Router, Rpc, ServiceError, SessionLimits};
use actormq_protocol::{Encoder, Frame, FrameCodec, Header, ResponseCode};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use slog::{Drain, Logger, o};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;

/// Held until the test opens the gate, then answered with `n`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    n: u64,
}

/// Answered at once with `n`; the reply carries the request's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping {
    n: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Num {
    n: u64,
}

impl Rpc for Held {
    const CODE: u32 = 1_000_201;
    type Response = Num;
}

impl Rpc for Ping {
    const CODE: u32 = 1_000_202;
    type Response = Num;
}

/// A request whose reply panics while the session encodes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Explode {}

/// A reply type whose serialisation panics (a bug in a reply type).
#[derive(Debug, Clone, Deserialize)]
struct Explosive {}

impl Serialize for Explosive {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("reply encoding panics on purpose (expected in this test)")
    }
}

impl Rpc for Explode {
    const CODE: u32 = 1_000_203;
    type Response = Explosive;
}

struct Exploder;
impl Actor for Exploder {
    type Context = Context<Self>;
}
impl Handler<Call<Explode>> for Exploder {
    type Result = Result<Reply<Explosive>, ServiceError>;
    fn handle(&mut self, _: Call<Explode>, _: &mut Context<Self>) -> Self::Result {
        Ok(Reply::ok(Explosive {}))
    }
}

/// Log lines (message and key-values) kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

struct KvText(String);
impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        self.0.push_str(&format!(" {key}={val}"));
        Ok(())
    }
}

impl Drain for Captured {
    type Ok = ();
    type Err = slog::Never;
    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use slog::KV;
        let mut text = KvText(format!("{} {}", record.level(), record.msg()));
        let _ = record.kv().serialize(record, &mut text);
        let _ = values.serialize(record, &mut text);
        self.0.lock().unwrap().push(text.0);
        Ok(())
    }
}

impl Captured {
    fn logger(&self) -> Logger {
        Logger::root(self.clone().fuse(), o!())
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A router serving `Held` (behind `gate`, telling `arrived` of each
/// request as it is dispatched), `Ping` and `Explode`.
fn router(gate: watch::Receiver<bool>, arrived: mpsc::UnboundedSender<u64>) -> Router {
    let mut router = Router::new();
    router.route_fn::<Held, _, _>(move |call: Call<Held>| {
        let mut gate = gate.clone();
        let _ = arrived.send(call.req.n);
        async move {
            let _ = gate.wait_for(|open| *open).await;
            Ok(Reply::ok(Num { n: call.req.n }))
        }
    });
    router.route_fn::<Ping, _, _>(|call: Call<Ping>| async move {
        Ok(Reply::with_body(Num { n: call.req.n }, call.body))
    });
    router.route::<Explode>(Exploder.start().recipient());
    router
}

struct Raw {
    reader: FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    local: SocketAddr,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        let (r, w) = stream.into_split();
        Raw {
            reader: FramedRead::new(r, FrameCodec::new()),
            writer: w,
            local,
        }
    }

    /// Writes the frames in one write; false when the peer is gone.
    async fn send_all(&mut self, frames: &[Frame]) -> bool {
        let mut buf = BytesMut::new();
        for frame in frames {
            FrameCodec::new().encode(frame, &mut buf).unwrap();
        }
        self.writer.write_all(&buf).await.is_ok()
    }

    /// The next reply; `None` at EOF or reset.
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(10), self.reader.next())
            .await
            .expect("reply or close within 10 s (no hang)")
            .and_then(Result::ok)
    }

    async fn ping(&mut self, n: u64) -> u64 {
        assert!(
            self.send_all(&[request(n, &Ping { n }, Bytes::new())])
                .await
        );
        let reply = self.next().await.expect("a ping reply");
        assert_eq!(reply.header.request_id, n);
        assert_eq!(reply.response_code().unwrap(), ResponseCode::Success);
        reply.decode_fields::<Num>().unwrap().n
    }
}

fn request<R: Rpc>(id: u64, req: &R, body: Bytes) -> Frame {
    Frame {
        header: Header::request(R::CODE, id),
        fields: Bytes::from(rmp_serde::to_vec_named(req).unwrap()),
        body,
    }
}

async fn conn_id_of(listener: &Addr<Listener>, peer: SocketAddr) -> u64 {
    let stats = listener.send(GetSessionStats).await.unwrap();
    stats
        .iter()
        .find(|s| s.peer == peer)
        .map(|s| s.conn_id)
        .expect("the connection has a session")
}

async fn wait_arrivals(arrived: &mut mpsc::UnboundedReceiver<u64>, n: usize) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    while seen.len() < n {
        let got = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
            .await
            .expect("requests dispatched in time")
            .unwrap();
        seen.insert(got);
    }
    seen
}

/// Reads until EOF; returns (request id, code, remark) of every reply.
async fn read_to_end(raw: &mut Raw) -> Vec<(u64, ResponseCode, String)> {
    let mut out = Vec::new();
    while let Some(frame) = raw.next().await {
        let code = frame.response_code().unwrap();
        out.push((
            frame.header.request_id,
            code,
            frame.header.remark.clone().unwrap_or_default(),
        ));
    }
    out
}

#[actix_rt::test]
async fn a_session_panic_answers_its_requests_and_spares_the_others() {
    let log = Captured::default();
    let (open, gate) = watch::channel(false);
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (listener, addr) = Listener::bind(
        "127.0.0.1:0",
        router(gate, arrived_tx),
        SessionLimits::default(),
        &log.logger(),
    )
    .unwrap();

    // A bystander with requests in flight, and the victim with 20.
    let mut bystander = Raw::connect(addr).await;
    let held: Vec<Frame> = (101..=105)
        .map(|n| request(n, &Held { n }, Bytes::new()))
        .collect();
    assert!(bystander.send_all(&held).await);
    let mut victim = Raw::connect(addr).await;
    let held: Vec<Frame> = (1..=20)
        .map(|n| request(n, &Held { n }, Bytes::new()))
        .collect();
    assert!(victim.send_all(&held).await);
    wait_arrivals(&mut arrived, 25).await;
    assert_eq!(bystander.ping(1000).await, 1000);

    let victim_conn = conn_id_of(&listener, victim.local).await;
    let injected = listener.send(InjectSessionPanic {
        conn_id: victim_conn,
        reason: "session broke (expected in this test)".into(),
    });
    assert!(injected.await.unwrap());
    // Pipelined behind the poison: never read, never served.
    let behind: Vec<Frame> = (50..55)
        .map(|n| request(n, &Ping { n }, Bytes::new()))
        .collect();
    let _ = victim.send_all(&behind).await; // may fail: the peer is closing

    let replies = read_to_end(&mut victim).await;
    let ids: BTreeSet<u64> = replies.iter().map(|r| r.0).collect();
    assert_eq!(
        ids,
        (1..=20).collect(),
        "every request in flight answered once"
    );
    assert_eq!(replies.len(), 20);
    for (id, code, remark) in &replies {
        assert_eq!(*code, ResponseCode::SystemError, "request {id}");
        assert!(remark.contains("outcome is unknown"), "{remark}");
    }

    // Everyone else keeps being served: the bystander's held requests and
    // new pings, and a new connection.
    open.send(true).unwrap();
    let mut got = BTreeSet::new();
    for _ in 0..5 {
        let r = bystander.next().await.expect("bystander reply");
        assert_eq!(r.response_code().unwrap(), ResponseCode::Success);
        got.insert(r.header.request_id);
    }
    assert_eq!(got, (101..=105).collect());
    assert_eq!(bystander.ping(1001).await, 1001);
    let mut fresh = Raw::connect(addr).await;
    assert_eq!(fresh.ping(7).await, 7);

    let stats = listener.send(GetListenerStats).await.unwrap();
    assert_eq!(stats.session_panics, 1);
    let victim_addr = victim.local.to_string();
    let lines = log.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ERRO") && l.contains("panic") && l.contains(&victim_addr)),
        "no error line naming {victim_addr}: {lines:#?}"
    );
}

#[actix_rt::test]
async fn a_panic_while_encoding_a_reply_fails_only_that_connection() {
    let log = Captured::default();
    let (_open, gate) = watch::channel(false);
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (listener, addr) = Listener::bind(
        "127.0.0.1:0",
        router(gate, arrived_tx),
        SessionLimits::default(),
        &log.logger(),
    )
    .unwrap();
    let mut other = Raw::connect(addr).await;
    assert_eq!(other.ping(1).await, 1);

    // Five held requests, the poison, five pings behind it: one write.
    let mut victim = Raw::connect(addr).await;
    let mut frames: Vec<Frame> = (1..=5)
        .map(|n| request(n, &Held { n }, Bytes::new()))
        .collect();
    frames.push(request(6, &Explode {}, Bytes::new()));
    frames.extend((7..=11).map(|n| request(n, &Ping { n }, Bytes::new())));
    assert!(victim.send_all(&frames).await);
    wait_arrivals(&mut arrived, 5).await;

    let replies = read_to_end(&mut victim).await;
    let mut seen = BTreeSet::new();
    for (id, code, remark) in &replies {
        assert!(seen.insert(*id), "request {id} answered twice");
        match id {
            // Held when the session panicked: an error, never a hang.
            1..=5 => {
                assert_eq!(*code, ResponseCode::SystemError, "{remark}");
                assert!(remark.contains("outcome is unknown"), "{remark}");
            }
            // Served before the panic, or answered with the error.
            7..=11 => assert!(
                matches!(code, ResponseCode::Success | ResponseCode::SystemError),
                "{id}: {code:?}"
            ),
            _ => panic!("unexpected reply {id} {code:?} {remark}"),
        }
    }
    assert!((1..=5).all(|id| seen.contains(&id)), "{replies:?}");

    assert_eq!(other.ping(2).await, 2, "another connection still served");
    let mut fresh = Raw::connect(addr).await;
    assert_eq!(fresh.ping(3).await, 3, "new connections still accepted");
    let stats = listener.send(GetListenerStats).await.unwrap();
    assert_eq!(stats.session_panics, 1);
    let needle = victim.local.to_string();
    assert!(
        log.lines()
            .iter()
            .any(|l| l.contains("reply encoding panics") && l.contains(&needle)),
        "{:#?}",
        log.lines()
    );
}

#[actix_rt::test]
async fn past_the_connection_cap_a_connection_is_closed_and_the_others_work() {
    let (_open, gate) = watch::channel(false);
    let (arrived_tx, _arrived) = mpsc::unbounded_channel();
    let options = ListenerOptions {
        max_connections: Some(3),
        ..ListenerOptions::default()
    };
    let (listener, addr) = Listener::bind_with(
        "127.0.0.1:0",
        router(gate, arrived_tx),
        SessionLimits::default(),
        options,
        &Captured::default().logger(),
    )
    .unwrap();
    let mut open = Vec::new();
    for n in 0..3 {
        let mut raw = Raw::connect(addr).await;
        assert_eq!(raw.ping(n).await, n);
        open.push(raw);
    }
    let mut extra = Raw::connect(addr).await;
    let _ = extra
        .send_all(&[request(9, &Ping { n: 9 }, Bytes::new())])
        .await;
    assert!(extra.next().await.is_none(), "the 4th connection is closed");
    for (n, raw) in open.iter_mut().enumerate() {
        assert_eq!(raw.ping(10 + n as u64).await, 10 + n as u64);
    }
    let stats = listener.send(GetListenerStats).await.unwrap();
    assert_eq!((stats.connections, stats.refused), (3, 1));
    assert_eq!(stats.max_connections, Some(3));
}

#[actix_rt::test]
async fn the_memory_cap_holds_with_many_peers_that_do_not_read() {
    const CAP: usize = 4 << 20;
    const SLOW: usize = 16;
    const BODY: usize = 32 << 10;
    const PER_SLOW: u64 = 256; // 8 MiB of replies asked per slow peer
    let (_open, gate) = watch::channel(false);
    let (arrived_tx, _arrived) = mpsc::unbounded_channel();
    let options = ListenerOptions {
        max_connection_memory: Some(CAP),
        ..ListenerOptions::default()
    };
    let (listener, addr) = Listener::bind_with(
        "127.0.0.1:0",
        router(gate, arrived_tx),
        SessionLimits::default(),
        options,
        &Captured::default().logger(),
    )
    .unwrap();

    // Peers that ask for 32 KiB replies and never read them, with small
    // receive buffers so the kernel does not absorb the replies for them.
    let body = Bytes::from(vec![7u8; BODY]);
    let mut writers = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..SLOW {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (r, mut w) = stream.into_split();
        sockets.push(r);
        let body = body.clone();
        writers.push(actix_rt::spawn(async move {
            let mut buf = BytesMut::new();
            for n in 0..PER_SLOW {
                FrameCodec::new()
                    .encode(&request(n, &Ping { n }, body.clone()), &mut buf)
                    .unwrap();
            }
            // Blocks for good once the node stops reading.
            let _ = w.write_all(&buf).await;
        }));
    }
    // Wait for the node to take what it will (until every slow session
    // stopped reading), without sleeping: each poll below is a round trip.
    let mut well_behaved = Raw::connect(addr).await;
    let mut stalled = false;
    for n in 0..2000 {
        assert_eq!(well_behaved.ping(n).await, n, "the node keeps serving");
        let stats = listener.send(GetSessionStats).await.unwrap();
        let slow: Vec<_> = stats.iter().filter(|s| s.frames_read > 0).collect();
        let listener_stats = listener.send(GetListenerStats).await.unwrap();
        if slow.len() > SLOW
            && listener_stats.max_buffered_bytes >= CAP
            && slow.iter().filter(|s| !s.reading).count() >= SLOW / 2
        {
            stalled = true;
            break;
        }
    }
    assert!(stalled, "the slow peers never filled the cap");
    // Still served, with a body, while the cap is reached.
    for n in 5000..5020 {
        assert_eq!(well_behaved.ping(n).await, n);
    }
    let stats = listener.send(GetListenerStats).await.unwrap();
    eprintln!("{stats:?}");
    // One admission per connection past the cap at most: a frame, the
    // read-ahead of its buffer (64 KiB) and the reply.
    let per_conn = 3 * BODY + (64 << 10) + (8 << 10);
    let bound = CAP + (SLOW + 1) * per_conn;
    assert!(
        stats.max_buffered_bytes <= bound,
        "accounted {} > {bound}",
        stats.max_buffered_bytes
    );
    let asked = SLOW * PER_SLOW as usize * BODY;
    assert!(stats.max_buffered_bytes < asked / 4, "{stats:?}");
    for w in writers {
        w.abort();
    }
    drop(sockets);
}

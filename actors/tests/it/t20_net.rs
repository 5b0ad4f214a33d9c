//! The network half of the runtime over real sockets on 127.0.0.1:0:
//! location transparency, pipelining, unknown codes, malformed input,
//! connect failures, reconnects, panicking services, oneway, origins.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actormq_actors::runtime::net::{CloseConnection, GetSessionStats, SubscribeClosed};
use actormq_actors::runtime::{
    Call, ClientHandle, ClientOptions, ClientSessions, ConnectionClosed, Lane, Listener, Reply,
    Router, Rpc, ServiceError, SessionLimits, StopListener,
};
use actormq_protocol::{Decoder, Encoder, Frame, FrameCodec, Header, ResponseCode};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use slog::{Logger, o};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

/// Echo request of the test service (a custom code in the user range).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Echo {
    pub n: u64,
    pub text: String,
    #[serde(default)]
    pub delay_ms: u64,
}

/// Reply to [`Echo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchoReply {
    pub n: u64,
    pub text: String,
    /// Calls served so far by the counter, this one included.
    pub count: u64,
    /// Connection id the call arrived on (none for a local call).
    pub conn_id: Option<u64>,
}

impl Rpc for Echo {
    const CODE: u32 = 1_000_001;
    type Response = EchoReply;
}

pub fn echo(n: u64, text: &str) -> Echo {
    Echo {
        n,
        text: text.into(),
        delay_ms: 0,
    }
}

/// A request that makes its service panic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Boom {}

impl Rpc for Boom {
    const CODE: u32 = 1_000_002;
    type Response = EchoReply;
}

/// A code nobody routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nobody {}

impl Rpc for Nobody {
    const CODE: u32 = 1_000_099;
    type Response = EchoReply;
}

/// Echoes requests and counts them. `text` "fail" → TOPIC_NOT_EXIST,
/// "stored" → FLUSH_DISK_TIMEOUT with fields; `delay_ms` delays the reply.
#[derive(Default)]
pub struct Counter {
    count: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Call<Echo>> for Counter {
    type Result = ResponseFuture<Result<Reply<EchoReply>, ServiceError>>;

    fn handle(&mut self, call: Call<Echo>, _: &mut Context<Self>) -> Self::Result {
        self.count += 1;
        let reply = EchoReply {
            n: call.req.n,
            text: call.req.text.clone(),
            count: self.count,
            conn_id: call.origin.map(|o| o.conn_id),
        };
        let delay = Duration::from_millis(call.req.delay_ms);
        let body = call.body;
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match reply.text.as_str() {
                "fail" => Err(ServiceError::new(ResponseCode::TopicNotExist, "nope")),
                "stored" => {
                    Ok(Reply::with_body(reply, body).with_code(ResponseCode::FlushDiskTimeout))
                }
                _ => Ok(Reply::with_body(reply, body)),
            }
        })
    }
}

/// Panics on every request.
pub struct Bomb;

impl Actor for Bomb {
    type Context = Context<Self>;
}

impl Handler<Call<Boom>> for Bomb {
    type Result = Result<Reply<EchoReply>, ServiceError>;
    fn handle(&mut self, _: Call<Boom>, _: &mut Context<Self>) -> Self::Result {
        panic!("test service panics on purpose");
    }
}

pub fn logger() -> Logger {
    Logger::root(slog::Discard, o!())
}

/// A Counter (and a Bomb) behind a listener.
pub struct Server {
    pub counter: Addr<Counter>,
    pub listener: Addr<Listener>,
    pub addr: SocketAddr,
}

pub fn router_for(counter: &Addr<Counter>) -> Router {
    let mut router = Router::new();
    router.route::<Echo>(counter.clone().recipient());
    router.route::<Boom>(Bomb.start().recipient());
    router
}

pub fn serve(limits: SessionLimits) -> Server {
    let counter = Counter::default().start();
    let (listener, addr) =
        Listener::bind("127.0.0.1:0", router_for(&counter), limits, &logger()).unwrap();
    Server {
        counter,
        listener,
        addr,
    }
}

/// A client of its own (its own table of sessions, so its own connection)
/// and the handle of its session to one address. Dropping it closes the
/// connection.
pub struct Client {
    _table: ClientSessions,
    session: ClientHandle,
}

impl Client {
    pub fn new(addr: SocketAddr, opts: ClientOptions, inbound: Option<Router>) -> Client {
        let table = ClientSessions::with_options(opts, inbound, &logger());
        let session = table.session_at(addr, Lane::Main);
        Client {
            _table: table,
            session,
        }
    }
}

impl std::ops::Deref for Client {
    type Target = ClientHandle;
    fn deref(&self) -> &ClientHandle {
        &self.session
    }
}

fn fast_client(addr: SocketAddr) -> Client {
    let opts = ClientOptions {
        call_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    Client::new(addr, opts, None)
}

/// The same checks, whatever the recipient is.
async fn exercise(rec: Recipient<Call<Echo>>) {
    let r = rec
        .send(Call::with_body(echo(1, "hi"), Bytes::from_static(b"body")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.fields.n, r.fields.text.as_str()), (1, "hi"));
    assert_eq!(r.body, Bytes::from_static(b"body"));
    assert_eq!(r.code, ResponseCode::Success);

    let err = rec
        .send(Call::new(echo(2, "fail")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, ServiceError::new(ResponseCode::TopicNotExist, "nope"));

    let stored = rec
        .send(Call::new(echo(3, "stored")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.code, ResponseCode::FlushDiskTimeout);
    assert_eq!(stored.fields.n, 3);

    // A large body goes by reference and comes back whole.
    let big = Bytes::from(vec![7u8; 1 << 20]);
    let r = rec
        .send(Call::with_body(echo(4, "big"), big.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.body, big);
}

#[actix_rt::test]
async fn location_transparency_local_and_remote() {
    let server = serve(SessionLimits::default());
    exercise(server.counter.clone().recipient()).await;
    let client = fast_client(server.addr);
    exercise(client.recipient()).await;
}

#[actix_rt::test]
async fn pipelining_1000_calls_on_one_connection() {
    let server = serve(SessionLimits::default());
    let client = fast_client(server.addr);
    let rec: Recipient<Call<Echo>> = client.recipient();
    // Earlier calls are slower, so replies come back out of order.
    let calls: Vec<_> = (0..1000u64)
        .map(|n| {
            let mut req = echo(n, &format!("m{n}"));
            req.delay_ms = (1000 - n) % 20;
            rec.send(Call::with_body(req, Bytes::from(n.to_be_bytes().to_vec())))
        })
        .collect();
    let replies = futures_util::future::join_all(calls).await;
    for (n, r) in replies.into_iter().enumerate() {
        let r = r.unwrap().unwrap();
        assert_eq!(r.fields.n, n as u64);
        assert_eq!(r.fields.text, format!("m{n}"));
        assert_eq!(r.body, Bytes::from((n as u64).to_be_bytes().to_vec()));
    }
    let stats = server.listener.send(GetSessionStats).await.unwrap();
    assert_eq!(stats.len(), 1, "all calls on one connection: {stats:?}");
    assert_eq!(stats[0].frames_read, 1000);
    // Replies that became ready together left in one write.
    assert!(stats[0].writes < 1000, "{:?}", stats[0]);
    eprintln!("1000 pipelined replies in {} writes", stats[0].writes);
}

#[actix_rt::test]
async fn route_fn_serves_a_code_with_a_closure() {
    let mut router = Router::new();
    router.route_fn::<Nobody, _, _>(|call: Call<Nobody>| async move {
        let conn_id = call.origin.map(|o| o.conn_id);
        Ok(Reply::with_body(
            EchoReply {
                n: 42,
                text: "fn".into(),
                count: 0,
                conn_id,
            },
            call.body,
        ))
    });
    assert!(router.contains(Nobody::CODE));
    let (_listener, addr) =
        Listener::bind("127.0.0.1:0", router, SessionLimits::default(), &logger()).unwrap();
    let client = fast_client(addr);
    let r = client
        .send(Call::with_body(Nobody {}, Bytes::from_static(b"x")))
        .await
        .unwrap();
    assert_eq!((r.fields.n, r.body.as_ref()), (42, &b"x"[..]));
    assert!(r.fields.conn_id.is_some());
    // Echo is not routed on this listener.
    let err = client.send(Call::new(echo(1, "x"))).await.unwrap_err();
    assert_eq!(err.code, ResponseCode::RequestCodeNotSupported);
}

/// A raw protocol client for malformed-input tests.
struct Raw {
    reader: FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        Raw {
            reader: FramedRead::new(r, FrameCodec::new()),
            writer: w,
        }
    }

    async fn send(&mut self, frame: &Frame) {
        let mut buf = BytesMut::new();
        FrameCodec::new().encode(frame, &mut buf).unwrap();
        self.writer.write_all(&buf).await.unwrap();
    }

    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(5), self.reader.next())
            .await
            .expect("reply or close within 5 s")
            .and_then(Result::ok)
    }
}

fn request<R: Rpc>(id: u64, req: &R) -> Frame {
    Frame {
        header: Header::request(R::CODE, id),
        fields: Bytes::from(rmp_serde::to_vec_named(req).unwrap()),
        body: Bytes::new(),
    }
}

#[actix_rt::test]
async fn unknown_code_is_answered_and_connection_keeps_working() {
    let server = serve(SessionLimits::default());
    let mut raw = Raw::connect(server.addr).await;
    raw.send(&request(5, &Nobody {})).await;
    let reply = raw.next().await.unwrap();
    assert_eq!(reply.header.request_id, 5);
    assert_eq!(
        reply.response_code().unwrap(),
        ResponseCode::RequestCodeNotSupported
    );
    // Undecodable typed fields: an error reply, the connection stays.
    let mut bad = request(6, &echo(1, "x"));
    bad.fields = Bytes::from_static(&[0x81, 0xa1, b'n', 0xa3, b'a', b'b', b'c']);
    raw.send(&bad).await;
    let reply = raw.next().await.unwrap();
    assert_eq!(reply.header.request_id, 6);
    assert_eq!(
        reply.response_code().unwrap(),
        ResponseCode::InvalidParameter
    );

    raw.send(&request(7, &echo(9, "after"))).await;
    let reply = raw.next().await.unwrap();
    assert_eq!(reply.header.request_id, 7);
    assert_eq!(reply.response_code().unwrap(), ResponseCode::Success);
    assert_eq!(reply.decode_fields::<EchoReply>().unwrap().n, 9);

    // The same through a remote recipient.
    let client = fast_client(server.addr);
    let err = client.send(Call::new(Nobody {})).await.unwrap_err();
    assert_eq!(err.code, ResponseCode::RequestCodeNotSupported);
    let ok = client.send(Call::new(echo(1, "x"))).await;
    assert!(ok.is_ok());
}

#[actix_rt::test]
async fn half_closed_peer_gets_every_reply_then_eof() {
    let server = serve(SessionLimits::default());
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut wire = BytesMut::new();
    for id in 1..=50u64 {
        let mut req = echo(id, "h");
        req.delay_ms = 50 - id; // replies complete out of order
        FrameCodec::new()
            .encode(&request(id, &req), &mut wire)
            .unwrap();
    }
    stream.write_all(&wire).await.unwrap();
    stream.shutdown().await.unwrap();
    let frames = replies_until_close(&mut stream).await;
    let mut ids: Vec<u64> = frames.iter().map(|f| f.header.request_id).collect();
    assert_ne!(
        ids,
        (1..=50).collect::<Vec<_>>(),
        "expected out-of-order replies"
    );
    ids.sort_unstable();
    assert_eq!(ids, (1..=50).collect::<Vec<_>>());
    assert!(
        frames
            .iter()
            .all(|f| f.response_code() == Ok(ResponseCode::Success))
    );
}

#[actix_rt::test]
async fn connections_past_the_limit_are_refused() {
    let counter = Counter::default().start();
    let options = actormq_actors::runtime::ListenerOptions {
        max_connections: Some(1),
        ..Default::default()
    };
    let (listener, addr) = Listener::bind_with(
        "127.0.0.1:0",
        router_for(&counter),
        SessionLimits::default(),
        options,
        &logger(),
    )
    .unwrap();
    let first = fast_client(addr);
    assert!(first.send(Call::new(echo(1, "a"))).await.is_ok());
    let mut second = TcpStream::connect(addr).await.unwrap();
    let frames = replies_until_close(&mut second).await;
    assert!(frames.is_empty());
    assert!(first.send(Call::new(echo(2, "a"))).await.is_ok());
    assert_eq!(listener.send(GetSessionStats).await.unwrap().len(), 1);
}

#[actix_rt::test]
async fn server_pushes_a_oneway_request_to_a_client_by_connection_id() {
    use actormq_actors::runtime::net::PushTo;
    let server = serve(SessionLimits::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut inbound = Router::new();
    inbound.route_fn::<Echo, _, _>(move |call: Call<Echo>| {
        let _ = tx.send((call.req.n, call.body));
        async { Err(ServiceError::system("oneway: never sent")) }
    });
    let client = Client::new(server.addr, ClientOptions::default(), Some(inbound));
    let conn_id = client
        .send(Call::new(echo(1, "who am i")))
        .await
        .unwrap()
        .fields
        .conn_id
        .unwrap();
    let push = PushTo {
        conn_id,
        call: Call::with_body(echo(77, "pushed"), Bytes::from_static(b"p")),
    };
    server.listener.send(push).await.unwrap().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(got, Some((77, Bytes::from_static(b"p"))));
    // The connection still serves calls, and a closed id is refused.
    assert!(client.send(Call::new(echo(2, "x"))).await.is_ok());
    let err = server
        .listener
        .send(PushTo {
            conn_id: u64::MAX,
            call: Call::new(echo(1, "x")),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ResponseCode::ServiceNotAvailable);
}

/// Keeps calling through its own connection until stopped; counts
/// successes and failures.
fn background_caller(
    addr: SocketAddr,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    tokio::task::JoinHandle<u64>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let client = fast_client(addr);
    let (s, c) = (stop.clone(), served.clone());
    let task = actix_rt::spawn(async move {
        let mut failures = 0;
        let mut n = 0;
        while !s.load(Ordering::Relaxed) {
            n += 1;
            match client.send(Call::new(echo(n, "bg"))).await {
                Ok(r) if r.fields.n == n => {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                _ => failures += 1,
            }
        }
        failures
    });
    (stop, served, task)
}

/// Waits until `served` moved past `from` (the good client is served).
async fn progressed(served: &AtomicU64, from: u64) {
    let start = Instant::now();
    while served.load(Ordering::Relaxed) < from + 5 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "good client stalled"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Reads until the server closes; returns the frames it sent first.
async fn replies_until_close(stream: &mut TcpStream) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut codec = FrameCodec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(&mut buf))
            .await
            .expect("server closes a malformed connection within 5 s");
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            frames.push(f);
        }
        match n {
            Ok(0) | Err(_) => return frames,
            Ok(_) => {}
        }
    }
}

/// Name, bytes to send, whether to half-close after, expected reply.
type Case = (&'static str, Vec<u8>, bool, Option<(u64, ResponseCode)>);

#[actix_rt::test]
async fn malformed_input_closes_only_that_connection() {
    let server = serve(SessionLimits::default());
    let (stop, served, task) = background_caller(server.addr);
    progressed(&served, 0).await;

    let header_garbage = {
        // Valid lengths, header that is not a MessagePack map.
        let mut v = vec![0, 0, 0, 9, 0, 0, 0, 5];
        v.extend_from_slice(&[0xc1, 0xc1, 0xc1, 0xc1, 0xc1]);
        v
    };
    let unsupported_version = {
        let mut f = request(77, &echo(1, "x"));
        f.header.version = actormq_protocol::Version { major: 9, minor: 0 };
        let mut b = BytesMut::new();
        FrameCodec::new().encode(&f, &mut b).unwrap();
        b.to_vec()
    };
    let cases: Vec<Case> = vec![
        (
            "garbage",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            false,
            Some((0, ResponseCode::MalformedFrame)),
        ),
        (
            "oversized length",
            vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            false,
            Some((0, ResponseCode::MalformedFrame)),
        ),
        (
            "short length",
            vec![0, 0, 0, 2, 0, 0],
            false,
            Some((0, ResponseCode::MalformedFrame)),
        ),
        (
            "header too long",
            vec![0, 0, 0, 6, 0, 0, 0, 9, 0x80, 0x80],
            false,
            Some((0, ResponseCode::MalformedFrame)),
        ),
        (
            "bad msgpack header",
            header_garbage,
            false,
            Some((0, ResponseCode::InvalidParameter)),
        ),
        (
            "unsupported version",
            unsupported_version,
            false,
            Some((77, ResponseCode::VersionNotSupported)),
        ),
        (
            "truncated frame then EOF",
            vec![0, 0, 0, 100, 0, 0, 0, 10, 0x80],
            true,
            None,
        ),
    ];
    for (name, bytes, half_close, expect) in cases {
        let before = served.load(Ordering::Relaxed);
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        if half_close {
            stream.shutdown().await.unwrap();
        }
        let frames = replies_until_close(&mut stream).await;
        if let Some((id, code)) = expect {
            assert_eq!(frames.len(), 1, "{name}: {frames:?}");
            assert_eq!(frames[0].header.request_id, id, "{name}");
            assert_eq!(frames[0].response_code().unwrap(), code, "{name}");
        }
        progressed(&served, before).await;
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(task.await.unwrap(), 0, "the good client never failed");
}

#[actix_rt::test]
async fn call_to_a_dead_port_fails_within_the_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = fast_client(port);
    let start = Instant::now();
    let err = client.send(Call::new(echo(1, "x"))).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(err.code, ResponseCode::SystemError);
    assert!(err.remark.contains("connect"), "{err}");
    // Calls during the backoff wait for the next attempt and fail too.
    let err = client.send(Call::new(echo(2, "x"))).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(err.code, ResponseCode::SystemError);
}

#[actix_rt::test]
async fn call_times_out_when_no_reply_comes() {
    // A server that accepts and never answers.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = mute.local_addr().unwrap();
    let _keep = actix_rt::spawn(async move {
        let (_conn, _) = mute.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let opts = ClientOptions {
        call_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let client = Client::new(addr, opts, None);
    let start = Instant::now();
    let err = client.send(Call::new(echo(1, "x"))).await.unwrap_err();
    assert!(err.remark.starts_with("timeout"), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(client.state().pending, 0);
}

#[actix_rt::test]
async fn client_reconnects_to_a_new_listener_on_the_same_port() {
    let counter = Counter::default().start();
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let collector = Collector(closed_tx).start();
    let (listener, addr) = Listener::bind(
        "127.0.0.1:0",
        router_for(&counter),
        SessionLimits::default(),
        &logger(),
    )
    .unwrap();
    listener
        .send(SubscribeClosed(collector.recipient()))
        .await
        .unwrap();
    let client = fast_client(addr);
    assert!(client.send(Call::new(echo(1, "a"))).await.is_ok());

    listener.send(StopListener).await.unwrap();
    // The server side closed the connection ...
    tokio::time::timeout(Duration::from_secs(5), closed_rx.recv())
        .await
        .unwrap();
    // ... and the client noticed.
    let start = Instant::now();
    while client.state().connected {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The old socket is closed once the listener actor is gone.
    let (_listener2, addr2) = loop {
        match Listener::bind(
            addr,
            router_for(&counter),
            SessionLimits::default(),
            &logger(),
        ) {
            Ok(bound) => break bound,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(5), "rebind: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    assert_eq!(addr2, addr);
    let r = client.send(Call::new(echo(2, "b"))).await.unwrap();
    assert_eq!(r.fields.n, 2);
}

pub struct Collector(pub mpsc::UnboundedSender<ConnectionClosed>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<ConnectionClosed> for Collector {
    type Result = ();
    fn handle(&mut self, msg: ConnectionClosed, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

#[actix_rt::test]
async fn panicking_service_fails_the_call_not_the_connection() {
    let server = serve(SessionLimits::default());
    let client = fast_client(server.addr);
    assert!(client.send(Call::new(echo(1, "x"))).await.is_ok());
    let err = client.send(Call::new(Boom {})).await.unwrap_err();
    assert_eq!(err.code, ResponseCode::SystemBusy, "{err}");
    // The dead service keeps answering SYSTEM_BUSY, others keep working,
    // on the same connection.
    let err = client.send(Call::new(Boom {})).await.unwrap_err();
    assert_eq!(err.code, ResponseCode::SystemBusy);
    let r = client.send(Call::new(echo(2, "y"))).await.unwrap();
    assert_eq!(r.fields.n, 2);
    assert_eq!(
        server.listener.send(GetSessionStats).await.unwrap().len(),
        1
    );
}

#[actix_rt::test]
async fn oneway_requests_are_served_without_reply() {
    let server = serve(SessionLimits::default());
    let client = fast_client(server.addr);
    for n in 0..10 {
        client.oneway(Echo::CODE, &echo(n, "one"), &[]).unwrap();
    }
    // Served in order on one connection, so the next call sees all ten.
    let r = client.send(Call::new(echo(99, "x"))).await.unwrap();
    assert_eq!(r.fields.count, 11);
    let stats = server.listener.send(GetSessionStats).await.unwrap();
    assert_eq!(stats[0].frames_read, 11);
}

#[actix_rt::test]
async fn origin_and_connection_closed_name_the_same_connection() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let collector = Collector(tx).start();
    let counter = Counter::default().start();
    let options = actormq_actors::runtime::ListenerOptions {
        arbiters: vec![Arbiter::new().handle(), Arbiter::new().handle()],
        subscribers: vec![collector.recipient()],
        max_connections: None,
        max_connection_memory: None,
    };
    let (listener, addr) = Listener::bind_with(
        "127.0.0.1:0",
        router_for(&counter),
        SessionLimits::default(),
        options,
        &logger(),
    )
    .unwrap();
    // Two clients land on two session arbiters; each sees its own origin.
    let a = fast_client(addr);
    let b = fast_client(addr);
    let ra = a.send(Call::new(echo(1, "a"))).await.unwrap();
    let rb = b.send(Call::new(echo(2, "b"))).await.unwrap();
    let (ca, cb) = (ra.fields.conn_id.unwrap(), rb.fields.conn_id.unwrap());
    assert_ne!(ca, cb);
    // Local calls carry no origin.
    let local = counter
        .send(Call::new(echo(3, "l")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(local.fields.conn_id, None);

    // Close a's connection from the server side: the event names it, and
    // b's connection is untouched.
    assert!(listener.send(CloseConnection(ca)).await.unwrap());
    let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.conn_id, ca);
    assert!(b.send(Call::new(echo(4, "b"))).await.is_ok());
    // Dropping a client (its table of sessions) closes its connection.
    drop(b);
    let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.conn_id, cb);
    // The event goes out at the peer's EOF, before the session has stopped
    // (replies may still drain); the listener forgets the connection when
    // the session ends, a moment later.
    let start = std::time::Instant::now();
    while listener.send(CloseConnection(cb)).await.unwrap() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the listener still knows a connection its client dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn closed_is_announced_at_eof_while_a_held_reply_still_drains() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let collector = Collector(tx).start();
    let counter = Counter::default().start();
    let options = actormq_actors::runtime::ListenerOptions {
        subscribers: vec![collector.recipient()],
        ..Default::default()
    };
    let (_listener, addr) = Listener::bind_with(
        "127.0.0.1:0",
        router_for(&counter),
        SessionLimits::default(),
        options,
        &logger(),
    )
    .unwrap();
    // A request answered only after 3 s (like a held pull), then EOF.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = echo(1, "held");
    req.delay_ms = 3_000;
    let mut wire = BytesMut::new();
    FrameCodec::new()
        .encode(&request(1, &req), &mut wire)
        .unwrap();
    stream.write_all(&wire).await.unwrap();
    stream.shutdown().await.unwrap();
    let started = std::time::Instant::now();
    // The close is announced long before the held reply is ready...
    let closed = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("ConnectionClosed before the held reply")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    // ...and exactly once, though the reply still reaches the half-closed peer.
    let frames = replies_until_close(&mut stream).await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].header.request_id, 1);
    assert!(rx.try_recv().is_err(), "announced twice");
    let _ = closed;
}

/// Throughput of pipelined calls through a ClientSession → Listener → Counter
/// (not a pass/fail check; run with
/// `cargo test --release -p actormq-actors --test it -- --ignored --nocapture net_throughput`).
#[actix_rt::test]
#[ignore]
async fn net_throughput() {
    use futures_util::stream::FuturesUnordered;
    let options = actormq_actors::runtime::ListenerOptions {
        arbiters: vec![Arbiter::new().handle()],
        subscribers: vec![],
        max_connections: None,
        max_connection_memory: None,
    };
    let counter = Counter::default().start();
    let (_listener, addr) = Listener::bind_with(
        "127.0.0.1:0",
        router_for(&counter),
        SessionLimits::default(),
        options,
        &logger(),
    )
    .unwrap();
    for (body_len, total, window) in [
        (0usize, 200_000u64, 1usize),
        (0, 200_000, 64),
        (0, 200_000, 1000),
        (1024, 200_000, 1000),
        (64 * 1024, 20_000, 64),
    ] {
        let client = Client::new(addr, ClientOptions::default(), None);
        let body = Bytes::from(vec![1u8; body_len]);
        let total = if window == 1 { total / 10 } else { total };
        let start = Instant::now();
        let mut inflight = FuturesUnordered::new();
        let mut sent = 0u64;
        let mut done = 0u64;
        while done < total {
            while sent < total && inflight.len() < window {
                inflight.push(client.send(Call::with_body(echo(sent, "t"), body.clone())));
                sent += 1;
            }
            inflight.next().await.unwrap().unwrap();
            done += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let stats = _listener.send(GetSessionStats).await.unwrap();
        let last = stats.iter().max_by_key(|s| s.conn_id).unwrap();
        eprintln!(
            "  server: {} requests, {} writes ({:.1} replies per write)",
            last.frames_read,
            last.writes,
            last.frames_read as f64 / last.writes.max(1) as f64
        );
        eprintln!(
            "body {body_len:>6} B, window {window:>4}: {total} calls in {secs:.2} s = {:.0} calls/s, {:.1} µs/call, {:.1} MB/s each way",
            total as f64 / secs,
            secs * 1e6 / total as f64,
            (total as f64 * body_len as f64) / secs / 1e6
        );
    }
}

#[actix_rt::test]
async fn supervised_listener_rebinds_the_same_port_after_a_panic() {
    use actormq_actors::runtime::guard::InjectPanic;
    use actormq_actors::runtime::{
        Escalation, GetChildStatus, ListenerOptions, RestartPolicy, SpawnChild, StopChild,
        StopSupervisor, Supervisor,
    };
    let policy = RestartPolicy {
        backoff_initial: Duration::from_millis(1),
        ..RestartPolicy::default()
    };
    let sup = Supervisor::new("node", &logger(), policy, Escalation::StopSystem).start();
    let counter = Counter::default().start();
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (spec, addr) = Listener::supervised(
        "listener",
        socket,
        router_for(&counter),
        SessionLimits::default(),
        ListenerOptions::default(),
        &logger(),
    )
    .unwrap();
    let child = sup.send(SpawnChild(spec)).await.unwrap();
    let client = fast_client(addr);
    let r = client.send(Call::new(echo(1, "a"))).await.unwrap();
    assert_eq!(r.fields.n, 1);

    let first = child.addr().unwrap();
    let mut incarnations = child.subscribe();
    assert!(
        first
            .send(InjectPanic("listener broke (expected in this test)".into()))
            .await
            .is_err()
    );
    actix_rt::time::timeout(
        Duration::from_secs(10),
        incarnations.wait_for(|a| matches!(a, Some(new) if *new != first)),
    )
    .await
    .expect("listener not restarted")
    .unwrap();

    // The same port accepts again: a fresh connection is served.
    let mut raw = Raw::connect(addr).await;
    raw.send(&request(7, &echo(7, "again"))).await;
    let reply = raw.next().await.expect("served after the restart");
    assert_eq!(reply.header.request_id, 7);
    assert_eq!(reply.response_code().unwrap(), ResponseCode::Success);
    let status = sup.send(GetChildStatus).await.unwrap();
    assert_eq!((status[0].restarts, status[0].running), (1, true));

    // A listener stopped on request stays stopped.
    assert_eq!(sup.send(StopChild("listener".into())).await.unwrap(), 1);
    assert!(child.addr().is_none());
    sup.send(StopSupervisor).await.unwrap();
}

#[actix_rt::test]
async fn a_panicking_route_closure_fails_the_request_not_the_connection() {
    let mut router = Router::new();
    router.route_fn::<Nobody, _, _>(|_: Call<Nobody>| -> std::future::Ready<_> {
        panic!("closure panics on purpose (expected in this test)")
    });
    router.route_fn::<Boom, _, _>(|_: Call<Boom>| async move {
        if true {
            panic!("future panics on purpose (expected in this test)");
        }
        Err(ServiceError::system("unreachable"))
    });
    let counter = Counter::default().start();
    router.route::<Echo>(counter.recipient());
    let (_listener, addr) =
        Listener::bind("127.0.0.1:0", router, SessionLimits::default(), &logger()).unwrap();
    let mut raw = Raw::connect(addr).await;
    raw.send(&request(1, &Nobody {})).await;
    raw.send(&request(2, &Boom {})).await;
    raw.send(&request(3, &echo(3, "after"))).await;
    let mut replies: Vec<Frame> = Vec::new();
    for _ in 0..3 {
        replies.push(raw.next().await.expect("a reply"));
    }
    replies.sort_by_key(|f| f.header.request_id);
    for r in &replies[..2] {
        assert_eq!(r.response_code().unwrap(), ResponseCode::SystemError);
    }
    assert_eq!(replies[2].response_code().unwrap(), ResponseCode::Success);
}

//! The client session (the one client transport) under supervision, over
//! real sockets on 127.0.0.1:0: a panicking incarnation fails what was
//! pending on it at once (never a hang), the handle works again with the
//! next incarnation, and a session that keeps dying closes its table with
//! the reason instead of stopping the user's `System`.

use std::time::{Duration, Instant};

use actormq_actors::runtime::guard::InjectPanic;
use actormq_actors::runtime::{
    Call, ClientOptions, ClientSessions, Lane, RestartPolicy, SessionLimits,
};
use actormq_protocol::ResponseCode;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::t20_net::{echo, logger, serve};

/// Panics the session's current incarnation and waits until the next one
/// runs.
async fn panic_session(handle: &actormq_actors::runtime::ClientHandle, why: &str) {
    let child = handle.child();
    let first = child.addr().expect("the session runs");
    let mut incarnations = child.subscribe();
    assert!(first.send(InjectPanic(why.into())).await.is_err());
    tokio::time::timeout(
        Duration::from_secs(10),
        incarnations.wait_for(|a| matches!(a, Some(new) if *new != first)),
    )
    .await
    .expect("restarted in time")
    .unwrap();
}

#[actix_rt::test]
async fn a_panic_fails_1200_pending_calls_at_once_and_the_handle_serves_again() {
    let server = serve(SessionLimits::default());
    let opts = ClientOptions {
        call_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    let table = ClientSessions::with_options(opts, None, &logger());
    let session = table.session_at(server.addr, Lane::Main);
    assert_eq!(
        session
            .send(Call::new(echo(0, "up")))
            .await
            .unwrap()
            .fields
            .n,
        0
    );

    // 1 200 calls the server holds for 20 s each are pending on the
    // connection when the session's actor panics.
    let mut calls: FuturesUnordered<_> = (1..=1200u64)
        .map(|n| {
            let mut req = echo(n, "held");
            req.delay_ms = 20_000;
            let session = session.clone();
            async move { session.send(Call::new(req)).await }
        })
        .collect();
    // Wait until all of them are written and pending (an event: the
    // session's own count), not for a while.
    let began = Instant::now();
    while session.state().pending < 1200 || session.state().buffered_bytes > 0 {
        tokio::select! {
            _ = calls.next() => panic!("a held call finished early"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{:?}",
            session.state()
        );
    }
    let panicked_at = Instant::now();
    let restarted = panic_session(&session, "session broke (expected in this test)");
    let (_, failed) = tokio::join!(restarted, async {
        let mut failed = 0;
        while let Some(res) = calls.next().await {
            let err = res.expect_err("no reply can come from a dead connection");
            assert_eq!(err.code, ResponseCode::SystemError, "{err}");
            failed += 1;
        }
        failed
    });
    assert_eq!(failed, 1200);
    // Failed at once: long before the server would have answered.
    assert!(
        panicked_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        panicked_at.elapsed()
    );

    // The same handle works with the new incarnation.
    let r = session.send(Call::new(echo(7, "again"))).await.unwrap();
    assert_eq!(r.fields.n, 7);
    assert_eq!(session.state().incarnations, 2);
}

#[actix_rt::test]
async fn a_session_that_keeps_dying_closes_its_table_not_the_system() {
    let server = serve(SessionLimits::default());
    let table = ClientSessions::new(&logger());
    let session = table.session_at(server.addr, Lane::Main);
    assert!(session.send(Call::new(echo(1, "x"))).await.is_ok());
    // The default budget is 5 restarts in 60 s: the sixth failure escalates.
    let budget = RestartPolicy::default().max_restarts;
    for i in 0..budget {
        panic_session(&session, &format!("panic {i} (expected in this test)")).await;
    }
    let last = session.child().addr().unwrap();
    assert!(
        last.send(InjectPanic("one too many (expected)".into()))
            .await
            .is_err()
    );
    // The session is closed with the reason: calls fail at once.
    let began = Instant::now();
    loop {
        match session.send(Call::new(echo(2, "x"))).await {
            Err(err) if err.remark.contains("gave up") => break,
            // Before the escalation is handled the call may still go out.
            _ => assert!(began.elapsed() < Duration::from_secs(10), "never gave up"),
        }
        tokio::task::yield_now().await;
    }
    let began = Instant::now();
    let err = session.send(Call::new(echo(3, "x"))).await.unwrap_err();
    assert!(began.elapsed() < Duration::from_millis(500));
    assert!(err.remark.contains("gave up"), "{err}");
    // The System still runs, and the table starts afresh on next use.
    let fresh = table.session_at(server.addr, Lane::Main);
    assert_eq!(
        fresh.send(Call::new(echo(4, "x"))).await.unwrap().fields.n,
        4
    );
}

#[actix_rt::test]
async fn lanes_are_separate_connections_to_one_address() {
    use actormq_actors::runtime::net::GetSessionStats;
    let server = serve(SessionLimits::default());
    let table = ClientSessions::new(&logger());
    let main = table.session_at(server.addr, Lane::Main);
    let poll = table.session_at(server.addr, Lane::LongPoll);
    // A call the server holds on the long-poll lane does not delay the main lane.
    let mut held = echo(1, "held");
    held.delay_ms = 2_000;
    let held = poll.send(Call::new(held));
    let quick = async {
        let began = Instant::now();
        main.send(Call::new(echo(2, "quick"))).await.unwrap();
        began.elapsed()
    };
    let (held, quick) = tokio::join!(held, quick);
    assert!(held.is_ok());
    assert!(quick < Duration::from_millis(1_500), "{quick:?}");
    assert_eq!(
        server.listener.send(GetSessionStats).await.unwrap().len(),
        2
    );
    // The same key gives the same session.
    assert_eq!(
        table.session_at(server.addr, Lane::Main).addr(),
        main.addr()
    );
    assert_eq!(table.handles().len(), 2);
}

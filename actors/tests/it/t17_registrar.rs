//! The Registrar keeps a broker registered with every name server, through
//! recipients that may be local or remote; a dead name server does not stop
//! registration with the others.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actormq_actors::broker::TopicTable;
use actormq_actors::broker::registrar::{
    BrokerIdentity, NamesrvLink, RegisterNow, Registrar, RegistrarConfig, UnregisterAll,
};
use actormq_actors::broker::topic_manager::TopicsChanged;
use actormq_actors::namesrv::{Registry, RegistryConfig};
use actormq_actors::runtime::Call;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{
    GetBrokerClusterInfoRequest, GetRouteInfoByTopicRequest, Perm, TopicConfig,
};
use slog::{Logger, o};

fn log() -> Logger {
    Logger::root(slog::Discard, o!())
}

fn link(name: &str, registry: &Addr<Registry>) -> NamesrvLink {
    NamesrvLink {
        name: name.into(),
        register: registry.clone().recipient(),
        unregister: registry.clone().recipient(),
    }
}

fn identity() -> BrokerIdentity {
    BrokerIdentity {
        cluster: "DefaultCluster".into(),
        broker_name: "broker-a".into(),
        broker_id: 0,
        broker_addr: "127.0.0.1:10911".into(),
        ha_server_addr: String::new(),
    }
}

#[actix_rt::test]
async fn registers_with_every_name_server_and_follows_topic_changes() {
    let ns1 = Registry::new(RegistryConfig::default(), &log()).start();
    let ns2 = Registry::new(RegistryConfig::default(), &log()).start();
    let registrar = Registrar::new(
        identity(),
        vec![link("ns1", &ns1), link("ns2", &ns2)],
        Arc::new(TopicTable::default()),
        RegistrarConfig::default(),
        &log(),
    )
    .start();
    assert_eq!(registrar.send(RegisterNow).await.unwrap(), 2);
    for ns in [&ns1, &ns2] {
        let info = ns
            .send(Call::new(GetBrokerClusterInfoRequest {}))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            info.fields.cluster_addr_table["DefaultCluster"],
            vec!["broker-a"]
        );
    }

    let mut table = TopicTable::default();
    table
        .upsert(TopicConfig {
            topic_name: "orders".into(),
            read_queue_nums: 4,
            write_queue_nums: 4,
            perm: Perm::READ_WRITE,
            ..TopicConfig::default()
        })
        .unwrap();
    registrar
        .send(TopicsChanged {
            table: Arc::new(table),
        })
        .await
        .unwrap();
    // Registration is fire-and-forget on a change; RegisterNow queues behind
    // it and answers after the name servers did.
    assert_eq!(registrar.send(RegisterNow).await.unwrap(), 2);
    for ns in [&ns1, &ns2] {
        let route = ns.send(Call::new(GetRouteInfoByTopicRequest {
            topic: "orders".into(),
        }));
        assert_eq!(
            route.await.unwrap().unwrap().fields.queue_datas[0].write_queue_nums,
            4
        );
    }

    // One name server dies: the other still gets registrations.
    ns1.send(StopRegistry).await.ok();
    assert_eq!(registrar.send(RegisterNow).await.unwrap(), 1);

    registrar.send(UnregisterAll).await.unwrap();
    let route = ns2.send(Call::new(GetRouteInfoByTopicRequest {
        topic: "orders".into(),
    }));
    assert_eq!(
        route.await.unwrap().unwrap_err().code,
        ResponseCode::TopicNotExist
    );
}

/// Stops a registry (test helper: a name server going away).
#[derive(Message)]
#[rtype(result = "()")]
struct StopRegistry;

impl Handler<StopRegistry> for Registry {
    type Result = ();
    fn handle(&mut self, _: StopRegistry, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[actix_rt::test]
async fn a_silent_name_server_costs_only_its_timeout() {
    /// A name server that never answers (its handler never completes).
    struct BlackHole;
    impl Actor for BlackHole {
        type Context = Context<Self>;
    }
    impl Handler<Call<actormq_protocol::request::RegisterBrokerRequest>> for BlackHole {
        type Result = ResponseFuture<
            Result<
                actormq_actors::runtime::Reply<actormq_protocol::request::RegisterBrokerResponse>,
                actormq_actors::runtime::ServiceError,
            >,
        >;
        fn handle(
            &mut self,
            _: Call<actormq_protocol::request::RegisterBrokerRequest>,
            _: &mut Context<Self>,
        ) -> Self::Result {
            Box::pin(std::future::pending())
        }
    }
    let hole = BlackHole.start();
    let ns = Registry::new(RegistryConfig::default(), &log()).start();
    let config = RegistrarConfig {
        call_timeout: Duration::from_millis(50),
        ..RegistrarConfig::default()
    };
    let registrar = Registrar::new(
        identity(),
        vec![
            NamesrvLink {
                name: "hole".into(),
                register: hole.recipient(),
                unregister: ns.clone().recipient(),
            },
            link("ns", &ns),
        ],
        Arc::new(TopicTable::default()),
        config,
        &log(),
    )
    .start();
    assert_eq!(registrar.send(RegisterNow).await.unwrap(), 1);
}

#[actix_rt::test]
async fn a_restarted_name_server_proxy_is_used_again() {
    use actormq_actors::runtime::guard::InjectPanic;
    use actormq_actors::runtime::{
        ClientHandle, ClientOptions, Escalation, Listener, RestartPolicy, Router, SessionLimits,
        Supervisor,
    };
    use actormq_protocol::request::{RegisterBrokerRequest, UnregisterBrokerRequest};
    let registry = Registry::new(RegistryConfig::default(), &log()).start();
    let mut router = Router::new();
    router.route::<RegisterBrokerRequest>(registry.clone().recipient());
    router.route::<UnregisterBrokerRequest>(registry.clone().recipient());
    let (_listener, addr) =
        Listener::bind("127.0.0.1:0", router, SessionLimits::default(), &log()).unwrap();
    let policy = RestartPolicy {
        backoff_initial: Duration::from_millis(1),
        ..RestartPolicy::default()
    };
    let sup = Supervisor::new("node", &log(), policy, Escalation::StopSystem).start();
    let session = ClientHandle::new(addr, ClientOptions::default(), None, &log());
    session.spawn_under(&sup, "client-session");
    let proxy = session.child().clone();
    let registrar = Registrar::new(
        identity(),
        vec![NamesrvLink::through("remote", &proxy)],
        Arc::new(TopicTable::default()),
        RegistrarConfig::default(),
        &log(),
    )
    .start();
    assert_eq!(registrar.send(RegisterNow).await.unwrap(), 1);

    let first = proxy.addr().unwrap();
    let mut incarnations = proxy.subscribe();
    assert!(
        first
            .send(InjectPanic("proxy broke (expected in this test)".into()))
            .await
            .is_err()
    );
    actix_rt::time::timeout(
        Duration::from_secs(10),
        incarnations.wait_for(|a| matches!(a, Some(new) if *new != first)),
    )
    .await
    .expect("proxy not restarted")
    .unwrap();
    assert_eq!(
        registrar.send(RegisterNow).await.unwrap(),
        1,
        "registered through the new incarnation"
    );
}

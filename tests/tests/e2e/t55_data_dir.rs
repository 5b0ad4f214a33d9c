//! Two nodes never share a data dir: a second `actormq-node` (or
//! `actormq-broker`) on a dir a running node holds exits non-zero at once
//! with a one-line error naming the directory and the holder's pid, before
//! it binds any port, and the first keeps serving.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use actormq_protocol::Bytes;
use actormq_protocol::request::SendMessageResponse;
use actormq_tests::node::{Bin, bin_dir};

use crate::common::*;

/// How long the second node may take to give up.
const REFUSE_LIMIT: Duration = Duration::from_secs(30);

/// Runs `bin` with `args` to its exit (killed after [`REFUSE_LIMIT`]);
/// returns its status, stdout and stderr.
async fn run_to_exit(bin: Bin, args: Vec<String>) -> (ExitStatus, String, String) {
    let exe = bin_dir().expect("node binaries").join(bin.file_name());
    let mut cmd = Command::new(exe);
    // Flags only, as the harness does: nothing from the runner's ACTORMQ_*.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ACTORMQ_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the second node");
    let pid = child.id();
    let mut stderr = child.stderr.take().expect("stderr pipe");
    let mut stdout = child.stdout.take().expect("stdout pipe");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut out, mut err) = (String::new(), String::new());
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let _ = tx.send((child.wait(), out, err));
    });
    match tokio::task::spawn_blocking(move || rx.recv_timeout(REFUSE_LIMIT))
        .await
        .expect("waiter")
    {
        Ok((status, out, err)) => (status.expect("wait for the second node"), out, err),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("a second {} ({args:?}) did not exit", bin.file_name());
        }
    }
}

/// A listening socket on a free port of 127.0.0.1, held by the test.
fn hold_port() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = l.local_addr().expect("its address");
    (l, addr)
}

#[tokio::test]
async fn t55_second_node_on_a_held_data_dir_exits_naming_dir_and_pid() {
    bounded(async {
        let mut first = combined(NO_ARGS);
        let holder = first.pid().expect("first node runs");
        let dir = first.data_dir().to_path_buf();
        create_topic(first.broker(), "t55", 1).await;

        // The second node is given listen addresses the test itself holds
        // (listening). Had it bound anything before taking the data-dir
        // lock, it would fail with "cannot listen on …" (address in use)
        // instead of the data-dir error: that error proves it stopped
        // before binding a port. Both a combined node and a broker-only
        // one (whose name server is the first node's).
        let (_ns_port, ns_addr) = hold_port();
        let (_br_port, br_addr) = hold_port();
        let dir_arg = dir.display().to_string();
        let runs = [
            (
                Bin::Node,
                vec![
                    "--namesrv-listen".to_string(),
                    ns_addr.to_string(),
                    "--broker-listen".to_string(),
                    br_addr.to_string(),
                ],
            ),
            (
                Bin::Broker,
                vec![
                    "--namesrv".to_string(),
                    first.namesrv().to_string(),
                    "--broker-listen".to_string(),
                    br_addr.to_string(),
                ],
            ),
        ];
        for (bin, listen) in runs {
            let mut args = vec!["--data-dir".to_string(), dir_arg.clone()];
            args.extend(listen);
            let (status, out, err) = run_to_exit(bin, args).await;
            let name = bin.file_name();
            assert!(!status.success(), "second {name} exited {status}");
            assert!(
                !out.contains("actormq ready"),
                "the second {name} must not get ready: {out}"
            );
            assert!(
                !err.contains("cannot listen"),
                "the second {name} tried to bind before locking the data dir:\n{err}"
            );
            let line = err
                .lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or_else(|| panic!("no one-line error from {name} on stderr:\n{err}"));
            assert!(line.contains("in use"), "{line}");
            assert!(line.contains(&dir_arg), "{line}");
            assert!(line.contains(&format!("pid {holder}")), "{line}");
        }

        // The first node is untouched and keeps serving.
        assert!(first.is_alive(), "the holder must keep running");
        let mut c = connect(first.broker()).await;
        let r: SendMessageResponse = c
            .call(&send_request("t55", 0, "a", "k"), Bytes::from_static(b"x"))
            .await
            .expect("SEND_MESSAGE")
            .ok()
            .expect("the holder still stores messages");
        assert_eq!(r.queue_offset, 0);
        assert_eq!(pull_all_at_least(&mut c, "t55", 0, 1).await.len(), 1);
        first.terminate().expect("clean stop");
    })
    .await;
}

async fn topic_names(broker: std::net::SocketAddr) -> Vec<String> {
    let mut c = connect(broker).await;
    c.call(
        &actormq_protocol::request::GetAllTopicConfigRequest {},
        Bytes::new(),
    )
    .await
    .expect("GET_ALL_TOPIC_CONFIG")
    .ok()
    .expect("GET_ALL_TOPIC_CONFIG succeeds")
    .topic_config_table
    .into_keys()
    .filter(|t| t.starts_with("t55-"))
    .collect()
}

/// A garbage topics file: the node starts with the last good copy
/// (`.bak`); with no backup it exits with one line naming the file.
#[tokio::test]
async fn t55_garbage_topics_file_uses_the_backup_or_exits_naming_it() {
    bounded(async {
        let mut node = combined(NO_ARGS);
        create_topic(node.broker(), "t55-a", 1).await;
        create_topic(node.broker(), "t55-b", 1).await;
        node.terminate().expect("clean stop");
        let topics = node.data_dir().join("config/topics.msgpack");
        std::fs::write(&topics, b"\xc1 not msgpack").unwrap();

        node.restart().expect("starts from the backup");
        // The backup is the state before the last write.
        assert_eq!(topic_names(node.broker()).await, vec!["t55-a".to_string()]);
        // The bad file is logged (the log drain writes asynchronously).
        node.wait_log("topics.msgpack", 200, Duration::from_secs(10))
            .await;
        node.terminate().expect("clean stop");

        std::fs::write(&topics, b"\xc1 not msgpack").unwrap();
        std::fs::remove_file(node.data_dir().join("config/topics.msgpack.bak")).unwrap();
        let err = node
            .restart()
            .expect_err("no backup: the node must not start");
        let text = err.to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("no one-line error:\n{text}"));
        assert!(line.contains("topics.msgpack"), "{line}");
        assert!(!node.is_alive());
    })
    .await;
}

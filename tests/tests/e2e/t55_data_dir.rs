//! Two nodes never share a data dir: a second `actormq-node` on a dir a
//! running node holds exits non-zero at once with a one-line error naming
//! the directory and the holder's pid, and the first keeps serving.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use actormq_protocol::Bytes;
use actormq_protocol::request::SendMessageResponse;
use actormq_tests::node::{Bin, bin_dir};

use crate::common::*;

/// How long the second node may take to give up.
const REFUSE_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn t55_second_node_on_a_held_data_dir_exits_naming_dir_and_pid() {
    bounded(async {
        let mut first = combined(NO_ARGS);
        let holder = first.pid().expect("first node runs");
        let dir = first.data_dir().to_path_buf();
        create_topic(first.broker(), "t55", 1).await;

        let exe = bin_dir()
            .expect("node binaries")
            .join(Bin::Node.file_name());
        let mut child = Command::new(exe)
            .arg("--data-dir")
            .arg(&dir)
            .args(["--namesrv-listen", "127.0.0.1:0"])
            .args(["--broker-listen", "127.0.0.1:0"])
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
        let (status, out, err) =
            match tokio::task::spawn_blocking(move || rx.recv_timeout(REFUSE_LIMIT))
                .await
                .expect("waiter")
            {
                Ok(got) => got,
                Err(_) => {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    panic!("a second node on {} did not exit", dir.display());
                }
            };
        let status = status.expect("wait for the second node");
        assert!(!status.success(), "second node exited {status}");
        assert!(
            !out.contains("actormq ready"),
            "the second node must not get ready: {out}"
        );
        let line = err
            .lines()
            .find(|l| l.contains("in use"))
            .unwrap_or_else(|| panic!("no data-dir error on stderr:\n{err}"));
        assert!(line.contains(&dir.display().to_string()), "{line}");
        assert!(line.contains(&format!("pid {holder}")), "{line}");

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
        let log = node.stderr_tail(200);
        assert!(
            log.contains("topics.msgpack"),
            "the bad file is logged:\n{log}"
        );
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

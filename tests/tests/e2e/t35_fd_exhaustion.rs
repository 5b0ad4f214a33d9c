//! Out of file descriptors: a real node whose open-files limit is lowered
//! (`prlimit`, no unsafe code) is flooded with connections until `accept`
//! fails with EMFILE. While that lasts it must not spin (CPU time from
//! `/proc/PID/stat`) nor flood its log (at most a handful of throttled
//! "accept failed" lines), and once the extra connections are closed a
//! new client is served.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use actormq_protocol::Bytes;
use actormq_protocol::request::GetAllTopicConfigRequest;
use actormq_tests::eventually;

use crate::common::*;

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`; 100 on
/// Linux).
const TICKS_PER_SEC: u64 = 100;
/// Headroom over the descriptors the node has open at start.
const HEADROOM: usize = 16;
/// Connections opened: well past the headroom.
const FLOOD: usize = 3 * HEADROOM;

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn accept_failed_lines(text: &str) -> usize {
    text.lines().filter(|l| l.contains("accept failed")).count()
}

#[tokio::test]
async fn out_of_descriptors_the_node_backs_off_and_recovers() {
    bounded(async {
        let node = combined(NO_ARGS);
        let pid = node.pid().unwrap();
        let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        let limit = open + HEADROOM;
        let status = Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={limit}:{limit}"))
            .status()
            .expect("prlimit runs");
        assert!(status.success(), "prlimit failed: {status}");

        // A client connected before the flood, to check the node serves
        // through it.
        let mut before = connect(node.broker()).await;
        before
            .call(&GetAllTopicConfigRequest {}, Bytes::new())
            .await
            .expect("served before the flood")
            .ok()
            .unwrap();

        let extra: Vec<TcpStream> = (0..FLOOD)
            .map(|_| TcpStream::connect(node.broker()).expect("connect (kernel backlog)"))
            .collect();
        let log = node.stderr_path().to_path_buf();
        eventually(Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move {
                if accept_failed_lines(&text) > 0 {
                    Ok(())
                } else {
                    Err("no \"accept failed\" line yet".to_owned())
                }
            }
        })
        .await
        .expect("the node ran out of descriptors");

        // Hold the node out of descriptors for 2 s and measure it.
        let (lines0, cpu0) = (
            accept_failed_lines(&std::fs::read_to_string(&log).unwrap()),
            cpu_ticks(pid),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu = cpu_ticks(pid) - cpu0;
        let lines = accept_failed_lines(&std::fs::read_to_string(&log).unwrap()) - lines0;
        eprintln!("out of descriptors for 2 s: {cpu} CPU ticks, {lines} \"accept failed\" lines");
        assert!(
            cpu < TICKS_PER_SEC / 4,
            "{cpu} ticks of CPU in 2 s out of descriptors: the accept loop spins"
        );
        assert!(
            lines <= 4,
            "{lines} \"accept failed\" lines in 2 s: not throttled\n{}",
            node.stderr_tail(20)
        );

        // The connection made before is still served.
        before
            .call(&GetAllTopicConfigRequest {}, Bytes::new())
            .await
            .expect("served while out of descriptors")
            .ok()
            .unwrap();

        // Descriptors back: a new client is served.
        drop(extra);
        let mut after = connect(node.broker()).await;
        after.set_timeout(Duration::from_secs(20));
        after
            .call(&GetAllTopicConfigRequest {}, Bytes::new())
            .await
            .expect("a new client is served once descriptors are free")
            .ok()
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn the_connection_cap_comes_from_the_node_config() {
    use actormq_tests::node::{Bin, NodeProcess};
    bounded(async {
        let node = NodeProcess::start_with_env(
            Bin::Node,
            NO_ARGS,
            &[("ACTORMQ_BROKER__MAX_CONNECTIONS", "2")],
        )
        .expect("start a combined node");
        let mut served = Vec::new();
        for _ in 0..2 {
            let mut c = connect(node.broker()).await;
            c.call(&GetAllTopicConfigRequest {}, Bytes::new())
                .await
                .expect("served under the cap")
                .ok()
                .unwrap();
            served.push(c);
        }
        let mut third = connect(node.broker()).await;
        third.set_timeout(Duration::from_secs(10));
        assert!(
            third
                .call(&GetAllTopicConfigRequest {}, Bytes::new())
                .await
                .is_err(),
            "the third connection is closed"
        );
        for c in &mut served {
            c.call(&GetAllTopicConfigRequest {}, Bytes::new())
                .await
                .expect("still served")
                .ok()
                .unwrap();
        }
        // The log drain is asynchronous: the line comes soon after.
        let log = node.stderr_path().to_path_buf();
        eventually(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move {
                match text.contains("too many connections") {
                    true => Ok(()),
                    false => Err(format!("no refusal logged:\n{text}")),
                }
            }
        })
        .await
        .unwrap();
    })
    .await;
}

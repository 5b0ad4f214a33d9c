//! A node whose data dir fills up (a small tmpfs) keeps running: sends are
//! answered SERVICE_NOT_AVAILABLE "disk full", and the node still serves
//! queries and pulls. Skipped, with the reason printed, where a tmpfs
//! cannot be mounted (not root, or mounting not permitted).

use std::process::Command;

use actormq_protocol::request::{PullMessageResponse, SendMessageResponse};
use actormq_protocol::{Bytes, ResponseCode};
use actormq_tests::node::{Bin, NodeProcess};

use crate::common::*;

/// A tmpfs mounted for one test; lazily unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn t56_full_data_dir_answers_disk_full_and_the_node_keeps_serving() {
    // The default index file (about 400 MiB) plus a consume-queue file
    // (6 MB) and a few 1 MiB segments.
    let fs = match Tmpfs::mount("420m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipped: needs a tmpfs mount ({why})");
            return;
        }
    };
    bounded(async {
        let data = fs.0.path().join("data");
        let data_arg = data.display().to_string();
        let mut node = NodeProcess::start_with_env(
            Bin::Node,
            &["--data-dir", data_arg.as_str()],
            &[("ACTORMQ_BROKER__COMMIT_LOG_SEGMENT_SIZE", "1048576")],
        )
        .expect("node on the tmpfs");
        create_topic(node.broker(), "t56", 1).await;
        create_topic(node.broker(), "t56-new", 1).await;
        let mut c = connect(node.broker()).await;
        let body = Bytes::from(vec![9u8; 60 * 1024]);
        let mut acked: Vec<u64> = Vec::new();
        let err = loop {
            let reply = c
                .call(
                    &send_request("t56", 0, "full", &format!("k{}", acked.len())),
                    body.clone(),
                )
                .await
                .expect("SEND_MESSAGE answered");
            if reply.code != ResponseCode::Success {
                break reply;
            }
            let r: SendMessageResponse = reply.ok().unwrap();
            acked.push(r.queue_offset);
            assert!(acked.len() < 10_000, "the tmpfs never filled");
        };
        assert_eq!(
            err.code,
            ResponseCode::ServiceNotAvailable,
            "{:?}",
            err.remark
        );
        assert!(
            err.remark.as_deref().unwrap_or("").contains("disk full"),
            "{:?}",
            err.remark
        );
        eprintln!(
            "t56: {} sends acknowledged before the disk filled",
            acked.len()
        );
        assert!(node.is_alive(), "the node must survive a full disk");
        // Still serving: the newest acknowledged message (in the active
        // segment, which retention never deletes) can be pulled.
        let last = *acked.last().expect("some sends succeeded first");
        wait_max_offset(&mut c, "t56", 0, last + 1).await;
        let reply = c
            .call(&pull_request("t56", 0, last, 1, 0), Bytes::new())
            .await
            .expect("PULL_MESSAGE");
        let (fields, got): (PullMessageResponse, Bytes) = reply
            .expect_code(ResponseCode::Success)
            .expect("pull after the disk filled");
        assert_eq!(fields.next_begin_offset, last + 1);
        assert!(!got.is_empty());
        // The node logs through an async drain: wait for the line.
        node.wait_log("disk full", 400, CONVERGE).await;

        // Not a page left. A small message still fits the active segment,
        // and its queue's first consume-queue file cannot be made: before
        // files were reserved, the dispatcher's first write into that
        // sparse file killed the node with SIGBUS.
        let filler = fs.0.path().join("filler");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).unwrap();
            while f.write_all(&[0u8; 4096]).is_ok() {}
        }
        let r: SendMessageResponse = c
            .call(
                &send_request("t56-new", 0, "x", "x"),
                Bytes::from_static(b"x"),
            )
            .await
            .expect("SEND_MESSAGE answered")
            .ok()
            .expect("a small message fits the active segment");
        assert_eq!(r.queue_offset, 0);
        // The dispatcher hit the full disk.
        node.wait_log("dispatch stopped: disk full", 400, CONVERGE)
            .await;
        assert!(node.is_alive(), "the node must survive a full disk");
        // Space again: the dispatcher catches up by itself.
        std::fs::remove_file(&filler).unwrap();
        let got = pull_all_at_least(&mut c, "t56-new", 0, 1).await;
        assert_eq!(got.len(), 1);
        assert!(node.is_alive());
        node.kill().unwrap();
    })
    .await;
}

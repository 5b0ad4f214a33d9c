//! Global order through a one-queue ordered topic (`actormq admin topic
//! create --order`): the route carries the order config, and messages
//! sent one after another come out of `actormq consume --orderly` in the
//! order they were sent.

use crate::common::{NO_ARGS, actormq, bounded, combined, json_lines};

#[actix_rt::test]
async fn t73_an_ordered_topic_keeps_global_order() {
    bounded(async {
        let node = combined(NO_ARGS);
        let ns = node.namesrv();
        let topic = "t73-ledger";
        let created = json_lines(&actormq(
            ns,
            &["admin", "topic", "create", "-t", topic, "--order", "--json"],
        ));
        assert_eq!(created.len(), 1, "{created:?}");
        assert_eq!(created[0]["queues"], 1);
        assert_eq!(created[0]["order"], true);
        let start = std::time::Instant::now();
        loop {
            let route = json_lines(&actormq(
                ns,
                &["admin", "topic", "route", "-t", topic, "--json"],
            ));
            if route.first().is_some_and(|r| r["order"] == true) {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "{route:?}"
            );
            actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let lines: String = (0..30).map(|i| format!("entry-{i:02}\n")).collect();
        let mut child = std::process::Command::new(
            actormq_tests::node::bin_dir()
                .expect("binaries built")
                .join("actormq"),
        )
        .args([
            "-n",
            &ns.to_string(),
            "produce",
            "-t",
            topic,
            "--stdin",
            "--json",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("actormq produce");
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(lines.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let sent = json_lines(&out);
        assert_eq!(sent.len(), 30);
        assert!(sent.iter().all(|l| l["queue_id"] == 0), "{sent:?}");
        let got = json_lines(&actormq(
            ns,
            &[
                "consume",
                "-t",
                topic,
                "-g",
                "t73-g",
                "--from",
                "first",
                "--orderly",
                "--count",
                "30",
                "--json",
            ],
        ));
        let bodies: Vec<String> = got
            .iter()
            .map(|l| l["body"].as_str().unwrap().to_owned())
            .collect();
        let want: Vec<String> = (0..30).map(|i| format!("entry-{i:02}")).collect();
        assert_eq!(bodies, want);
    })
    .await;
}

//! The dashboard (`/` on the node's HTTP endpoint) rendered by a real
//! headless Chromium (Debian's `chromium`; the test installs it with
//! apt-get when it is missing and it may, and `ACTORMQ_TESTS_NO_CHROMIUM=1`
//! skips it on machines that have neither). The test produces and
//! consumes through the CLI, then reads what the rendered pages show (the
//! DOM after the page's scripts ran, `--dump-dom`) and saves screenshots
//! under the target dir (`target/tmp/artifacts/`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{NO_ARGS, actormq, apt_provided, bounded, combined, http_get, json_lines};

/// Chromium's binary, installed when missing (once per test binary).
fn chromium() -> Option<PathBuf> {
    if std::env::var_os("ACTORMQ_TESTS_NO_CHROMIUM").is_some() {
        eprintln!("skipped: ACTORMQ_TESTS_NO_CHROMIUM is set");
        return None;
    }
    Some(apt_provided("/usr/bin/chromium", "chromium"))
}

/// Runs headless Chromium on `url` with `extra` arguments (a fresh
/// profile, no background networking: the machine's network is closed)
/// and returns its stdout.
fn run_chromium(bin: &Path, profile: &Path, url: &str, extra: &[&str]) -> String {
    let out = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Timers run on virtual time; the page's fetches pause it, so
            // the DOM is dumped once its data arrived and was rendered.
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "chromium {url}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM of `url` after its scripts ran, waiting (up to 30 s) until the
/// page says it rendered `view` (`<body data-view=…>`) and `ready(dom)`.
async fn rendered(
    bin: &Path,
    profile: &Path,
    url: &str,
    view: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let (bin2, profile2, url2) = (bin.to_path_buf(), profile.to_path_buf(), url.to_string());
        let dom = actix_rt::task::spawn_blocking(move || {
            run_chromium(&bin2, &profile2, &url2, &["--dump-dom"])
        })
        .await
        .expect("chromium task");
        if dom.contains(&format!("data-view=\"{view}\"")) && ready(&dom) {
            return dom;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{url} never showed what was expected; last DOM:\n{dom}"
        );
    }
}

/// Saves a screenshot of `url` as `target/tmp/artifacts/<name>.png` and
/// checks that it is a PNG.
async fn screenshot(bin: &Path, profile: &Path, url: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    let file = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    let (bin2, profile2, url2, shot) = (
        bin.to_path_buf(),
        profile.to_path_buf(),
        url.to_string(),
        format!("--screenshot={}", file.display()),
    );
    actix_rt::task::spawn_blocking(move || {
        run_chromium(&bin2, &profile2, &url2, &["--window-size=1280,900", &shot])
    })
    .await
    .expect("chromium task");
    let png = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        file.display()
    );
    eprintln!("screenshot: {}", file.display());
    file
}

/// The value of `attr="…"` on the element whose `key` attribute is `value`.
fn attr_of(dom: &str, key: &str, value: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("{key}=\"{value}\""))?;
    let tag_start = dom[..at].rfind('<')?;
    let rest = &dom[tag_start..];
    // the element and its children, up to the end of its row
    let row = &rest[..rest.find("</tr>").unwrap_or(rest.len())];
    let pat = format!("{attr}=\"");
    let v = &row[row.find(&pat)? + pat.len()..];
    Some(v[..v.find('"')?].to_string())
}

#[actix_rt::test]
async fn t96_dashboard_shows_topics_groups_lag_and_messages() {
    let Some(bin) = chromium() else { return };
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, http) = (node.namesrv(), node.http());
        let profile = tempfile::tempdir().expect("profile dir");
        let topic = "t96-dash";
        let group = "t96-dash-group";

        json_lines(&actormq(
            ns,
            &[
                "admin", "topic", "create", "-t", topic, "--queues", "2", "--json",
            ],
        ));
        let sent = json_lines(&actormq(
            ns,
            &[
                "produce", "-t", topic, "--count", "40", "--keys", "dash-key", "--json",
            ],
        ));
        assert_eq!(sent.len(), 40);
        let first_id = sent[0]["msg_id"].as_str().expect("msg_id").to_string();
        let consumed = json_lines(&actormq(
            ns,
            &[
                "consume",
                "-t",
                topic,
                "-g",
                group,
                "--from",
                "first",
                "--count",
                "40",
                "--idle-exit-ms",
                "3000",
                "--json",
            ],
        ));
        assert!(!consumed.is_empty(), "the consumer read nothing");
        // 15 more after the consumer left: a lag of exactly 15.
        json_lines(&actormq(
            ns,
            &["produce", "-t", topic, "--count", "15", "--json"],
        ));
        let progress = json_lines(&actormq(
            ns,
            &["admin", "group", "progress", "-g", group, "--json"],
        ));
        let total_lag = progress.last().expect("total line")["total_lag"]
            .as_u64()
            .expect("total_lag");
        assert_eq!(total_lag, 15, "CLI progress: {progress:?}");

        // The page itself is served by the node (embedded, no CDN).
        let (code, index) = http_get(http, "/");
        assert_eq!(code, 200);
        assert!(index.contains("app.js"), "index: {index}");
        assert!(
            !index.contains("https://"),
            "the page loads nothing from outside"
        );

        let base = format!("http://{http}/");

        // Topics: the topic with its 55 messages.
        let dom = rendered(
            &bin,
            profile.path(),
            &format!("{base}#/topics"),
            "topics",
            |d| d.contains(&format!("data-topic=\"{topic}\"")),
        )
        .await;
        assert_eq!(
            attr_of(&dom, "data-topic", topic, "data-messages").as_deref(),
            Some("55")
        );

        // The group: lag 15 in all, per queue summing to it, matching the CLI.
        let dom = rendered(
            &bin,
            profile.path(),
            &format!("{base}#/groups/{group}"),
            &format!("groups:{group}"),
            |_| true,
        )
        .await;
        assert!(dom.contains("data-total-lag=\"15\""), "group page: {dom}");
        for line in &progress[..progress.len() - 1] {
            let key = format!(
                "{}/{}/{}",
                line["topic"].as_str().unwrap(),
                line["broker"].as_str().unwrap(),
                line["queue_id"]
            );
            assert_eq!(
                attr_of(&dom, "data-progress", &key, "data-lag"),
                Some(line["lag"].to_string()),
                "queue {key} on the page vs the CLI"
            );
        }

        // Overview: one broker, the group, and charts of TPS and lag once
        // the node has sampled the traffic.
        let dom = rendered(
            &bin,
            profile.path(),
            &format!("{base}#/overview"),
            "overview",
            |d| d.contains("data-series=\"in\"") && d.contains("data-series=\"lag\""),
        )
        .await;
        assert!(dom.contains("data-chart=\"tps\"") && dom.contains("data-chart=\"lag\""));
        assert!(dom.contains("data-broker=\"broker-a\""), "overview: {dom}");

        // Message lookup by id.
        let dom = rendered(
            &bin,
            profile.path(),
            &format!("{base}#/messages?id={first_id}"),
            "messages",
            |d| d.contains("data-results="),
        )
        .await;
        assert!(
            dom.contains(&format!("data-msg-id=\"{first_id}\"")),
            "lookup: {dom}"
        );

        // Dead letters: a group with no retries whose consumer fails the
        // one message it gets; the page lists it under the group's DLQ.
        let dlq_group = "t96-dlq-group";
        json_lines(&actormq(
            ns,
            &[
                "admin",
                "group",
                "create",
                "-g",
                dlq_group,
                "--retry-max",
                "0",
                "--json",
            ],
        ));
        json_lines(&actormq(
            ns,
            &["produce", "-t", "t96-poison", "--body", "poison", "--json"],
        ));
        json_lines(&actormq(
            ns,
            &[
                "consume",
                "-t",
                "t96-poison",
                "-g",
                dlq_group,
                "--simple",
                "--invisible-ms",
                "1000",
                "--fail-every",
                "1",
                "--count",
                "1",
                "--json",
            ],
        ));
        let dom = rendered(
            &bin,
            profile.path(),
            &format!("{base}#/dlq/{dlq_group}"),
            &format!("dlq:{dlq_group}"),
            |d| d.contains("data-dlq-count=\"1\""),
        )
        .await;
        assert!(dom.contains(">poison<"), "dlq page: {dom}");

        screenshot(
            &bin,
            profile.path(),
            &format!("{base}#/overview"),
            "dashboard-overview",
        )
        .await;
        screenshot(
            &bin,
            profile.path(),
            &format!("{base}#/groups/{group}"),
            "dashboard-group",
        )
        .await;
    })
    .await;
}

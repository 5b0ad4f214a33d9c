//! A child-process node harness: runs `actormq-node`, `actormq-namesrv` or
//! `actormq-broker` as a real process on `127.0.0.1:0` with a temp data
//! dir, waits for its `actormq ready …` line, and kills it on drop. A
//! broker prints that line only after its first registration round with
//! its name servers was answered, so when [`NodeProcess::start`] returns
//! the name servers it could reach list it and route its topics.
//!
//! # Finding (and building) the binaries
//!
//! `env!("CARGO_BIN_EXE_…")` only exists for binaries of the test's own
//! package, so the harness finds them next to the test executable:
//! `target/<profile>/deps/<test>` → `target/<profile>/actormq-node`. Cargo
//! builds the binaries of `actormq-cluster` for `cargo test --workspace`
//! but not for `cargo test -p actormq-tests`, so the first start in a test
//! process runs `cargo build -p actormq-cluster --bins` with the same
//! profile and target dir (a no-op when they are fresh; cargo's own lock
//! serialises concurrent test binaries). If that build fails (say another
//! crate is mid-edit) and binaries exist, they are used with a warning.
//! `ACTORMQ_BIN_DIR=DIR` skips the build and takes the binaries from `DIR`.
//! `ACTORMQ_TESTS_LOG_LEVEL=debug` passes `--log-level debug` to every
//! node (unless a test sets its own).
//!
//! # Logs
//!
//! The child's stderr (its logs) goes to a file beside the data dir; it
//! survives restarts, and its tail is printed when a test panics while the
//! node is alive, or on demand by [`NodeProcess::stderr_tail`].

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a node may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd node may take to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which node binary to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    /// `actormq-node` (role by `--role`, combined by default).
    Node,
    /// `actormq-namesrv`.
    Namesrv,
    /// `actormq-broker` (needs `--namesrv`).
    Broker,
}

impl Bin {
    /// The executable's file name.
    pub fn file_name(self) -> &'static str {
        match self {
            Bin::Node => "actormq-node",
            Bin::Namesrv => "actormq-namesrv",
            Bin::Broker => "actormq-broker",
        }
    }

    fn listens_namesrv(self, args: &[OsString]) -> bool {
        match self {
            Bin::Namesrv => true,
            Bin::Broker => false,
            Bin::Node => !has_role(args, "broker"),
        }
    }

    fn listens_broker(self, args: &[OsString]) -> bool {
        match self {
            Bin::Namesrv => false,
            Bin::Broker => true,
            Bin::Node => !has_role(args, "namesrv"),
        }
    }
}

fn has_role(args: &[OsString], role: &str) -> bool {
    args.windows(2).any(|w| w[0] == "--role" && w[1] == role)
        || args.iter().any(|a| *a == *format!("--role={role}"))
}

fn has_flag(args: &[OsString], flag: &str) -> bool {
    args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    })
}

fn other(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

/// `target/<profile>` of the running test executable.
fn profile_dir() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| other("test executable has no parent dir"))?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The directory holding the node binaries, built once per process.
pub fn bin_dir() -> std::io::Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| locate_bins().map_err(|e| e.to_string()))
        .clone()
        .map_err(other)
}

fn locate_bins() -> std::io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ACTORMQ_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let dir = profile_dir()?;
    let all_exist = || {
        [Bin::Node, Bin::Namesrv, Bin::Broker]
            .iter()
            .all(|b| dir.join(b.file_name()).is_file())
    };
    let profile = dir
        .file_name()
        .and_then(|p| p.to_str())
        .ok_or_else(|| other("bad profile dir"))?
        .to_owned();
    let target = dir
        .parent()
        .ok_or_else(|| other("profile dir has no parent"))?
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "actormq-cluster", "--bins"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    cmd.env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    let status = cmd.status();
    match status {
        Ok(s) if s.success() => Ok(dir),
        _ if all_exist() => {
            eprintln!(
                "actormq-tests: `cargo build -p actormq-cluster --bins` failed ({status:?}); \
                 using the existing binaries in {}",
                dir.display()
            );
            Ok(dir)
        }
        _ => Err(other(format!(
            "cannot build the node binaries into {} ({status:?}); \
             run `cargo build -p actormq-cluster --bins` or set ACTORMQ_BIN_DIR",
            dir.display()
        ))),
    }
}

/// A node running as a child process. Killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct NodeProcess {
    bin: Bin,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    child: Option<Child>,
    /// Holds the data dir and the log file; removed on drop.
    tmp: tempfile::TempDir,
    data_dir: PathBuf,
    stderr_path: PathBuf,
    namesrv: Option<SocketAddr>,
    broker: Option<SocketAddr>,
    ha: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
    starts: u32,
}

/// The config variable of the commit-log segment size.
const SEGMENT_SIZE_VAR: &str = "ACTORMQ_BROKER__COMMIT_LOG_SEGMENT_SIZE";

impl NodeProcess {
    /// Starts `bin` with `args`, adding `--data-dir` (a fresh temp dir) and
    /// `127.0.0.1:0` listen addresses unless `args` set them, and waits for
    /// the ready line.
    pub fn start<S: Into<OsString> + Clone>(bin: Bin, args: &[S]) -> std::io::Result<NodeProcess> {
        NodeProcess::start_with_env(bin, args, &[] as &[(&str, &str)])
    }

    /// Like [`NodeProcess::start`], with environment variables for the
    /// child (e.g. `ACTORMQ_BROKER__COMMIT_LOG_SEGMENT_SIZE`), kept for
    /// restarts. The child never inherits `ACTORMQ_*` from the test
    /// process.
    pub fn start_with_env<S, K, V>(
        bin: Bin,
        args: &[S],
        env: &[(K, V)],
    ) -> std::io::Result<NodeProcess>
    where
        S: Into<OsString> + Clone,
        K: Into<OsString> + Clone,
        V: Into<OsString> + Clone,
    {
        let tmp = tempfile::Builder::new().prefix("actormq-e2e-").tempdir()?;
        let data_dir = tmp.path().join("data");
        let stderr_path = tmp.path().join("stderr.log");
        let mut node = NodeProcess {
            bin,
            args: args.iter().cloned().map(Into::into).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone().into()))
                .collect(),
            child: None,
            tmp,
            data_dir,
            stderr_path,
            namesrv: None,
            broker: None,
            ha: None,
            grpc: None,
            http: None,
            starts: 0,
        };
        node.spawn()?;
        Ok(node)
    }

    /// A combined node (`actormq-node`) with `args`.
    pub fn combined<S: Into<OsString> + Clone>(args: &[S]) -> std::io::Result<NodeProcess> {
        NodeProcess::start(Bin::Node, args)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let exe = bin_dir()?.join(self.bin.file_name());
        let mut args = self.args.clone();
        if !has_flag(&args, "--data-dir") {
            args.push("--data-dir".into());
            args.push(self.data_dir.clone().into());
        }
        if let Some(level) = std::env::var_os("ACTORMQ_TESTS_LOG_LEVEL")
            && !has_flag(&args, "--log-level")
        {
            args.push("--log-level".into());
            args.push(level);
        }
        if self.bin.listens_namesrv(&args) && !has_flag(&args, "--namesrv-listen") {
            args.push("--namesrv-listen".into());
            args.push("127.0.0.1:0".into());
        }
        if self.bin.listens_broker(&args) && !has_flag(&args, "--broker-listen") {
            args.push("--broker-listen".into());
            args.push("127.0.0.1:0".into());
        }
        // Test nodes never share RocketMQ's 8081: an ephemeral gRPC port
        // unless the test chose one (the node's own default is 8081 when
        // the broker port is fixed).
        if self.bin.listens_broker(&args) && !has_flag(&args, "--grpc-listen") {
            args.push("--grpc-listen".into());
            args.push("127.0.0.1:0".into());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)?;
        self.starts += 1;
        {
            use std::io::Write;
            let mut l = &log;
            let _ = writeln!(
                l,
                "==== actormq-tests: start #{} of {} {:?} env {:?}",
                self.starts,
                exe.display(),
                args,
                self.env
            );
        }
        let mut cmd = Command::new(&exe);
        // The child's config comes from its flags only, not from whatever
        // ACTORMQ_* the test runner happens to have.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ACTORMQ_") {
                cmd.env_remove(key);
            }
        }
        // Test nodes use 64 MiB segments unless the test chose a size: a
        // fresh node pre-faults its first segment before it is ready, and
        // 1 GiB per node would dominate a test run's time and memory.
        if !self.env.iter().any(|(k, _)| k == SEGMENT_SIZE_VAR) {
            cmd.env(SEGMENT_SIZE_VAR, "67108864");
        }
        let mut child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| other(format!("cannot run {}: {e}", exe.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| other("no stdout pipe"))?;
        self.child = Some(child);

        // A thread reads stdout for the whole life of the child (so it never
        // blocks on a full pipe) and hands over the first line.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                let _ = self.kill();
                return Err(other(format!(
                    "{} printed no ready line ({e}; exit status {status:?}); stderr:\n{}",
                    self.bin.file_name(),
                    self.stderr_tail(40)
                )));
            }
        };
        let (namesrv, broker) = parse_ready_line(&line)
            .map_err(|e| other(format!("{e}: {line:?}; stderr:\n{}", self.stderr_tail(40))))?;
        if self.bin.listens_namesrv(&args) != namesrv.is_some()
            || self.bin.listens_broker(&args) != broker.is_some()
        {
            return Err(other(format!(
                "ready line does not match the role: {line:?}"
            )));
        }
        self.namesrv = namesrv;
        self.broker = broker;
        self.ha = ready_listener(&line, "ha");
        self.grpc = ready_listener(&line, "grpc");
        self.http = ready_listener(&line, "http");
        Ok(())
    }

    /// The bound name-server address (namesrv and combined roles).
    pub fn namesrv(&self) -> SocketAddr {
        self.namesrv.expect("this node has no name server")
    }

    /// The bound broker address (broker and combined roles).
    pub fn broker(&self) -> SocketAddr {
        self.broker.expect("this node has no broker")
    }

    /// The HA address of a master (its ready line's `ha=`).
    pub fn ha(&self) -> SocketAddr {
        self.ha.expect("this node has no HA listener")
    }

    /// The RocketMQ 5 gRPC address (its ready line's `grpc=`).
    pub fn grpc(&self) -> SocketAddr {
        self.grpc.expect("this node has no gRPC endpoint")
    }

    /// The HTTP endpoint: metrics, admin API (its ready line's `http=`).
    pub fn http(&self) -> SocketAddr {
        self.http.expect("this node has no HTTP endpoint")
    }

    /// The data dir (kept across restarts).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The child's pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the child is running (has not exited).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGKILL and reap. A no-op when not running.
    pub fn kill(&mut self) -> std::io::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// Sends `signal` (a `kill -s` name such as `TERM`) to the child.
    pub fn signal(&self, signal: &str) -> std::io::Result<()> {
        let pid = self.pid().ok_or_else(|| other("node is not running"))?;
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(other(format!("kill -s {signal} {pid}: {status}")))
        }
    }

    /// SIGTERM, then waits (bounded) for the exit; returns its status
    /// without judging it.
    pub fn terminate_status(&mut self) -> std::io::Result<ExitStatus> {
        self.signal("TERM")?;
        let mut child = self
            .child
            .take()
            .ok_or_else(|| other("node is not running"))?;
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(other(format!(
                    "no exit {EXIT_TIMEOUT:?} after SIGTERM; killed. stderr:\n{}",
                    self.stderr_tail(40)
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Graceful stop: SIGTERM, wait, and require exit code 0.
    pub fn terminate(&mut self) -> std::io::Result<()> {
        let status = self.terminate_status()?;
        if status.success() {
            Ok(())
        } else {
            Err(other(format!(
                "exit after SIGTERM was {status}, expected 0; stderr:\n{}",
                self.stderr_tail(40)
            )))
        }
    }

    /// Starts the same binary with the same args and data dir again (after
    /// [`NodeProcess::kill`] or [`NodeProcess::terminate`]; kills a running
    /// child first). Listen ports are fresh ephemeral ones unless the args
    /// fixed them: read them again from [`NodeProcess::broker`] /
    /// [`NodeProcess::namesrv`].
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// The last `lines` lines of the child's stderr (all its starts).
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.stderr_path, lines)
    }

    /// Waits until the last `lines` lines of the node's log contain
    /// `needle` (the node's log drain writes asynchronously, so a line may
    /// land a moment after the event it reports) and returns them; panics
    /// with the tail after `within`.
    pub async fn wait_log(&self, needle: &str, lines: usize, within: Duration) -> String {
        crate::eventually(within, || {
            let log = self.stderr_tail(lines);
            async move {
                if log.contains(needle) {
                    Ok(log)
                } else {
                    Err(format!("no {needle:?} in the node's log:\n{log}"))
                }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Path of the captured stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// The temp dir holding the data dir and the log.
    pub fn temp_root(&self) -> &Path {
        self.tmp.path()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} (data {}) stderr tail:\n{}",
                self.bin.file_name(),
                self.data_dir.display(),
                self.stderr_tail(30)
            );
        }
        let _ = self.kill();
    }
}

/// The address of listener `key` (`ha`, `grpc`, `http`) in a ready line.
pub fn ready_listener(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// Parses `actormq ready namesrv=HOST:PORT broker=HOST:PORT` (either part
/// may be absent; later listeners such as `ha=` are skipped).
pub fn parse_ready_line(line: &str) -> Result<(Option<SocketAddr>, Option<SocketAddr>), String> {
    let rest = line
        .trim_end()
        .strip_prefix("actormq ready")
        .ok_or_else(|| "not a ready line".to_string())?;
    let (mut namesrv, mut broker) = (None, None);
    for part in rest.split_whitespace() {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("bad part {part:?}"))?;
        let addr: SocketAddr = value
            .parse()
            .map_err(|e| format!("bad address {value:?}: {e}"))?;
        match key {
            "namesrv" => namesrv = Some(addr),
            "broker" => broker = Some(addr),
            // Listeners appended after `broker=` (spec/cli.md).
            "ha" | "grpc" | "http" => {}
            _ => return Err(format!("unknown key {key:?}")),
        }
    }
    if namesrv.is_none() && broker.is_none() {
        return Err("ready line names no listener".into());
    }
    Ok((namesrv, broker))
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::from("(no stderr captured)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut s = String::new();
    let mut raw = Vec::new();
    if f.read_to_end(&mut raw).is_ok() {
        s = String::from_utf8_lossy(&raw).into_owned();
    }
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let (n, b) =
            parse_ready_line("actormq ready namesrv=127.0.0.1:9876 broker=127.0.0.1:10911\n")
                .unwrap();
        assert_eq!(n, Some("127.0.0.1:9876".parse().unwrap()));
        assert_eq!(b, Some("127.0.0.1:10911".parse().unwrap()));
        let (n, b) = parse_ready_line("actormq ready broker=127.0.0.1:1").unwrap();
        assert_eq!((n, b.map(|a| a.port())), (None, Some(1)));
        assert!(parse_ready_line("actormq ready").is_err());
        assert!(parse_ready_line("hello").is_err());
        assert!(parse_ready_line("actormq ready broker=nope").is_err());
        let line = "actormq ready broker=127.0.0.1:1 ha=127.0.0.1:2";
        assert!(parse_ready_line(line).is_ok());
        assert_eq!(
            ready_listener(line, "ha"),
            Some("127.0.0.1:2".parse().unwrap())
        );
        assert_eq!(ready_listener(line, "grpc"), None);
    }

    #[test]
    fn role_detection() {
        let a: Vec<OsString> = vec!["--role".into(), "broker".into()];
        assert!(!Bin::Node.listens_namesrv(&a));
        assert!(Bin::Node.listens_broker(&a));
        assert!(Bin::Node.listens_namesrv(&[]));
        assert!(has_flag(&["--data-dir=/x".into()], "--data-dir"));
        assert!(!has_flag(&["--data-dirx".into()], "--data-dir"));
    }
}

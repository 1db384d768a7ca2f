//! The real binary as a process: exit codes and messages for bad
//! configuration, `--help`, SIGTERM drain, and what its logs must never say.

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{text, RedisOptions, RedisServer, Resp};
use elasticache_auth_proxy::config::Args;
use rustls_pki_types::pem::PemObject;

const BIN: &str = env!("CARGO_BIN_EXE_elasticache-auth-proxy");
/// The variable the spawned proxies read their upstream password from.
const PASSWORD_VAR: &str = common::PASSWORD_ENV;
const PASSWORD: &str = "app-secret-pw";
const READY_LINE: &str = "elasticache-auth-proxy ready";
const POLL: Duration = Duration::from_millis(10);
const DEADLINE: Duration = Duration::from_secs(10);
/// Attempts when another process takes our free port before the proxy binds.
const PORT_ATTEMPTS: usize = 5;
const EX_USAGE: i32 = 64;

/// The binary with a clean environment, so no stray
/// `ELASTICACHE_AUTH_PROXY_*` variable of the host changes the outcome.
fn command(args: &[&str], env: &[(&str, &str)], stderr: &File) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // A file, not a pipe: a chatty child never blocks on a full pipe.
        .stderr(stderr.try_clone().expect("dup stderr file"));
    cmd
}

/// A spawned proxy; SIGKILLed and reaped on drop if still running.
struct Running {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Starts the binary listening on a free port with `args`; returns once
    /// it logged that it is ready (needs log level info or lower).
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::tempdir().expect("tempdir");
            let stderr = dir.path().join("stderr.log");
            let file = File::create(&stderr).expect("stderr file");
            let addr = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
            let listen = addr.to_string();
            // Port 0 for the admin endpoints: tests run side by side.
            let all: Vec<&str> = ["--listen", listen.as_str(), "--admin-listen", "127.0.0.1:0"]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            let child = command(&all, env, &file).spawn().expect("spawn proxy");
            let mut running = Running {
                child,
                addr,
                stderr,
                _dir: dir,
            };
            let deadline = Instant::now() + DEADLINE;
            loop {
                if running.log().contains(READY_LINE) {
                    return running;
                }
                if let Some(status) = running.child.try_wait().expect("try_wait") {
                    let log = running.log();
                    if log.contains("cannot listen") {
                        break; // lost the port race: retry
                    }
                    panic!("proxy exited ({status}) before ready:\n{log}");
                }
                assert!(
                    Instant::now() < deadline,
                    "proxy not ready:\n{}",
                    running.log()
                );
                std::thread::sleep(POLL);
            }
        }
        panic!("no free port after {PORT_ATTEMPTS} attempts");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Polls for exit for up to `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then the exit status; the log is complete afterwards.
    async fn stop(&mut self) -> ExitStatus {
        self.sigterm();
        let status = self.wait_exit(DEADLINE).await;
        status.unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", self.log()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion (it must exit within 10 s).
fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let log = tempfile::NamedTempFile::new().expect("tempfile");
    let mut child = command(args, env, log.as_file())
        .spawn()
        .expect("spawn proxy");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} still running after {DEADLINE:?}");
        }
        std::thread::sleep(POLL);
    };
    (status, std::fs::read_to_string(log.path()).unwrap())
}

/// Flags that point a proxy at `redis` as `app`, password from `PASSWORD_VAR`.
fn upstream_args(redis: &RedisServer) -> Vec<String> {
    [
        "--upstream",
        &format!("localhost:{}", redis.tls_port),
        "--tls-ca-file",
        &redis.certs.ca.display().to_string(),
        "--password-user",
        "app",
        "--password-env",
        PASSWORD_VAR,
    ]
    .map(String::from)
    .to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ---- bad configuration ----

/// Exits 64 with one configuration error on stderr that contains `names`.
fn assert_usage_error(args: &[&str], env: &[(&str, &str)], names: &[&str]) -> String {
    let (status, stderr) = run(args, env);
    assert_eq!(status.code(), Some(EX_USAGE), "{args:?}: {stderr}");
    for name in names {
        assert!(stderr.contains(name), "{args:?}: {name:?} not in {stderr}");
    }
    stderr
}

#[test]
fn missing_upstream_exits_64_naming_it() {
    let env = [(PASSWORD_VAR, PASSWORD)];
    let args = ["--password-env", PASSWORD_VAR];
    let stderr = assert_usage_error(&args, &env, &["--upstream", "configuration error"]);
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

#[test]
fn unset_password_variable_exits_64_naming_it() {
    let args = [
        "--upstream",
        "localhost:6379",
        "--password-env",
        "UNSET_VAR",
    ];
    assert_usage_error(&args, &[], &["--password-env", "UNSET_VAR"]);
}

#[test]
fn bad_size_in_the_environment_exits_64_naming_it() {
    let env = [
        (PASSWORD_VAR, PASSWORD),
        ("ELASTICACHE_AUTH_PROXY_MAX_FRAME_SIZE", "12XB"),
    ];
    let args = [
        "--upstream",
        "localhost:6379",
        "--password-env",
        PASSWORD_VAR,
    ];
    let names = [
        "--max-frame-size",
        "ELASTICACHE_AUTH_PROXY_MAX_FRAME_SIZE",
        "12XB",
    ];
    assert_usage_error(&args, &env, &names);
}

#[test]
fn bad_size_flag_exits_64_naming_it() {
    let env = [(PASSWORD_VAR, PASSWORD)];
    let args = [
        "--upstream",
        "localhost:6379",
        "--password-env",
        PASSWORD_VAR,
        "--max-frame-size",
        "12XB",
    ];
    assert_usage_error(&args, &env, &["--max-frame-size", "12XB"]);
}

#[test]
fn unknown_key_in_the_config_file_exits_64_naming_it_but_not_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    // A misspelt key holding a password: named in the error, value withheld.
    std::fs::write(
        &file,
        "upstream = \"localhost:6379\"\npasword = \"hunter2-in-the-wrong-key\"\n",
    )
    .unwrap();
    let env = [(PASSWORD_VAR, PASSWORD)];
    let args = [
        "--config",
        file.to_str().unwrap(),
        "--password-env",
        PASSWORD_VAR,
    ];
    let stderr = assert_usage_error(&args, &env, &["pasword", "line 2"]);
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// Password-mode flags against an address nobody needs to reach: the TLS
/// files are checked before anything connects.
fn tls_file_args(extra: &[&str]) -> Vec<String> {
    [
        "--upstream",
        "localhost:1",
        "--password-env",
        PASSWORD_VAR,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect()
}

#[test]
fn ca_file_that_is_not_pem_exits_64_naming_the_setting_and_file() {
    let certs = common::Certs::mint();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("ca-notes.txt");
    std::fs::write(&text, "ask the platform team for the CA bundle\n").unwrap();
    // The same CA in DER form, as some consoles download it.
    let der = dir.path().join("ca.der");
    let ca = rustls_pki_types::CertificateDer::from_pem_file(&certs.ca).unwrap();
    std::fs::write(&der, ca.as_ref()).unwrap();
    let env = [(PASSWORD_VAR, PASSWORD)];
    for file in [&text, &der] {
        let path = file.to_str().unwrap();
        let args = tls_file_args(&["--tls-ca-file", path]);
        let stderr = assert_usage_error(&strs(&args), &env, &["--tls-ca-file", path, "PEM"]);
        assert!(stderr.contains("configuration error"), "{stderr}");
    }
    // DER is recognised, and the fix is spelt out.
    let args = tls_file_args(&["--tls-ca-file", der.to_str().unwrap()]);
    assert_usage_error(&strs(&args), &env, &["DER", "openssl x509 -inform der"]);
}

#[test]
fn unusable_client_certificate_or_key_exits_64_naming_the_setting() {
    let certs = common::Certs::mint();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key\n").unwrap();
    let (cert, key) = (
        certs.client_cert.to_str().unwrap(),
        certs.client_key.to_str().unwrap(),
    );
    let junk = junk.to_str().unwrap();
    let other_key = certs.server_key.to_str().unwrap();
    let env = [(PASSWORD_VAR, PASSWORD)];
    let cases: &[(&str, &str, &[&str])] = &[
        (cert, junk, &["--tls-client-key", junk, "private key"]),
        (junk, key, &["--tls-client-cert", junk, "certificate"]),
        // A key from another pair: both files named.
        (
            cert,
            other_key,
            &["--tls-client-key", other_key, "--tls-client-cert", cert],
        ),
    ];
    for (c, k, names) in cases {
        let args = tls_file_args(&["--tls-client-cert", c, "--tls-client-key", k]);
        assert_usage_error(&strs(&args), &env, names);
    }
}

#[test]
fn iam_without_a_region_exits_64_naming_the_setting() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path().to_str().unwrap();
    // No region anywhere the AWS SDK looks: no variable, no profile (an
    // empty home), no IMDS.
    let env = [("HOME", home), ("AWS_EC2_METADATA_DISABLED", "true")];
    let args = [
        "--upstream",
        "localhost:1",
        "--iam-user",
        "app-iam",
        "--cache-name",
        "my-cache",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    assert_usage_error(
        &args,
        &env,
        &["--region", "AWS_REGION", "configuration error"],
    );
}

// ---- startup failures that are not configuration ----

/// A port some other socket holds, so the proxy's bind fails at once.
fn held_port() -> (std::net::TcpListener, String) {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("local_addr").to_string();
    (held, addr)
}

/// Flags that pass validation and log (a no-tls warning) before the
/// listener on `listen` fails to bind.
fn bind_failure_args(listen: &str) -> Vec<String> {
    [
        "--listen",
        listen,
        "--admin-listen",
        "127.0.0.1:0",
        "--upstream",
        "localhost:1",
        "--no-tls",
        "--password-env",
        PASSWORD_VAR,
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn port_in_use_exits_1_and_a_log_file_gets_no_colour_codes() {
    let (_held, addr) = held_port();
    let args = bind_failure_args(&addr);
    let (status, stderr) = run(&strs(&args), &[(PASSWORD_VAR, PASSWORD)]);
    // Not a configuration error: the same flags work once the port is free.
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(stderr.contains("no-tls"), "{stderr}");
    // stderr is a file here, as under systemd, Docker or Kubernetes.
    assert!(
        !stderr.contains("\x1b["),
        "colour codes in a log file: {stderr:?}"
    );
}

/// Runs the binary with stderr (and stdout) on a pseudo-terminal, via
/// util-linux `script`; returns what the terminal showed.
fn run_on_a_terminal(args: &[String], env: &[(&str, &str)]) -> String {
    let cmd = std::iter::once(BIN.to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run script(1) from util-linux");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("cannot listen on"), "{shown}");
    shown
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    let (_held, addr) = held_port();
    let args = bind_failure_args(&addr);
    let pw = (PASSWORD_VAR, PASSWORD);
    let coloured = run_on_a_terminal(&args, &[pw]);
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal: {coloured:?}"
    );
    for no_color in ["1", "true", "0"] {
        // Any non-empty value disables colour (https://no-color.org).
        let plain = run_on_a_terminal(&args, &[pw, ("NO_COLOR", no_color)]);
        assert!(!plain.contains("\x1b["), "NO_COLOR={no_color}: {plain:?}");
    }
    let empty = run_on_a_terminal(&args, &[pw, ("NO_COLOR", "")]);
    assert!(empty.contains("\x1b["), "NO_COLOR= (empty): {empty:?}");
}

#[test]
fn unquoted_value_in_the_config_file_exits_64_showing_it_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(PASSWORD_VAR, PASSWORD)];
    let cases = [
        (
            "upstream = my-cache.abc.cache.amazonaws.com:6379\n",
            "line 1: the value of `upstream` must be quoted: upstream = \"my-cache.abc.cache.amazonaws.com:6379\"",
        ),
        (
            "# the cache\nupstream = \"localhost:6379\"\nregion = us-east-1\n",
            "line 3: the value of `region` must be quoted: region = \"us-east-1\"",
        ),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("proxy-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let args = [
            "--config",
            file.to_str().unwrap(),
            "--password-env",
            PASSWORD_VAR,
        ];
        let stderr = assert_usage_error(&args, &env, &[file.to_str().unwrap(), want]);
        // None of the TOML parser's own words.
        for raw in ["invalid float", "expected nothing", "literal string"] {
            assert!(!stderr.contains(raw), "{stderr}");
        }
    }
}

// ---- --help ----

/// Keys of `config/example.toml`: the commented-out `# key = value` lines.
fn example_keys() -> Vec<String> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let text = std::fs::read_to_string(example).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter_map(|l| l.split_once(" = "))
        .map(|(key, _)| key)
        .filter(|key| !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .map(String::from)
        .collect()
}

#[test]
fn help_lists_every_setting_of_the_example_config() {
    let out = Command::new(BIN)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let keys = example_keys();
    assert!(keys.len() >= 20, "parsed only {keys:?}");
    for key in &keys {
        assert!(
            help.contains(&format!("--{key} ")),
            "--{key} missing from --help"
        );
    }
    // And the example documents every setting there is.
    let mut all: Vec<&str> = Args::KEYS.to_vec();
    let mut documented: Vec<&str> = keys.iter().map(String::as_str).collect();
    all.sort_unstable();
    documented.sort_unstable();
    assert_eq!(documented, all);
}

#[test]
fn help_groups_the_flags_by_topic() {
    let out = Command::new(BIN)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let headings = [
        "Configuration:",
        "Listening:",
        "Upstream and TLS:",
        "Authentication:",
        "Cluster mode:",
        "Limits and timeouts:",
        "Logging:",
        "Admin:",
    ];
    let at: Vec<usize> = headings
        .iter()
        .map(|h| {
            help.find(&format!("\n{h}\n"))
                .unwrap_or_else(|| panic!("no {h}:\n{help}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "headings out of order:\n{help}"
    );
    // A flag sits under its topic: between its heading and the next.
    let under = |flag: &str, heading: usize| {
        let i = help.find(&format!("--{flag} ")).unwrap();
        let next = at.get(heading + 1).copied().unwrap_or(help.len());
        assert!(
            at[heading] < i && i < next,
            "--{flag} is not under {}",
            headings[heading]
        );
    };
    under("listen", 1);
    under("tls-ca-file", 2);
    under("iam-user", 3);
    under("reauth-after", 3);
    under("cluster-ports", 4);
    under("connect-timeout", 5);
    under("log-level", 6);
    under("admin-listen", 7);
}

// ---- SIGTERM drain ----

/// Polls until a TCP connect to `addr` is refused.
async fn wait_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        assert!(Instant::now() < deadline, "{addr} still accepts");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_sessions_then_exits_zero() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = upstream_args(&redis);
    args.extend(["--drain-timeout", "5s"].map(String::from));
    let mut proxy = Running::start(&strs(&args), &[(PASSWORD_VAR, PASSWORD)]);
    let mut idle = Resp::connect(proxy.addr).await;
    assert_eq!(text(&idle.cmd(&[b"SET", b"k", b"before"]).await), "+OK");
    let mut busy = Resp::connect(proxy.addr).await;
    assert_eq!(text(&busy.cmd(&[b"PING"]).await), "+PONG");
    // A reply owed when the drain starts: delivered, then the close.
    busy.send(&[b"BLPOP", b"drain-list", b"1"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    proxy.sigterm();
    wait_refused(proxy.addr).await;
    // The idle session owes nothing: closed at once, not at the deadline.
    assert!(idle.read_closed().await, "idle session kept open");
    assert_eq!(text(&busy.read().await), "_", "BLPOP timed out: nil");
    assert!(busy.read_closed().await, "busy session kept open");

    let status = proxy.wait_exit(Duration::from_secs(4)).await;
    let status = status.unwrap_or_else(|| panic!("no exit once drained:\n{}", proxy.log()));
    assert!(status.success(), "{status}:\n{}", proxy.log());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(proxy.log().contains("drained"), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_lingering_sessions_at_the_drain_timeout() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = upstream_args(&redis);
    args.extend(["--drain-timeout", "1s"].map(String::from));
    let mut proxy = Running::start(&strs(&args), &[(PASSWORD_VAR, PASSWORD)]);
    let mut c = Resp::connect(proxy.addr).await;
    // A subscriber keeps the drain deadline.
    let confirm = text(&c.cmd(&[b"SUBSCRIBE", b"news"]).await);
    assert!(confirm.contains("subscribe"), "{confirm}");

    let started = Instant::now();
    proxy.sigterm();
    let status = proxy.wait_exit(Duration::from_secs(5)).await;
    let took = started.elapsed();
    let status = status.unwrap_or_else(|| panic!("no exit after drain timeout:\n{}", proxy.log()));
    assert!(status.success(), "{status}:\n{}", proxy.log());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        proxy.log().contains("drain timeout reached"),
        "{}",
        proxy.log()
    );
    assert!(c.read_closed().await, "client still connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_the_drain_at_once_and_says_so() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = upstream_args(&redis);
    args.extend(["--drain-timeout", "60s"].map(String::from));
    let mut proxy = Running::start(&strs(&args), &[(PASSWORD_VAR, PASSWORD)]);
    let mut c = Resp::connect(proxy.addr).await;
    let confirm = text(&c.cmd(&[b"SUBSCRIBE", b"news"]).await);
    assert!(confirm.contains("subscribe"), "{confirm}");

    proxy.sigterm();
    wait_refused(proxy.addr).await;
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "exited before the deadline"
    );
    let started = Instant::now();
    proxy.sigterm();
    let status = proxy.wait_exit(Duration::from_secs(3)).await;
    let status =
        status.unwrap_or_else(|| panic!("no exit after a second SIGTERM:\n{}", proxy.log()));
    assert!(status.success(), "{status}:\n{}", proxy.log());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        proxy.log().contains("second shutdown signal"),
        "{}",
        proxy.log()
    );
    assert!(c.read_closed().await, "client still connected");
}

// ---- secrets never logged ----

const SENTINELS: [&str; 3] = ["oldpw-SENTINEL-1", "SENTINEL-2", "wrongpw-SENTINEL-3"];

/// A working session that hands the proxy secrets of its own, then a proxy
/// with a wrong upstream password; returns both runs' stderr.
async fn secret_scenario(redis: &RedisServer, format: &str) -> Vec<String> {
    let mut args = upstream_args(redis);
    args.extend(["--log-level", "trace", "--log-format", format].map(String::from));

    let mut good = Running::start(&strs(&args), &[(PASSWORD_VAR, PASSWORD)]);
    let mut c = Resp::connect(good.addr).await;
    assert_eq!(text(&c.cmd(&[b"SET", b"k", b"v"]).await), "+OK");
    assert_eq!(text(&c.cmd(&[b"GET", b"k"]).await), "$v");
    assert_eq!(text(&c.cmd(&[b"AUTH", b"oldpw-SENTINEL-1"]).await), "+OK");
    let hello = text(&c.cmd(&[b"HELLO", b"3", b"AUTH", b"u", b"SENTINEL-2"]).await);
    assert!(hello.contains("proto:3"), "{hello}");
    assert_eq!(text(&c.cmd(&[b"RESET"]).await), "+RESET");
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
    drop(c);
    assert!(good.stop().await.success(), "{}", good.log());

    let mut bad = Running::start(&strs(&args), &[(PASSWORD_VAR, "wrongpw-SENTINEL-3")]);
    let mut c = Resp::connect(bad.addr).await;
    c.send(&[b"PING"]).await;
    let reply = text(&c.read().await);
    assert!(reply.contains("rejected the proxy's AUTH"), "{reply}");
    drop(c);
    assert!(bad.stop().await.success(), "{}", bad.log());

    let (good, bad) = (good.log(), bad.log());
    // Not vacuous: trace logging saw both AUTH outcomes.
    assert!(good.contains("upstream AUTH succeeded"), "{good}");
    assert!(bad.contains("upstream AUTH failed"), "{bad}");
    vec![good, bad]
}

fn assert_no_secret(logs: &[String]) {
    for log in logs {
        for secret in SENTINELS.iter().chain([&PASSWORD, &"SENTINEL"]) {
            let at = log.find(secret);
            assert!(
                at.is_none(),
                "{secret:?} logged: ...{}...",
                &log[at.unwrap().saturating_sub(200)..]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_json_logs_and_every_line_is_json() {
    let redis = RedisServer::start(RedisOptions::default());
    let logs = secret_scenario(&redis, "json").await;
    assert_no_secret(&logs);
    for log in &logs {
        for line in log.lines() {
            assert!(
                line.starts_with('{') && line.ends_with('}'),
                "not a JSON object: {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_text_logs() {
    let redis = RedisServer::start(RedisOptions::default());
    assert_no_secret(&secret_scenario(&redis, "text").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_password_is_never_logged() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = upstream_args(&redis);
    args.extend(["--log-level", "trace", "--client-password-env", "CLIENT_PW"].map(String::from));
    let right = "client-pw-SENTINEL-4";
    let wrong = "wrong-client-pw-SENTINEL-5";
    let mut proxy = Running::start(
        &strs(&args),
        &[(PASSWORD_VAR, PASSWORD), ("CLIENT_PW", right)],
    );
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(
        text(&c.cmd(&[b"PING"]).await),
        "-NOAUTH Authentication required."
    );
    assert_eq!(
        text(&c.cmd(&[b"AUTH", wrong.as_bytes()]).await),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        text(&c.cmd(&[b"AUTH", b"u", right.as_bytes()]).await),
        "+OK"
    );
    let hello = text(
        &c.cmd(&[b"HELLO", b"3", b"AUTH", b"u", right.as_bytes()])
            .await,
    );
    assert!(hello.contains("proto"), "{hello}");
    drop(c);
    assert!(proxy.stop().await.success(), "{}", proxy.log());
    let log = proxy.log();
    // Not vacuous: the refusal was logged, without the password.
    assert!(log.contains("wrong client password"), "{log}");
    assert!(
        !log.contains("SENTINEL"),
        "a client password was logged:\n{log}"
    );
}

// ---- input that must not take the process down ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_byte_in_an_inline_command_does_not_kill_the_proxy() {
    let redis = RedisServer::start(RedisOptions::default());
    // Run under an address-space limit so the bug aborts fast instead of
    // eating the machine's memory.
    let args = upstream_args(&redis);
    let script = format!("ulimit -v 4000000; exec {BIN} \"$@\"");
    let mut sh_args = vec!["-c", script.as_str(), "sh"];
    sh_args.extend(strs(&args));
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr.log");
    let addr = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let listen = addr.to_string();
    sh_args.extend(["--listen", listen.as_str(), "--admin-listen", "127.0.0.1:0"]);
    let child = Command::new("sh")
        .args(&sh_args)
        .env_clear()
        .env(PASSWORD_VAR, PASSWORD)
        .stdin(Stdio::null())
        .stderr(File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut proxy = Running {
        child,
        addr,
        stderr,
        _dir: dir,
    };
    let deadline = Instant::now() + DEADLINE;
    while !proxy.log().contains(READY_LINE) {
        assert!(Instant::now() < deadline, "not ready:\n{}", proxy.log());
        tokio::time::sleep(POLL).await;
    }

    let mut c = Resp::connect(addr).await;
    // A normal command pipelined behind it must still run, in order.
    let input = [
        &b"PING\0\r\n"[..],
        &common::encode_command(&[b"ECHO", b"next"]),
    ]
    .concat();
    c.send_raw(&input).await;
    assert_eq!(text(&c.read().await), "+PONG");
    assert_eq!(text(&c.read().await), "$next");
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
    let mut other = Resp::connect(addr).await;
    assert_eq!(text(&other.cmd(&[b"PING"]).await), "+PONG");
    assert!(proxy.child.try_wait().unwrap().is_none(), "{}", proxy.log());
}

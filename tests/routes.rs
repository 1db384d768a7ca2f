//! Several caches from one process: the real binary with a config file of
//! two routes, to two real TLS redis-servers as two different users.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RedisOptions, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_elasticache-auth-proxy");
const DEADLINE: Duration = Duration::from_secs(10);
/// The default route's password, from the environment; the reader's comes
/// from a file, so each route reads its own secret its own way.
const APP_PASSWORD: &str = "app-secret-pw";
const READER_PASSWORD: &str = "reader-secret-pw";
const EX_USAGE: i32 = 64;

/// The proxy binary running one config file; killed and reaped on drop.
struct Proxy {
    child: Child,
    log: PathBuf,
    primary: SocketAddr,
    reader: SocketAddr,
    admin: SocketAddr,
}

impl Proxy {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config file: the top level is the default route, to `primary` as
/// `app`, and `route(port)` is the `[[route]]` listening on `port`.
fn config(primary: &RedisServer, ports: [u16; 3], route: &dyn Fn(u16) -> String) -> String {
    let [listen, reader, admin] = ports;
    format!(
        r#"listen = "127.0.0.1:{listen}"
admin-listen = "127.0.0.1:{admin}"
upstream = "localhost:{}"
tls-ca-file = "{}"
password-user = "app"
password-env = "APP_PW"
drain-timeout = "2s"

{}"#,
        primary.tls_port,
        primary.certs.ca.display(),
        route(reader)
    )
}

/// A `[[route]]` named `reader` to `replica` as the password user `reader`,
/// its password from a file in `dir`.
fn reader_route(dir: &Path, replica: &RedisServer) -> impl Fn(u16) -> String {
    let pw = dir.join("reader-pw");
    std::fs::write(&pw, format!("{READER_PASSWORD}\n")).expect("write password file");
    let (port, ca) = (replica.tls_port, replica.certs.ca.clone());
    move |listen| {
        format!(
            "[[route]]\nname = \"reader\"\nlisten = \"127.0.0.1:{listen}\"\n\
             upstream = \"localhost:{port}\"\ntls-ca-file = \"{}\"\n\
             password-user = \"reader\"\npassword-file = \"{}\"\n",
            ca.display(),
            pw.display()
        )
    }
}

/// Starts the binary on free ports until it binds them all (another test
/// may take a port first) and both routes say they are ready. `env` is
/// added to `APP_PW`.
fn start(
    dir: &Path,
    primary: &RedisServer,
    route: &dyn Fn(u16) -> String,
    env: &[(&str, &str)],
) -> Proxy {
    for _ in 0..5 {
        let ports = [(); 3].map(|_| common::free_port());
        let file = dir.join("proxy.toml");
        std::fs::write(&file, config(primary, ports, route)).expect("write config");
        let log = dir.join("proxy.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .env_clear()
            .env("APP_PW", APP_PASSWORD)
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn proxy");
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut proxy = Proxy {
            child,
            log,
            primary: at(ports[0]),
            reader: at(ports[1]),
            admin: at(ports[2]),
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            let log = proxy.log();
            if log.matches("elasticache-auth-proxy ready").count() == 2
                && log.contains("admin server ready")
            {
                return proxy;
            }
            if let Some(status) = proxy.child.try_wait().expect("try_wait") {
                assert!(
                    log.contains("cannot listen") || log.contains("admin listener"),
                    "proxy exited ({status}):\n{log}"
                );
                break; // lost a port race: try other ports
            }
            assert!(Instant::now() < deadline, "proxy not ready:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("no free ports after 5 attempts");
}

/// A plain RESP client of one listener, as an application connects.
fn client(addr: SocketAddr) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client URL");
    client
        .get_connection_with_timeout(DEADLINE)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

fn whoami(c: &mut redis::Connection) -> String {
    redis::cmd("ACL")
        .arg("WHOAMI")
        .query(c)
        .expect("ACL WHOAMI")
}

/// `GET path` on the admin server: (status, body).
fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(common::http_get(admin, path))
}

/// What `promtool check metrics` says of an exposition, or `None` without
/// promtool (scripts/deps.sh installs it for CI).
fn promtool_check(metrics: &str) -> Option<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(metrics.as_bytes())
        .expect("write to promtool");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool output");
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), said.into_owned()))
}

#[test]
fn two_routes_in_one_file_reach_two_upstreams_each_as_its_own_user() {
    let primary = RedisServer::start(RedisOptions::default());
    let replica = RedisServer::start(RedisOptions {
        users: vec![("reader".into(), READER_PASSWORD.into())],
        ..RedisOptions::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = start(
        dir.path(),
        &primary,
        &reader_route(dir.path(), &replica),
        &[],
    );

    let (mut app, mut reader) = (client(proxy.primary), client(proxy.reader));
    assert_eq!(whoami(&mut app), "app");
    assert_eq!(whoami(&mut reader), "reader");
    // Two upstreams, not one: a key written through one route is not
    // seen through the other.
    let _: () = redis::cmd("SET")
        .arg("routes:k")
        .arg("primary")
        .query(&mut app)
        .unwrap();
    let seen: Option<String> = redis::cmd("GET")
        .arg("routes:k")
        .query(&mut reader)
        .unwrap();
    assert_eq!(seen, None);
    let seen: Option<String> = redis::cmd("GET").arg("routes:k").query(&mut app).unwrap();
    assert_eq!(seen.as_deref(), Some("primary"));

    // One admin server answers for both routes.
    let deadline = Instant::now() + DEADLINE;
    while get(proxy.admin, "/readiness").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            get(proxy.admin, "/readiness")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(proxy.admin, "/startup"), (200, "ok".into()));
    let (status, metrics) = get(proxy.admin, "/metrics");
    assert_eq!(status, 200);
    for route in ["default", "reader"] {
        let series = format!(
            "elasticache_auth_proxy_auth_attempts_total{{method=\"password\",outcome=\"success\",route=\"{route}\"}} "
        );
        assert!(
            metrics.lines().any(|l| l.starts_with(&series)),
            "{series} in:\n{metrics}"
        );
    }
    // Each family once, both routes' series in it (valid exposition).
    let types: Vec<_> = metrics
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .collect();
    let mut unique = types.clone();
    unique.dedup();
    assert_eq!(types, unique, "{metrics}");
    match promtool_check(&metrics) {
        Some((ok, said)) => assert!(ok, "promtool check metrics: {said}\n{metrics}"),
        None => assert!(std::env::var_os("CI").is_none(), "promtool missing in CI"),
    }

    // The audit log says which route each AUTH was for, as which user.
    let log = proxy.log();
    let audit = |route: &str, user: &str| {
        log.lines().any(|l| {
            l.contains("upstream AUTH succeeded")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("user=\"{user}\""))
        })
    };
    assert!(
        audit("default", "app") && audit("reader", "reader"),
        "{log}"
    );
    assert!(!log.contains(APP_PASSWORD) && !log.contains(READER_PASSWORD));

    // One SIGTERM drains both routes and the process exits 0.
    drop((app, reader));
    let kill = Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status();
    assert!(kill.expect("run kill").success());
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = proxy.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit:\n{}", proxy.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}:\n{}", proxy.log());
    for addr in [proxy.primary, proxy.reader] {
        assert!(TcpStream::connect(addr).is_err(), "{addr} still accepts");
    }
}

/// A route signs its own IAM tokens beside a password route: the IAM route
/// to the emulator (in front of a second redis) authenticates as the IAM
/// user, the default route keeps its password user.
#[test]
fn an_iam_route_beside_a_password_route_signs_its_own_tokens() {
    let primary = RedisServer::start(RedisOptions::default());
    let backend = RedisServer::start(common::backend_options());
    let emulator = common::Emulator::start(&backend, &common::EmulatorOptions::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, ca) = (emulator.addr.port(), backend.certs.ca.clone());
    let iam_route = move |listen: u16| {
        format!(
            "[[route]]\nname = \"iam\"\nlisten = \"127.0.0.1:{listen}\"\n\
             upstream = \"localhost:{port}\"\ntls-ca-file = \"{}\"\n\
             iam-user = \"{}\"\ncache-name = \"{}\"\nregion = \"{}\"\n",
            ca.display(),
            common::IAM_USER,
            common::CACHE,
            common::REGION
        )
    };
    // The AWS SDK's chain finds the emulator's credentials in the environment.
    let aws = [
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let proxy = start(dir.path(), &primary, &iam_route, &aws);
    assert_eq!(whoami(&mut client(proxy.primary)), "app");
    assert_eq!(whoami(&mut client(proxy.reader)), common::IAM_USER);
    assert!(emulator.stat("iam_auth_success_total") >= 1);
    let (_, metrics) = get(proxy.admin, "/metrics");
    let value = |series: &str| -> f64 {
        let series = format!("elasticache_auth_proxy_{series} ");
        let line = metrics.lines().find_map(|l| l.strip_prefix(&series));
        let value = line.and_then(|v| v.trim().parse().ok());
        value.unwrap_or_else(|| panic!("{series} in:\n{metrics}"))
    };
    let attempts = |method: &str, route: &str| {
        value(&format!(
            "auth_attempts_total{{method=\"{method}\",outcome=\"success\",route=\"{route}\"}}"
        ))
    };
    assert!(attempts("iam", "iam") >= 1.0 && attempts("password", "default") >= 1.0);
    assert_eq!(
        (attempts("iam", "default"), attempts("password", "iam")),
        (0.0, 0.0)
    );
    // Only the IAM route signs tokens.
    let refreshes = |route: &str| {
        value(&format!(
            "token_refreshes_total{{outcome=\"success\",route=\"{route}\"}}"
        ))
    };
    assert!(refreshes("iam") >= 1.0, "{metrics}");
    assert_eq!(refreshes("default"), 0.0, "{metrics}");
}

#[test]
fn a_route_without_its_own_address_exits_64_naming_the_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        "upstream = \"h:1\"\npassword-env = \"APP_PW\"\nlisten = \"127.0.0.1:6379\"\n\n\
         [[route]]\nname = \"reader\"\nlisten = \"127.0.0.1:6379\"\nupstream = \"h:2\"\npassword-env = \"APP_PW\"\n",
    )
    .expect("write config");
    let out = Command::new(BIN)
        .env_clear()
        .env("APP_PW", APP_PASSWORD)
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run proxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_USAGE), "{stderr}");
    assert!(
        stderr.contains("route `reader`: listen 127.0.0.1:6379 is also the default route's listen"),
        "{stderr}"
    );
}

//! Owns configuration: flags, `ELASTICACHE_AUTH_PROXY_*` environment variables and a TOML file merged
//! (flags > env > file > defaults) and validated into [`Config`], plus the file's `[[route]]`
//! tables, each resolved into a [`Config`] of its own in [`Config::routes`]; it does not open
//! sockets or log.

mod banner;
mod value;

use std::{
    fmt, fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

pub use value::{
    AuthMode, ByteSize, HumanDuration, LogFormat, LogLevel, PortRange, Service, Switch, UnixMode,
    Upstream,
};

use crate::auth::Secret;

/// Prefix of every setting's environment variable: `ELASTICACHE_AUTH_PROXY_<SETTING_IN_UPPER_SNAKE>`.
pub const ENV_PREFIX: &str = "ELASTICACHE_AUTH_PROXY_";

/// `stringify!(snake_name)` as a `&'static str` in kebab-case, computed at compile time.
macro_rules! kebab {
    ($s:expr) => {{
        const BYTES: [u8; $s.len()] = {
            let mut b = [0u8; $s.len()];
            let mut i = 0;
            while i < b.len() {
                b[i] = if $s.as_bytes()[i] == b'_' {
                    b'-'
                } else {
                    $s.as_bytes()[i]
                };
                i += 1;
            }
            b
        };
        match std::str::from_utf8(&BYTES) {
            Ok(s) => s,
            // Identifiers are ASCII and '-' is ASCII, so this arm is unreachable.
            Err(_) => panic!("identifier is not UTF-8"),
        }
    }};
}

/// Declares [`Args`] once, with its flag, env and merge code, so each setting is written once.
macro_rules! settings {
    ($( $(#[$attr:meta])* $name:ident: $ty:ty, )*) => {
        /// Every setting as an optional value: one layer of configuration (file, env or flags).
        #[derive(clap::Args, serde::Deserialize, Default, Debug, Clone)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct Args {
            $( $(#[$attr])* #[arg(long)] pub $name: Option<$ty>, )*
        }

        impl Args {
            /// Every setting's name: the flag without `--` and the TOML key.
            pub const KEYS: &[&str] = &[$( kebab!(stringify!($name)), )*];

            /// Reads `ELASTICACHE_AUTH_PROXY_<SETTING>` for every setting through `env`; empty counts as unset.
            pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Args, Error> {
                Ok(Args { $( $name: from_env(env, Setting(stringify!($name)))?, )* })
            }

            /// Field-wise: this layer's value where set, else `lower`'s.
            pub fn or(self, lower: Args) -> Args {
                Args { $( $name: self.$name.or(lower.$name), )* }
            }

            /// This layer with only the settings whose key `keep` accepts.
            pub fn retain(self, keep: impl Fn(&str) -> bool) -> Args {
                Args { $( $name: self.$name.filter(|_| keep(kebab!(stringify!($name)))), )* }
            }
        }
    };
}

settings! {
    /// TOML file of settings (keys = flag names); each flag also reads ELASTICACHE_AUTH_PROXY_<FLAG>
    #[arg(help_heading = "Configuration", value_name = "FILE")] config: PathBuf,
    /// TCP address for plain RESP clients [default: 127.0.0.1:6379]
    #[arg(help_heading = "Listening", value_name = "ADDR")] listen: SocketAddr,
    /// Also accept clients on this Unix socket
    #[arg(help_heading = "Listening", value_name = "PATH")] unix_socket: PathBuf,
    /// Permissions of the Unix socket, octal [default: 0660]
    #[arg(help_heading = "Listening", value_name = "MODE")] unix_socket_mode: UnixMode,
    /// ElastiCache endpoint to proxy to (required)
    #[arg(help_heading = "Upstream and TLS", value_name = "HOST:PORT")] upstream: Upstream,
    /// PEM bundle of CA certificates trusted in addition to the system roots
    #[arg(help_heading = "Upstream and TLS", value_name = "FILE")] tls_ca_file: PathBuf,
    /// Name to verify the upstream certificate against [default: upstream host]
    #[arg(help_heading = "Upstream and TLS", value_name = "NAME")] tls_server_name: String,
    /// PEM client certificate for mutual TLS (needs --tls-client-key)
    #[arg(help_heading = "Upstream and TLS", value_name = "FILE")] tls_client_cert: PathBuf,
    /// PEM private key for --tls-client-cert
    #[arg(help_heading = "Upstream and TLS", value_name = "FILE")] tls_client_key: PathBuf,
    /// Talk plaintext to the upstream (local development only)
    #[arg(help_heading = "Upstream and TLS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")] no_tls: bool,
    /// How to authenticate upstream [default: iam-with-password-fallback with both an IAM user and a password, iam with only an IAM user, else password]
    #[arg(help_heading = "Authentication", value_name = "MODE")] auth: AuthMode,
    /// ElastiCache user (user id = user name) that authenticates with IAM tokens
    #[arg(help_heading = "Authentication", value_name = "USER")] iam_user: String,
    /// Replication group id or serverless cache name the tokens are signed for (not the endpoint)
    #[arg(help_heading = "Authentication", value_name = "NAME")] cache_name: String,
    /// AWS region of the cache [default: from the AWS SDK chain, e.g. AWS_REGION]
    #[arg(help_heading = "Authentication", value_name = "REGION")] region: String,
    /// The cache is ElastiCache Serverless (tokens carry ResourceType=ServerlessCache)
    #[arg(help_heading = "Authentication", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")] serverless: bool,
    /// Cluster mode (sharded or serverless caches): give every node a local listener and rewrite topology replies and MOVED/ASK to them
    #[arg(help_heading = "Cluster mode", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")] cluster: bool,
    /// Local ports for the node listeners in cluster mode, FIRST-LAST [default: ephemeral ports]
    #[arg(help_heading = "Cluster mode", value_name = "FIRST-LAST")] cluster_ports: PortRange,
    /// How often cluster mode re-reads the topology [default: 30s]
    #[arg(help_heading = "Cluster mode", value_name = "DURATION")] cluster_refresh: HumanDuration,
    /// AWS service the tokens are signed for [default: elasticache]
    #[arg(help_heading = "Authentication", value_name = "SERVICE")] service: Service,
    /// ACL user for AUTH; unset sends legacy `AUTH <password>`
    #[arg(help_heading = "Authentication", value_name = "USER")] password_user: String,
    /// Environment variable holding the upstream password
    #[arg(help_heading = "Authentication", value_name = "VAR")] password_env: String,
    /// File holding the upstream password (trailing whitespace trimmed)
    #[arg(help_heading = "Authentication", value_name = "FILE")] password_file: PathBuf,
    /// Environment variable holding a password every client must AUTH with first [default: none, any AUTH is accepted]
    #[arg(help_heading = "Listening", value_name = "VAR")] client_password_env: String,
    /// File holding the password every client must AUTH with first (trailing whitespace trimmed)
    #[arg(help_heading = "Listening", value_name = "FILE")] client_password_file: PathBuf,
    /// Maximum concurrent client connections, 0 = unlimited [default: 10000]
    #[arg(help_heading = "Limits and timeouts", value_name = "N")] max_connections: usize,
    /// Warm pool: at most this many upstream connections kept connected, TLS-established and authenticated, so a new client takes one at once; full at start, then sized to the busiest second of the last minute; 0 = off [default: 8]
    #[arg(help_heading = "Limits and timeouts", value_name = "N")] pool_size: usize,
    /// Warm pool: a connection whose client left cleanly with nothing owed goes back to the pool after RESET and a fresh AUTH, both replies checked [default: on with --pool-size]
    #[arg(help_heading = "Limits and timeouts", value_name = "on|off")] pool_reuse: Switch,
    /// Deadline for upstream TCP connect plus TLS handshake [default: 5s]
    #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")] connect_timeout: HumanDuration,
    /// Deadline for the upstream's reply to AUTH [default: 5s]
    #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")] auth_timeout: HumanDuration,
    /// Deadline for open sessions to finish on shutdown [default: 30s]
    #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")] drain_timeout: HumanDuration,
    /// Close sessions idle this long, 0 = never [default: 0]
    #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")] idle_timeout: HumanDuration,
    /// The server closes an IAM connection this long after its last AUTH (ElastiCache: 12h) [default: 12h]
    #[arg(help_heading = "Authentication", value_name = "DURATION")] max_session_age: HumanDuration,
    /// Re-authenticate IAM sessions this long after their last AUTH, plus up to 5% jitter [default: 11/12 of max-session-age, 11h]
    #[arg(help_heading = "Authentication", value_name = "DURATION")] reauth_after: HumanDuration,
    /// Largest bulk string or line relayed (as proto-max-bulk-len), at least 1KiB [default: 512MiB]
    #[arg(help_heading = "Limits and timeouts", value_name = "SIZE")] max_frame_size: ByteSize,
    /// Log output format [default: text]
    #[arg(help_heading = "Logging", value_name = "FORMAT")] log_format: LogFormat,
    /// Log level or filter directive, e.g. info,elasticache_auth_proxy=debug [default: info]
    #[arg(help_heading = "Logging", value_name = "LEVEL")] log_level: LogLevel,
    /// Admin HTTP address: /metrics, /startup, /readiness, /liveness, POST /quitquitquit [default: 127.0.0.1:9090]
    #[arg(help_heading = "Admin", value_name = "ADDR")] admin_listen: SocketAddr,
}

/// Parses one setting's environment variable with the same `FromStr` the flag uses.
fn from_env<T: FromStr<Err: fmt::Display>>(
    env: &dyn Fn(&str) -> Option<String>,
    setting: Setting,
) -> Result<Option<T>, Error> {
    match env(&setting.env_var()) {
        Some(v) if !v.trim().is_empty() => v.parse().map(Some).map_err(|e: T::Err| Error::Env {
            setting,
            message: e.to_string(),
        }),
        _ => Ok(None),
    }
}

/// One setting, named by its field; displays as its flag, environment variable and file key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting(pub &'static str);

impl Setting {
    /// The flag name without `--`, which is also the TOML key.
    pub fn key(self) -> String {
        self.0.replace('_', "-")
    }

    /// The environment variable that sets it.
    pub fn env_var(self) -> String {
        format!(
            "{ENV_PREFIX}{}",
            self.0.replace('-', "_").to_ascii_uppercase()
        )
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key();
        write!(f, "--{key} (env {}, config key `{key}`)", self.env_var())
    }
}

/// Why configuration was rejected; every message names the setting and the fix. Exit 64 (EX_USAGE).
///
/// Messages are self-contained (I/O and TOML causes are inlined, not chained) and never contain
/// the password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An environment variable does not parse.
    #[error("{setting}: invalid value in {}: {message}; fix or unset it", setting.env_var())]
    Env { setting: Setting, message: String },
    /// The config file is not valid TOML, has an unknown key or a bad value.
    #[error("config file {}, {message}", path.display())]
    File { path: PathBuf, message: String },
    /// A file named by a setting cannot be read.
    #[error("{setting}: cannot read {}: {error}; check the path exists and is readable", path.display())]
    Read {
        setting: Setting,
        path: PathBuf,
        error: std::io::Error,
    },
    /// A required setting is unset.
    #[error("{setting} is required: {fix}")]
    Missing { setting: Setting, fix: &'static str },
    /// Auth mode `password` got neither password source.
    #[error("auth mode password needs the upstream password: set one of {0} or {1}")]
    NoPassword(Setting, Setting),
    /// The variable named by `password-env` is unset or empty; its value is never shown.
    #[error(
        "{setting} names {var}, which is unset or empty; export the password in {var} or name another variable"
    )]
    PasswordEnv { setting: Setting, var: String },
    /// Two settings that exclude each other are both set.
    #[error("{0} and {1} cannot be used together; remove one of them")]
    Conflict(Setting, Setting),
    /// A setting needs another one that is unset.
    #[error("{0} requires {1}; set both or neither")]
    Requires(Setting, Setting),
    /// A value is out of range or not allowed where it was given.
    #[error("{setting}: {message}")]
    Invalid { setting: Setting, message: String },
    /// A `[[route]]` of the config file is wrong; `message` names the key.
    #[error("config file {}, route `{name}`: {message}", path.display())]
    Route {
        path: PathBuf,
        name: String,
        message: String,
    },
}

/// Typed, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP listen address; served even when `unix_socket` is set.
    pub listen: SocketAddr,
    pub unix_socket: Option<PathBuf>,
    /// Permission bits applied to `unix_socket` after bind.
    pub unix_socket_mode: u32,
    pub upstream: Upstream,
    /// `None` when `no-tls` is set: upstream traffic, including AUTH, is plaintext.
    pub tls: Option<Tls>,
    pub auth: Auth,
    /// Clients must AUTH with this first; `None`: any AUTH is answered `+OK`.
    pub client_password: Option<Secret>,
    /// 0 = unlimited.
    pub max_connections: usize,
    /// The most warm upstream connections kept ready; 0 = no pool.
    pub pool_size: usize,
    /// A session whose client left cleanly with nothing owed returns its
    /// connection to the pool (after RESET + AUTH); never without a pool.
    pub pool_reuse: bool,
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    pub auth_timeout: Duration,
    pub drain_timeout: Duration,
    /// `Duration::ZERO` = sessions never time out.
    pub idle_timeout: Duration,
    /// How long the server keeps an IAM connection after its last AUTH.
    pub max_session_age: Duration,
    /// When an IAM session re-authenticates (before `max_session_age`).
    pub reauth_after: Duration,
    pub admin_listen: SocketAddr,
    pub max_frame_size: u64,
    pub log_format: LogFormat,
    /// Cluster mode: `None` serves a single endpoint.
    pub cluster: Option<Cluster>,
    /// A level ("info") or an EnvFilter directive.
    pub log_level: String,
    /// Non-fatal notes to log once logging is set up (every route's, each
    /// prefixed with its route).
    pub warnings: Vec<String>,
    /// This route's name, the `route` label of its metrics and audit lines:
    /// `None` when the file has no `[[route]]` (one unlabelled route, the
    /// output exactly as before routes existed), else [`DEFAULT_ROUTE`] for
    /// the top-level settings and the table's `name` for each route.
    pub route: Option<String>,
    /// The config file's `[[route]]` tables, each resolved into a whole
    /// configuration (its `route` set, its own `routes` empty). Empty
    /// without routes.
    pub routes: Vec<Config>,
}

/// The name (and `route` label) of the route the top-level settings and
/// the flags describe, once the file has `[[route]]` tables.
pub const DEFAULT_ROUTE: &str = "default";

/// The keys a `[[route]]` table may set: where it listens, its upstream and
/// TLS, and its identity, so one process can front several caches as
/// several users. Everything else (limits, timeouts, the client password,
/// logging, admin) belongs to the process and is set once at the top level;
/// each route takes those, and never the default route's upstream or
/// identity.
pub const ROUTE_KEYS: &[&str] = &[
    "listen",
    "unix-socket",
    "unix-socket-mode",
    "upstream",
    "tls-ca-file",
    "tls-server-name",
    "tls-client-cert",
    "tls-client-key",
    "no-tls",
    "auth",
    "iam-user",
    "cache-name",
    "region",
    "serverless",
    "service",
    "cluster",
    "cluster-ports",
    "password-user",
    "password-env",
    "password-file",
];

/// Cluster mode settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Ports for the node listeners; `None`: ephemeral.
    pub ports: Option<PortRange>,
    /// How often the topology is re-read.
    pub refresh: Duration,
}

/// Upstream TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// Extra PEM roots, added to the system roots.
    pub ca_file: Option<PathBuf>,
    pub server_name: String,
    pub client_cert: Option<ClientCert>,
}

/// Mutual-TLS client identity (PEM files, checked readable at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to authenticate upstream.
#[derive(Debug, Clone)]
pub struct Auth {
    pub mode: AuthMode,
    /// Set in the `password` and `iam-with-password-fallback` modes.
    pub password: Option<Password>,
    /// Set in the `iam` and `iam-with-password-fallback` modes.
    pub iam: Option<Iam>,
}

/// What IAM tokens are signed for. Names are lowercased, as ElastiCache
/// validates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iam {
    pub user: String,
    pub cache_name: String,
    /// `None`: taken from the AWS SDK's region chain at startup.
    pub region: Option<String>,
    pub serverless: bool,
    pub service: Service,
}

/// A static upstream password, read once at load.
#[derive(Debug, Clone)]
pub struct Password {
    /// ACL user; `None` sends legacy `AUTH <password>`.
    pub user: Option<String>,
    /// Redacted in `Debug`; expose only when writing AUTH upstream.
    pub secret: Secret,
    pub source: PasswordSource,
}

/// Where the password came from (for logs; never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The named environment variable.
    Env(String),
    File(PathBuf),
}

impl Config {
    /// flags > env > file > defaults. `env` is a lookup like `|k| std::env::var(k).ok()`.
    ///
    /// The flags, the environment and the file's top-level keys describe the
    /// default route; each `[[route]]` table is its own keys over the
    /// top level's shared settings (those outside [`ROUTE_KEYS`]).
    pub fn load(flags: Args, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let upper = flags.or(Args::from_env(env)?);
        let (file, routes) = match &upper.config {
            Some(path) => read_file(path)?,
            None => (Args::default(), Vec::new()),
        };
        let merged = upper.or(file);
        let shared = merged
            .clone()
            .retain(|key| key != "config" && !ROUTE_KEYS.contains(&key));
        let mut cfg = resolve(merged, env)?;
        if routes.is_empty() {
            return Ok(cfg);
        }
        cfg.route = Some(DEFAULT_ROUTE.into());
        for table in routes {
            let route_error = |message: String| Error::Route {
                path: table.path.clone(),
                name: table.name.clone(),
                message,
            };
            let mut route = resolve(table.args.clone().or(shared.clone()), env)
                .map_err(|e| route_error(as_route_keys(&e)))?;
            let clash = std::iter::once(&cfg)
                .chain(&cfg.routes)
                .find_map(|other| clash(&route, other));
            if let Some(message) = clash {
                return Err(route_error(message));
            }
            let name = &table.name;
            cfg.warnings.extend(
                route
                    .warnings
                    .drain(..)
                    .map(|w| format!("route `{name}`: {w}")),
            );
            route.route = Some(table.name);
            cfg.routes.push(route);
        }
        Ok(cfg)
    }

    /// This route and its `[[route]]`s, the default first.
    pub fn all_routes(&self) -> impl Iterator<Item = &Config> {
        std::iter::once(self).chain(&self.routes)
    }
}

/// `e`'s message with each setting named as a route's key: a flag or an
/// environment variable sets the default route only, so naming them would
/// point at a fix that does not fix the route.
fn as_route_keys(e: &Error) -> String {
    Args::KEYS.iter().fold(e.to_string(), |message, key| {
        message.replace(&Setting(key).to_string(), &format!("key `{key}`"))
    })
}

/// Why `route` cannot run beside `other`: the same listen address (port 0
/// aside: each bind picks its own) or Unix socket. `None` when they can.
fn clash(route: &Config, other: &Config) -> Option<String> {
    let whose = match other.route.as_deref() {
        Some(DEFAULT_ROUTE) | None => "the default route's".to_string(),
        Some(name) => format!("route `{name}`'s"),
    };
    if route.listen == other.listen && route.listen.port() != 0 {
        return Some(format!(
            "listen {} is also {whose} listen; give each route its own address",
            route.listen
        ));
    }
    if let (Some(a), Some(b)) = (&route.unix_socket, &other.unix_socket) {
        if a == b {
            return Some(format!(
                "unix-socket {} is also {whose} unix-socket; give each route its own",
                a.display()
            ));
        }
    }
    let ports = |c: &Config| c.cluster.as_ref().and_then(|c| c.ports);
    match (ports(route), ports(other)) {
        (Some(a), Some(b)) if a.first <= b.last && b.first <= a.last => Some(format!(
            "cluster-ports {}-{} overlap {whose} cluster-ports {}-{}; give each route its own range",
            a.first, a.last, b.first, b.last
        )),
        _ => None,
    }
}

/// Whether text logs get ANSI colours: only when stderr is a terminal (never in a file, pipe
/// or container log), and never with `NO_COLOR` set to anything non-empty (<https://no-color.org>).
pub fn log_colour(stderr_is_terminal: bool, env: &dyn Fn(&str) -> Option<String>) -> bool {
    stderr_is_terminal && env("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// One `[[route]]` table of the config file, its keys checked.
#[derive(Debug, Clone)]
struct RouteTable {
    /// The file, for errors.
    path: PathBuf,
    name: String,
    /// Only keys of [`ROUTE_KEYS`].
    args: Args,
}

/// Parses the config file into the top-level layer and its `[[route]]`
/// tables; `config` itself is not allowed inside it.
fn read_file(path: &Path) -> Result<(Args, Vec<RouteTable>), Error> {
    let setting = Setting("config");
    let text = fs::read_to_string(path).map_err(|error| Error::Read {
        setting,
        path: path.into(),
        error,
    })?;
    let (args, routes) = match toml::from_str::<Args>(&text) {
        Ok(args) => (args, Vec::new()),
        // The file is exactly as before routes existed unless it has them.
        Err(e) => match toml::from_str::<toml::Table>(&text) {
            Ok(mut table) if table.contains_key("route") => {
                let routes = table.remove("route");
                (top_level(path, &text, &table)?, route_tables(path, routes)?)
            }
            _ => return Err(file_error(path, &text, &e)),
        },
    };
    if args.config.is_some() {
        let message = format!(
            "not allowed inside the config file {}; remove the key",
            path.display()
        );
        return Err(Error::Invalid { setting, message });
    }
    Ok((args, routes))
}

/// The top-level keys of a file with `[[route]]` tables. They stand before
/// the first table header (TOML puts every key after one into that table),
/// so that part of the text is parsed as a file of its own and its errors
/// keep their lines. `table` is the whole file without `route`.
fn top_level(path: &Path, text: &str, table: &toml::Table) -> Result<Args, Error> {
    if let Some(other) = table.keys().find(|k| !Args::KEYS.contains(&k.as_str())) {
        let message = format!(
            "the file has no tables such as `[{other}]` besides `[[route]]`; write each setting as a top-level `key = value` line, keys are the flag names without `--`"
        );
        return Err(Error::File {
            path: path.into(),
            message,
        });
    }
    let header = |i: &usize| text[*i..].trim_start().starts_with('[');
    let Some(end) = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .find(header)
    else {
        let message = "write each route as a `[[route]]` table after the top-level keys".into();
        return Err(Error::File {
            path: path.into(),
            message,
        });
    };
    let top = &text[..end];
    toml::from_str(top).map_err(|e| file_error(path, top, &e))
}

/// Checks each `[[route]]` table: a unique `name`, its own `listen`, and
/// only [`ROUTE_KEYS`]. Values are checked when the route is resolved.
fn route_tables(path: &Path, routes: Option<toml::Value>) -> Result<Vec<RouteTable>, Error> {
    let file_error = |message: String| Error::File {
        path: path.into(),
        message,
    };
    let Some(toml::Value::Array(routes)) = routes else {
        return Err(file_error(
            "`route` must be `[[route]]` tables, one a route".into(),
        ));
    };
    let mut tables: Vec<RouteTable> = Vec::new();
    for (i, route) in routes.into_iter().enumerate() {
        let toml::Value::Table(mut table) = route else {
            return Err(file_error(
                "`route` must be `[[route]]` tables, one a route".into(),
            ));
        };
        let name = match table.remove("name") {
            Some(toml::Value::String(name)) if valid_route_name(&name) => name,
            Some(_) => {
                return Err(file_error(format!(
                    "the `name` of route {} must be a quoted word of letters, digits, `-` and `_`, such as name = \"reader\"",
                    i + 1
                )))
            }
            None => {
                return Err(file_error(format!(
                    "route {} has no `name`; give each route one, such as name = \"reader\" (it labels its metrics and logs)",
                    i + 1
                )))
            }
        };
        let route_error = |message: String| Error::Route {
            path: path.into(),
            name: name.clone(),
            message,
        };
        if name == DEFAULT_ROUTE || tables.iter().any(|t| t.name == name) {
            let whose = if name == DEFAULT_ROUTE {
                "the top-level settings'"
            } else {
                "another route's"
            };
            return Err(route_error(format!(
                "the name is {whose} too; give each route its own"
            )));
        }
        for key in table.keys() {
            if !Args::KEYS.contains(&key.as_str()) {
                return Err(route_error(format!(
                    "key `{key}`: no such setting; keys are the flag names without `--`"
                )));
            }
            if !ROUTE_KEYS.contains(&key.as_str()) {
                return Err(route_error(format!(
                    "key `{key}` is shared by every route; set it once at the top level, before the first [[route]] (a route sets only {})",
                    ROUTE_KEYS.join(", ")
                )));
            }
        }
        if !table.contains_key("listen") {
            return Err(route_error(
                "set `listen`: each route serves its own address, such as listen = \"127.0.0.1:6380\"".into(),
            ));
        }
        // A table converted whole has no lines to point at, so a bad value
        // is found by converting its key alone.
        let args: Args = table.clone().try_into().map_err(|e: toml::de::Error| {
            let bad = table.iter().find_map(|(key, value)| {
                let one = toml::Table::from_iter([(key.clone(), value.clone())]);
                let e = one.try_into::<Args>().err()?;
                Some(format!("key `{key}`: {}", e.message().trim()))
            });
            route_error(bad.unwrap_or_else(|| e.message().trim().to_string()))
        })?;
        tables.push(RouteTable {
            path: path.into(),
            name,
            args,
        });
    }
    Ok(tables)
}

/// A route name is a Prometheus label value and a log field: kept to a word.
fn valid_route_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The TOML type a setting's value is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    /// Quoted; `max-frame-size` also takes a bare byte count.
    String,
    Bool,
    Integer,
}

/// Kept in step with [`Args`] by a test that deserializes every key.
fn value_kind(key: &str) -> ValueKind {
    match key {
        "no-tls" | "serverless" | "cluster" => ValueKind::Bool,
        "max-connections" | "pool-size" => ValueKind::Integer,
        _ => ValueKind::String,
    }
}

/// `value` as a TOML basic string.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Locates a TOML error by line and key, and for the common mistakes (a bare word where a quoted
/// string belongs, quotes around a number or bool, a quote left open) shows the line as it should
/// be written. toml's own snippet is never shown, and a value only under a known key: the line
/// may be a password typed under a wrong key.
fn file_error(path: &Path, text: &str, e: &toml::de::Error) -> Error {
    let before = e.span().and_then(|s| text.get(..s.start)).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let text_line = text.lines().nth(line - 1).unwrap_or("").trim();
    let entry = text_line
        .split_once('=')
        .map(|(k, v)| (k.trim().trim_matches('"'), v.trim()));
    let raw = e.message().trim();
    let message = match entry {
        None if text_line.starts_with('[') => format!(
            "line {line}: the file has no tables such as `{text_line}`; write each setting as a top-level `key = value` line, keys are the flag names without `--`"
        ),
        None => format!("line {line}: {raw}"),
        Some((key, _)) if !Args::KEYS.contains(&key) => format!(
            "line {line}, key `{key}`: no such setting; keys are the flag names without `--`"
        ),
        Some((key, value)) => match fix(key, value, toml::from_str::<toml::Table>(text).is_ok()) {
            Some(fix) => format!("line {line}: {fix}"),
            None => format!("line {line}, key `{key}`: {raw}"),
        },
    };
    Error::File {
        path: path.into(),
        message,
    }
}

/// How to write `key = value` when the mistake is in how the value is written (its quotes), or
/// `None` when the value itself is wrong. `parsed`: the file is valid TOML, so the error is the
/// value's type or content rather than its syntax.
fn fix(key: &str, value: &str, parsed: bool) -> Option<String> {
    let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'');
    // A bare value cannot contain `#`: the rest of the line is a comment.
    let bare = match quote {
        None => value.split_once('#').map_or(value, |(v, _)| v).trim(),
        Some(_) => value,
    };
    let unquoted = match quote {
        Some(q) if value.len() > 1 && value.ends_with(q) => Some(&value[1..value.len() - 1]),
        _ => None,
    };
    let kind = value_kind(key);
    let takes = |what: &str, valid: bool, inner: &str, example: &str| {
        if valid {
            format!("`{key}` takes {what} without quotes: {key} = {inner}")
        } else {
            format!("`{key}` takes {what} without quotes, such as {key} = {example}")
        }
    };
    match (kind, quote, unquoted) {
        // An open quote is a syntax error whatever the kind.
        (ValueKind::String, Some(q), None) => Some(format!(
            "the value of `{key}` has no closing quote: {key} = {}",
            quoted(value.trim_start_matches(q))
        )),
        (ValueKind::String, None, _) => {
            // Valid TOML of another type is fine where the setting takes it (a byte count).
            let byte_count = parsed && key == "max-frame-size" && bare.parse::<u64>().is_ok();
            (!byte_count).then(|| {
                format!(
                    "the value of `{key}` must be quoted: {key} = {}",
                    quoted(bare)
                )
            })
        }
        (ValueKind::String, Some(_), Some(_)) => None,
        (ValueKind::Bool, _, inner) => {
            let inner = inner.unwrap_or(bare);
            let valid = matches!(inner, "true" | "false");
            // `no-tls = true` itself is never the error.
            (!valid || quote.is_some()).then(|| takes("true or false", valid, inner, "true"))
        }
        (ValueKind::Integer, _, inner) => {
            let inner = inner.unwrap_or(bare);
            let valid = inner.parse::<u64>().is_ok();
            (!valid || quote.is_some()).then(|| takes("a whole number", valid, inner, "500"))
        }
    }
}

/// Applies defaults and cross-setting rules to the merged layers.
fn resolve(a: Args, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Error> {
    let mut warnings = Vec::new();
    let upstream = a.upstream.clone().ok_or(Error::Missing {
        setting: Setting("upstream"),
        fix: "set it to the ElastiCache endpoint as HOST:PORT",
    })?;
    let tls = tls(&a, &upstream)?;
    if tls.is_none() {
        warnings
            .push("no-tls: upstream traffic is plaintext; use only for local development".into());
    }
    let listen = a
        .listen
        .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 6379)));
    if !listen.ip().is_loopback() {
        warnings.push(format!(
            "listen: {listen} is not loopback; anyone who can reach it gets an authenticated upstream session"
        ));
    }
    if a.unix_socket_mode.is_some() && a.unix_socket.is_none() {
        warnings.push("unix-socket-mode has no effect without unix-socket".into());
    }
    let max_frame_size = a.max_frame_size.map_or(512 << 20, |s| s.0);
    if max_frame_size < 1024 {
        let message = format!("{max_frame_size} bytes is too small; use at least 1KiB");
        return Err(invalid("max_frame_size", message));
    }
    let timeout =
        |v: Option<HumanDuration>, default| v.map_or(Duration::from_secs(default), |d| d.0);
    let (connect_timeout, auth_timeout) =
        (timeout(a.connect_timeout, 5), timeout(a.auth_timeout, 5));
    for (name, d) in [
        ("connect_timeout", connect_timeout),
        ("auth_timeout", auth_timeout),
    ] {
        if d.is_zero() {
            return Err(invalid(name, "must be greater than 0, e.g. \"5s\""));
        }
    }
    let max_session_age = timeout(a.max_session_age, 12 * 3600);
    // By default 11/12 of the session age: 11h for ElastiCache's 12h.
    let reauth_after = a
        .reauth_after
        .map_or(max_session_age.mul_f64(11.0 / 12.0), |d| d.0);
    // The jitter adds up to 5%; the re-auth must still land before the cut.
    if reauth_after.is_zero() || reauth_after.mul_f64(1.05) >= max_session_age {
        return Err(invalid(
            "reauth_after",
            format!(
                "must be above 0 and leave room (5% jitter) before max-session-age ({}); e.g. 11h for 12h",
                humantime::format_duration(max_session_age)
            ),
        ));
    }
    Ok(Config {
        listen,
        unix_socket: a.unix_socket.clone(),
        unix_socket_mode: a.unix_socket_mode.map_or(0o660, |m| m.0),
        upstream,
        tls,
        auth: auth(&a, env, &mut warnings)?,
        client_password: secret(
            (Setting("client_password_env"), &a.client_password_env),
            (Setting("client_password_file"), &a.client_password_file),
            env,
        )?
        .map(|(secret, _)| secret),
        max_connections: a.max_connections.unwrap_or(10_000),
        pool_size: a.pool_size.unwrap_or(POOL_SIZE),
        pool_reuse: pool_reuse(&a)?,
        connect_timeout,
        auth_timeout,
        drain_timeout: timeout(a.drain_timeout, 30),
        idle_timeout: timeout(a.idle_timeout, 0),
        max_session_age,
        reauth_after,
        admin_listen: a
            .admin_listen
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 9090))),
        max_frame_size,
        log_format: a.log_format.unwrap_or(LogFormat::Text),
        cluster: cluster(&a)?,
        log_level: a.log_level.map_or_else(|| "info".into(), |l| l.0),
        warnings,
        route: None,
        routes: Vec::new(),
    })
}

/// The warm pool's default bound: small, since the pool sizes itself to
/// the accept rate below it, and enough for an app's start-up burst.
const POOL_SIZE: usize = 8;

/// Whether sessions return their connections to the warm pool: on by
/// default with a pool; asking for it without one is a mistake worth saying.
fn pool_reuse(a: &Args) -> Result<bool, Error> {
    let pool = a.pool_size.unwrap_or(POOL_SIZE) > 0;
    match a.pool_reuse {
        Some(Switch::On) if !pool => Err(invalid(
            "pool_reuse",
            "only applies with a warm pool (--pool-size above 0)",
        )),
        Some(switch) => Ok(switch == Switch::On),
        None => Ok(pool),
    }
}

/// Cluster mode's settings; they need `--cluster`.
fn cluster(a: &Args) -> Result<Option<Cluster>, Error> {
    if a.cluster != Some(true) {
        for (name, set) in [
            ("cluster_ports", a.cluster_ports.is_some()),
            ("cluster_refresh", a.cluster_refresh.is_some()),
        ] {
            if set {
                return Err(invalid(name, "only applies with --cluster"));
            }
        }
        return Ok(None);
    }
    let refresh = a.cluster_refresh.map_or(Duration::from_secs(30), |d| d.0);
    if refresh < Duration::from_secs(1) {
        return Err(invalid("cluster_refresh", "must be at least 1s"));
    }
    Ok(Some(Cluster {
        ports: a.cluster_ports,
        refresh,
    }))
}

/// Shorthand for [`Error::Invalid`].
fn invalid(setting: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        setting: Setting(setting),
        message: message.into(),
    }
}

/// Checks a file named by `setting` can be read now, so a typo fails at startup, not first connect.
fn readable(setting: Setting, path: &Path) -> Result<PathBuf, Error> {
    match fs::read(path) {
        Ok(_) => Ok(path.into()),
        Err(error) => Err(Error::Read {
            setting,
            path: path.into(),
            error,
        }),
    }
}

fn tls(a: &Args, upstream: &Upstream) -> Result<Option<Tls>, Error> {
    if a.no_tls == Some(true) {
        let set = [
            ("tls_ca_file", a.tls_ca_file.is_some()),
            ("tls_server_name", a.tls_server_name.is_some()),
            ("tls_client_cert", a.tls_client_cert.is_some()),
            ("tls_client_key", a.tls_client_key.is_some()),
        ];
        return match set.into_iter().find(|(_, is_set)| *is_set) {
            Some((name, _)) => Err(Error::Conflict(Setting("no_tls"), Setting(name))),
            None => Ok(None),
        };
    }
    let (cert, key) = (Setting("tls_client_cert"), Setting("tls_client_key"));
    let client_cert = match (&a.tls_client_cert, &a.tls_client_key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some(ClientCert {
            cert: readable(cert, c)?,
            key: readable(key, k)?,
        }),
        (Some(_), None) => return Err(Error::Requires(cert, key)),
        (None, Some(_)) => return Err(Error::Requires(key, cert)),
    };
    let server_name = a
        .tls_server_name
        .clone()
        .unwrap_or_else(|| upstream.host.clone());
    if server_name.trim().is_empty() {
        let message = "must not be empty; unset it to use the upstream host";
        return Err(invalid("tls_server_name", message));
    }
    let ca_file = a
        .tls_ca_file
        .as_deref()
        .map(|p| readable(Setting("tls_ca_file"), p))
        .transpose()?;
    Ok(Some(Tls {
        ca_file,
        server_name,
        client_cert,
    }))
}

fn auth(
    a: &Args,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Auth, Error> {
    let has_password = a.password_env.is_some() || a.password_file.is_some();
    let mode = a
        .auth
        .unwrap_or(match (a.iam_user.is_some(), has_password) {
            (true, true) => AuthMode::IamWithPasswordFallback,
            (true, false) => AuthMode::Iam,
            (false, _) => AuthMode::Password,
        });
    let password = match mode {
        AuthMode::Password | AuthMode::IamWithPasswordFallback => Some(password(a, env)?),
        AuthMode::Iam => {
            if has_password {
                warnings.push(
                    "auth iam never falls back: the password setting is ignored (use iam-with-password-fallback)"
                        .into(),
                );
            }
            None
        }
    };
    let iam = if mode.uses_iam() {
        let required = |name: &'static str, value: &Option<String>, fix: &'static str| match value
            .as_deref()
            .map(str::trim)
        {
            Some(v) if !v.is_empty() => Ok(v.to_ascii_lowercase()),
            _ => Err(Error::Missing {
                setting: Setting(name),
                fix,
            }),
        };
        let user = required(
            "iam_user",
            &a.iam_user,
            "name the ElastiCache user created with --authentication-mode Type=iam",
        )?;
        let cache_name = required(
            "cache_name",
            &a.cache_name,
            "set the replication group id or serverless cache name (not the endpoint host)",
        )?;
        if cache_name.contains('.') || cache_name.contains(':') {
            warnings.push(format!(
                "cache-name {cache_name:?} looks like an endpoint; tokens are signed for the replication group id or serverless cache name"
            ));
        }
        if a.no_tls == Some(true) {
            warnings.push("ElastiCache accepts IAM authentication only over TLS".into());
        }
        Some(Iam {
            user,
            cache_name,
            region: a.region.clone().filter(|r| !r.trim().is_empty()),
            serverless: a.serverless.unwrap_or(false),
            service: a.service.unwrap_or(Service::Elasticache),
        })
    } else {
        if a.iam_user.is_some() || a.cache_name.is_some() {
            warnings.push("auth password: iam-user and cache-name are ignored".into());
        }
        None
    };
    Ok(Auth {
        mode,
        password,
        iam,
    })
}

fn password(a: &Args, env: &dyn Fn(&str) -> Option<String>) -> Result<Password, Error> {
    let (by_env, by_file) = (Setting("password_env"), Setting("password_file"));
    let (secret, source) = secret((by_env, &a.password_env), (by_file, &a.password_file), env)?
        .ok_or(Error::NoPassword(by_env, by_file))?;
    Ok(Password {
        user: a.password_user.clone(),
        secret,
        source,
    })
}

/// A secret named by a pair of settings: an environment variable or a file
/// (never inline). `None` when neither is set.
fn secret(
    (by_env, var): (Setting, &Option<String>),
    (by_file, file): (Setting, &Option<PathBuf>),
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Secret, PasswordSource)>, Error> {
    Ok(Some(match (var, file) {
        (Some(_), Some(_)) => return Err(Error::Conflict(by_env, by_file)),
        (None, None) => return Ok(None),
        (Some(var), None) => match env(var) {
            Some(value) if !value.is_empty() => {
                (Secret::new(value), PasswordSource::Env(var.clone()))
            }
            _ => {
                return Err(Error::PasswordEnv {
                    setting: by_env,
                    var: var.clone(),
                });
            }
        },
        (None, Some(path)) => {
            // The io::Error never contains file contents, so the message cannot leak the password.
            let text = fs::read_to_string(path).map_err(|error| Error::Read {
                setting: by_file,
                path: path.clone(),
                error,
            })?;
            if text.trim_end().is_empty() {
                let message = format!("{} is empty; write the password into it", path.display());
                return Err(Error::Invalid {
                    setting: by_file,
                    message,
                });
            }
            (
                Secret::new(text.trim_end()),
                PasswordSource::File(path.clone()),
            )
        }
    }))
}

#[cfg(test)]
mod tests;

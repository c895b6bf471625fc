//! Command-line and environment configuration. Every flag has an `env` twin so the
//! Helm chart and containers can configure the binary without arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "amperity-operator",
    version,
    about = "Run Amperity workflows from Kubernetes"
)]
pub struct Cli {
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info,amperity_operator=debug`
    /// (default `info`). `LOG_LEVEL` is still read when `RUST_LOG` is not set.
    #[arg(long, env = "RUST_LOG", global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log filter: `--log-level`, else `RUST_LOG` (the ecosystem's habit), else the
    /// older `LOG_LEVEL`, else `info`.
    pub fn log_filter(&self) -> String {
        log_filter(
            self.log_level.as_deref(),
            std::env::var("LOG_LEVEL").ok().as_deref(),
        )
    }
}

fn log_filter(flag_or_rust_log: Option<&str>, legacy: Option<&str>) -> String {
    [flag_or_rust_log, legacy]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|f| !f.is_empty())
        .unwrap_or("info")
        .to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller against the cluster in the current kubeconfig or service account.
    Run(RunArgs),
    /// Print the CustomResourceDefinition YAML.
    Crd,
    /// Serve the Amperity API simulator.
    Simulator(SimulatorArgs),
    /// Run one AmperityWorkflowRun manifest to completion without a cluster.
    Local(LocalArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Namespaces to watch, comma-separated; empty means all namespaces.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Elect a leader among replicas on a Lease; only the leader reconciles.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "LEASE_NAME", default_value = "amperity-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the election (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds the lease stays valid without renewal; a new leader takes over after it.
    #[arg(long, env = "LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// Name of the ConfigMap (in the Lease's namespace) that remembers the runs of
    /// deleted resources for an hour, across restarts of every replica, so that a
    /// lost start's search never adopts one of them.
    #[arg(
        long,
        env = "CLAIMS_CONFIGMAP",
        default_value = "amperity-operator-claims"
    )]
    pub claims_configmap: String,
    /// Reconciles in flight at once; 0 is unbounded. A poll waiting for its turn in
    /// the Amperity budget does not hold a reconcile (it is requeued for its turn), so
    /// reconciles are short and a cap only bounds memory when thousands of runs are
    /// reconciled together (after a restart).
    #[arg(long, env = "CONTROLLER_CONCURRENCY", default_value_t = 64)]
    pub concurrency: u16,
    /// Serve `AmperityConnection` and `ClusterAmperityConnection` (their CRDs and the
    /// RBAC to read them and namespaces must be installed: the chart's
    /// `connections.enabled`). Off, a run naming a connection waits, `ConnectionsDisabled`.
    #[arg(long, env = "AMPERITY_CONNECTIONS", default_value_t = false, action = clap::ArgAction::Set)]
    pub connections: bool,
    /// Seconds before the first retry of a run that failed for a platform reason (doubles per attempt).
    #[arg(long, env = "RETRY_BACKOFF_SECS", default_value_t = 30)]
    pub retry_backoff_secs: u64,
    /// Seconds between re-checks of a stalled resource (missing Secret, rejected token).
    #[arg(long, env = "STALLED_RECHECK_SECS", default_value_t = 30)]
    pub stalled_recheck_secs: u64,
    /// Seconds, from the first search, that the search for a run whose start answer was
    /// lost keeps looking before it asks a person (a run can take a while to be listed).
    #[arg(long, env = "START_SETTLE_SECS", default_value_t = 60)]
    pub start_settle_secs: u64,
    /// Seconds deletion waits for a stop to be accepted before letting the resource go.
    #[arg(long, env = "DELETION_GRACE_SECS", default_value_t = 120)]
    pub deletion_grace_secs: u64,
    /// Seconds a run may stay Stopping before it ends with reason StopUnconfirmed.
    #[arg(long, env = "STOP_GRACE_SECS", default_value_t = 600)]
    pub stop_grace_secs: u64,
    /// Learn which runs ended from one list request per tenant and credential per
    /// cycle (the change feed), besides each run's own polls.
    #[arg(long, env = "AMPERITY_CHANGE_FEED", default_value_t = true, action = clap::ArgAction::Set)]
    pub change_feed: bool,
    #[command(flatten)]
    pub amperity: AmperityArgs,
}

/// Settings of the Amperity client shared by `run` and `local`.
#[derive(Debug, Clone, Args)]
pub struct AmperityArgs {
    /// Requests per second allowed to each tenant (Amperity allows 10).
    #[arg(long, env = "AMPERITY_RATE_LIMIT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub rate_limit: u32,
    /// Base URL used when a resource names no endpoint; `{tenant}` is replaced by the tenant.
    #[arg(
        long,
        env = "AMPERITY_DEFAULT_ENDPOINT",
        default_value = "https://{tenant}.amperity.com/api"
    )]
    pub default_endpoint: String,
    /// api-version header used when a resource names none.
    #[arg(long, env = "AMPERITY_API_VERSION", default_value = "2024-04-01")]
    pub api_version: String,
    /// Base URLs the operator may call, comma-separated: `scheme://host[:port][/path]`;
    /// a leading `*.` in the host matches any subdomain, no port means the scheme's
    /// default port, `:*` any port. Applies to API endpoints and OAuth token URLs alike.
    #[arg(
        long,
        env = "AMPERITY_ALLOWED_ENDPOINTS",
        value_delimiter = ',',
        default_value = "https://*.amperity.com"
    )]
    pub allowed_endpoints: Vec<String>,
    /// PEM file of extra CA certificates to trust (e.g. a TLS-inspecting proxy's).
    #[arg(long, env = "AMPERITY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Root certificates to trust: the bundled Mozilla roots, or the system's store.
    #[arg(long, env = "AMPERITY_TLS_ROOTS", value_enum, default_value_t = TlsRoots::Bundled)]
    pub tls_roots: TlsRoots,
    /// Largest response body accepted from Amperity, in bytes.
    #[arg(long, env = "AMPERITY_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Per-request timeout in seconds.
    #[arg(long, env = "AMPERITY_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout_secs: u64,
}

/// Which root certificates TLS connections to Amperity trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsRoots {
    /// The Mozilla roots compiled into the binary (webpki-roots).
    Bundled,
    /// The operating system's certificate store.
    System,
}

#[derive(Debug, Clone, Args)]
pub struct SimulatorArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, env = "SIM_LISTEN", default_value = "127.0.0.1:8470")]
    pub listen: SocketAddr,
    /// Bearer tokens the simulator accepts, comma-separated.
    #[arg(
        long,
        env = "SIM_TOKENS",
        value_delimiter = ',',
        default_value = "sim-token"
    )]
    pub tokens: Vec<String>,
    /// The tenant id the simulator answers for (amperity-tenant header).
    #[arg(long, env = "SIM_TENANT", default_value = "socktown")]
    pub tenant: String,
    /// Time compression: 10 runs ten times faster than real time.
    #[arg(long, env = "SIM_SPEED", default_value_t = 1.0)]
    pub speed: f64,
    /// Seed for the simulator's randomness (ids, fault draws).
    #[arg(long, env = "SIM_SEED")]
    pub seed: Option<u64>,
    /// OAuth client id the token endpoint accepts.
    #[arg(long, env = "SIM_CLIENT_ID")]
    pub client_id: Option<String>,
    /// OAuth client secret the token endpoint accepts.
    #[arg(long, env = "SIM_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<SecretArg>,
    /// Lifetime of issued OAuth access tokens, in seconds.
    #[arg(long, env = "SIM_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,
    /// Requests per tenant allowed in any 1-second window before 429.
    #[arg(long, env = "SIM_RATE_LIMIT", default_value_t = 10)]
    pub rate_limit: u32,
    /// Share (0 to 1) of requests answered with a 5xx.
    #[arg(long, env = "SIM_FAULT_5XX_RATE", default_value_t = 0.0)]
    pub fault_5xx_rate: f64,
    /// Share (0 to 1) of successful answers sent with a truncated body.
    #[arg(long, env = "SIM_FAULT_MALFORMED_RATE", default_value_t = 0.0)]
    pub fault_malformed_rate: f64,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, env = "SIM_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Answer 429 to every request for this many seconds after start.
    #[arg(long, env = "SIM_THROTTLE_STORM_SECS", default_value_t = 0)]
    pub throttle_storm_secs: u64,
    /// Send Deprecation and Sunset headers on every answer.
    #[arg(long, env = "SIM_DEPRECATION", default_value_t = false)]
    pub deprecation: bool,
    /// How late a start of a `slowstart` config answers, in milliseconds.
    #[arg(long, env = "SIM_SLOW_START_MS", default_value_t = 35_000)]
    pub slow_start_ms: u64,
    /// How long a run of a `listlag` config stays out of lists, in milliseconds.
    #[arg(long, env = "SIM_LIST_LAG_MS", default_value_t = 5_000)]
    pub list_lag_ms: u64,
    /// The OAuth token endpoint answers 503.
    #[arg(long, env = "SIM_TOKEN_UNAVAILABLE", default_value_t = false)]
    pub token_unavailable: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// The AmperityWorkflowRun manifest to run.
    #[arg(short = 'f', long = "file", env = "LOCAL_FILE")]
    pub file: PathBuf,
    /// Run against an embedded Amperity simulator instead of the real API.
    #[arg(long, env = "LOCAL_SIMULATOR", default_value_t = false)]
    pub simulator: bool,
    /// Output: a progress bar on a terminal, lines otherwise, or JSON status objects.
    #[arg(long, env = "LOCAL_OUTPUT", value_enum, default_value_t = LocalOutput::Auto)]
    pub output: LocalOutput,
    /// File holding the Amperity token (instead of the AMPERITY_TOKEN variable).
    #[arg(long, env = "AMPERITY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The Amperity token. Prefer the variable or --token-file: arguments are visible to other users.
    #[arg(long, env = "AMPERITY_TOKEN", hide_env_values = true)]
    pub token: Option<SecretArg>,
    /// Time compression of the embedded simulator (with --simulator).
    #[arg(long, env = "LOCAL_SIMULATOR_SPEED", default_value_t = 2.0)]
    pub simulator_speed: f64,
    /// How long to wait for a stop to be confirmed after Ctrl-C, in seconds.
    #[arg(long, env = "LOCAL_STOP_GRACE_SECS", default_value_t = 60)]
    pub stop_grace_secs: u64,
    #[command(flatten)]
    pub amperity: AmperityArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LocalOutput {
    Auto,
    Text,
    Json,
}

/// A secret given on the command line or in the environment; `Debug` never shows it.
#[derive(Clone)]
pub struct SecretArg(String);

impl SecretArg {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretArg(s.trim().to_string()))
    }
}

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_filter_prefers_the_flag_or_rust_log_then_log_level_then_info() {
        assert_eq!(log_filter(Some("debug"), Some("warn")), "debug");
        assert_eq!(log_filter(None, Some("warn")), "warn");
        assert_eq!(log_filter(Some("  "), Some("warn")), "warn");
        assert_eq!(log_filter(None, None), "info");
        assert_eq!(log_filter(Some(""), Some("")), "info");
    }

    #[test]
    fn the_claims_ledger_flag_defaults_to_the_ledgers_own_name() {
        // The chart's test reads the flag's literal; the ledger keeps its own copy.
        let cli = Cli::try_parse_from(["amperity-operator", "run"]).expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        if std::env::var_os("CLAIMS_CONFIGMAP").is_none() {
            assert_eq!(args.claims_configmap, crate::run::ledger::DEFAULT_CONFIGMAP);
        }
    }

    #[test]
    fn rust_log_sets_the_filter() {
        let cli = Cli::try_parse_from(["amperity-operator", "crd"]);
        // The flag's env twin is RUST_LOG; an explicit flag wins over both.
        let cli = cli.expect("parses");
        assert_eq!(
            cli.log_level.as_deref(),
            std::env::var("RUST_LOG").ok().as_deref()
        );
        let cli = Cli::try_parse_from(["amperity-operator", "--log-level", "trace", "crd"])
            .expect("parses");
        assert_eq!(cli.log_filter(), "trace");
    }
}

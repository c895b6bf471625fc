//! Command-line and environment configuration. Every flag has an `env` twin so the
//! Helm chart and containers can configure the binary without arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "amperity-operator", version, about = "Run Amperity workflows from Kubernetes")]
pub struct Cli {
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info,amperity_operator=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
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
    #[arg(long, env = "AMPERITY_DEFAULT_ENDPOINT", default_value = "https://{tenant}.amperity.com/api")]
    pub default_endpoint: String,
    /// api-version header used when a resource names none.
    #[arg(long, env = "AMPERITY_API_VERSION", default_value = "2024-04-01")]
    pub api_version: String,
    /// Allow plain-http endpoints that are not on loopback (for in-cluster test doubles).
    #[arg(long, env = "AMPERITY_ALLOW_INSECURE_HTTP", default_value_t = false)]
    pub allow_insecure_http: bool,
    /// Per-request timeout in seconds.
    #[arg(long, env = "AMPERITY_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct SimulatorArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, env = "SIM_LISTEN", default_value = "127.0.0.1:8470")]
    pub listen: SocketAddr,
    /// Bearer tokens the simulator accepts, comma-separated.
    #[arg(long, env = "SIM_TOKENS", value_delimiter = ',', default_value = "sim-token")]
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
    #[command(flatten)]
    pub amperity: AmperityArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LocalOutput {
    Auto,
    Text,
    Json,
}

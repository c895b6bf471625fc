use std::process::ExitCode;

use amperity_operator::cli::{Cli, Command};
use amperity_operator::cluster::operator;
use amperity_operator::{crd_yaml, local, memory, sim, telemetry};
use clap::Parser;

fn main() -> ExitCode {
    memory::limit_arenas();
    let cli = Cli::parse();
    telemetry::init(cli.log_format, &cli.log_filter());
    // Two workers whatever the node's core count: the work is waiting on the
    // network (well under a core at 10,000 runs), and every worker thread costs
    // stack and allocator memory.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
        .block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd => {
            print!("{}", crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => report(operator::run(args).await),
        Command::Simulator(args) => report(sim::run(args).await),
        Command::Local(args) => local::run(args).await,
    }
}

fn report<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

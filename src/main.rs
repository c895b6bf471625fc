use std::process::ExitCode;

use amperity_operator::cli::{Cli, Command};
use amperity_operator::{crd_yaml, local, operator, sim, telemetry};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, &cli.log_level);
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

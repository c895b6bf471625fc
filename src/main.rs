use std::process::ExitCode;

use amperity_operator::cli::{Cli, Command};
use amperity_operator::{crd_yaml, telemetry};
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
        _ => {
            eprintln!("not wired yet");
            ExitCode::FAILURE
        }
    }
}

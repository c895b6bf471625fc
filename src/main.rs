use clap::Parser;

fn main() {
    let _cli = amperity_operator::cli::Cli::parse();
}

use std::process::ExitCode;

use clap::Parser;
use demarc_probe::{cli::Cli, run};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match run::run(cli) {
        Ok(s) => {
            eprint!("{}", demarc_agent::probe::exit_report("demarc-probe", &s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demarc-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

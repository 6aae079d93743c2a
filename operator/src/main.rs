//! `zori-operator`: `run` the controller, or print the `crd`.

use std::process::ExitCode;

use clap::Parser;
use zori_operator::{
    cli::{Cli, Command},
    controller, crd,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            let settings = match args.validate() {
                Ok(s) => s,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            zori_service::telemetry::init("info,kube=warn");
            match controller::run(settings).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

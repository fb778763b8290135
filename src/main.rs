//! capi-calico-webhook binary: parse the command line and run.
use clap::Parser;

use capi_calico_webhook::cli::{Cli, Command, run_bundle, run_check, run_render};

fn main() {
    let cli = Cli::parse();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let code = match cli.command {
        Command::Check(args) => run_check(&args, &mut out, &mut err),
        Command::Render(args) => run_render(&args, &mut out, &mut err),
        Command::Bundle(args) => run_bundle(&args, &mut out, &mut err),
        Command::Serve(_) => {
            eprintln!("serve: not wired yet");
            2
        }
    };
    std::process::exit(code);
}

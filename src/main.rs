//! capi-calico-webhook binary: parse the command line and run.
use clap::Parser;

/// The binary's allocator (the same one the benchmarks measure).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use capi_calico_webhook::cli::{Cli, Command, run_bundle, run_check, run_render, run_serve};

fn main() {
    // One TLS crypto provider for the whole process (ring, as kube uses); ignore a second install.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let code = match cli.command {
        Command::Check(args) => run_check(&args, &mut out, &mut err),
        Command::Render(args) => run_render(&args, &mut out, &mut err),
        Command::Bundle(args) => run_bundle(&args, &mut out, &mut err),
        Command::Serve(args) => {
            drop((out, err));
            run_serve(&args)
        }
    };
    std::process::exit(code);
}

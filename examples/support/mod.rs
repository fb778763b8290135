//! What the benchmark responders share: the uid read (the baseline's whole policy), the answer records, the
//! command line and the start-up on the webhook's own transport. Not an example by itself (no `main`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use capi_calico_webhook::admission::api::{Decision, Outcome, ReviewHandler, ReviewReply};
use capi_calico_webhook::server::{self, ServerConfig, TlsSource};

mod uid;
pub use uid::uid_of;

/// An HTTP 400 answer with `message` as the error.
pub fn bad_request(message: &str) -> ReviewReply {
    ReviewReply {
        status: 400,
        body: serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default(),
        decision: decision(String::new(), Outcome::Error),
    }
}

/// The decision record the server logs and counts.
pub fn decision(uid: String, outcome: Outcome) -> Decision {
    Decision {
        uid,
        outcome,
        ..Decision::empty()
    }
}

/// The command line: `--listen HOST:PORT`, `--self-signed-dir DIR`, and any repeated `--body FILE` when `bodies`
/// is allowed; anything else prints `usage` and exits with 2.
pub struct Args {
    pub listen: SocketAddr,
    pub dir: PathBuf,
    pub bodies: Vec<PathBuf>,
}

pub fn args(default_port: u16, name: &str, usage: &str, bodies_allowed: bool) -> Args {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], default_port)),
        dir: std::env::temp_dir().join(format!("capi-calico-{name}-tls")),
        bodies: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(v)) => match v.parse() {
                Ok(listen) => parsed.listen = listen,
                Err(e) => exit_usage(usage, &format!("--listen {v}: {e}")),
            },
            ("--self-signed-dir", Some(v)) => parsed.dir = PathBuf::from(v),
            ("--body", Some(v)) if bodies_allowed => parsed.bodies.push(PathBuf::from(v)),
            _ => exit_usage(usage, &format!("unexpected argument {arg}")),
        }
    }
    parsed
}

fn exit_usage(usage: &str, problem: &str) -> ! {
    fail(&format!("{problem}\nusage: {usage}"))
}

/// Print `error: message` and exit with 2 (bad invocation or input).
pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2);
}

/// Serve `handler` like `capi-calico-webhook serve`: rustls with ring, JSON logs, a self-signed certificate in
/// `args.dir`, no metrics port, tokio multi-thread (one worker per CPU it may run on); stops on SIGTERM / Ctrl-C.
pub fn serve<H: ReviewHandler>(args: &Args, handler: H) {
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: a rustls crypto provider is already installed");
        std::process::exit(1);
    }
    server::init_logging(server::LogFormat::Json);
    let config = ServerConfig {
        listen: args.listen,
        metrics_listen: None,
        tls: TlsSource::SelfSigned {
            dir: args.dir.clone(),
        },
        ..ServerConfig::default()
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(server::run(
                    config,
                    Arc::new(handler),
                    server::shutdown_signal(),
                ))
                .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

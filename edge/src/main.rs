//! The `edge` binary: `edge serve` runs the edge cache, `edge check` validates a config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edge::{EdgeConfig, EdgeServer};

#[derive(Parser)]
#[command(
    name = "edge",
    version,
    about = "Edge cache server for HLS/DASH over HTTPS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve. Without --config, the embedded defaults: TLS on 127.0.0.1:8443 with data/edge/tls/{cert,key}.pem,
    /// admin on 127.0.0.1:9901, the origin at http://127.0.0.1:8080, the cache under data/edge/cache.
    Serve {
        /// TOML config file (see configs/edge.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file, then exit: 0 when usable, 1 with the offending field.
    Check { config: PathBuf },
}

fn main() -> ExitCode {
    shared::tls::install_crypto_provider();
    let cli = Cli::parse();
    let (path, check_only) = match cli.command {
        Command::Serve { config } => (config, false),
        Command::Check { config } => (Some(config), true),
    };
    let config = match &path {
        Some(path) => EdgeConfig::load(path),
        None => Ok(EdgeConfig::default()),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("edge: {e}");
            return ExitCode::FAILURE;
        }
    };
    if check_only {
        println!("edge: config ok");
        return ExitCode::SUCCESS;
    }
    shared::logging::init(config.log.format, &config.log.level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("edge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match EdgeServer::bind(config).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("edge: {e}");
                return ExitCode::FAILURE;
            }
        };
        match server.run(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edge: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

//! The `origin` binary: `origin serve` runs the media origin, `origin check` validates a config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use origin::{Origin, OriginConfig};

#[derive(Parser)]
#[command(
    name = "origin",
    version,
    about = "Media origin over object storage (and, later, the control plane)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve media. Without --config, the embedded defaults: media on 127.0.0.1:8080, admin on 127.0.0.1:9900,
    /// objects from ./data/objects.
    Serve {
        /// TOML config file (see configs/origin.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and the store it names, then exit: 0 when usable, 1 with the offending field.
    Check {
        /// TOML config file.
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    shared::tls::install_crypto_provider();
    let cli = Cli::parse();
    let (config_path, check_only) = match cli.command {
        Command::Serve { config } => (config, false),
        Command::Check { config } => (Some(config), true),
    };
    let config = match &config_path {
        Some(path) => OriginConfig::load(path),
        None => Ok(OriginConfig::default()),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("origin: {e}");
            return ExitCode::FAILURE;
        }
    };
    if check_only {
        return match origin::store::Store::open(&config) {
            Ok(store) => {
                println!("origin: config ok (store {})", store.description);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("origin: {e}");
                ExitCode::FAILURE
            }
        };
    }
    shared::logging::init(config.log.format, &config.log.level);
    shared::serve::run_server("origin", async {
        Origin::bind(config)
            .await?
            .run(shared::serve::shutdown_signal())
            .await
    })
}

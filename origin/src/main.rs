//! The `origin` binary: `origin serve` runs the media origin and the control plane's API, `origin check` validates
//! a config, `origin ingest` uploads and registers a packaged title, `origin takedown` withdraws one, `origin report` summarises playback quality.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use origin::{Origin, OriginConfig};

#[derive(Parser)]
#[command(
    name = "origin",
    version,
    about = "Media origin over object storage, and the control plane (catalog, playback API)"
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
    /// Upload a packaged title (HLS/DASH folders, MP4 renditions) to the store and register it in the catalog.
    /// Every file a manifest references is checked first; a broken folder is refused and nothing is written.
    Ingest {
        /// The packaged title's folder.
        dir: PathBuf,
        /// The slug the title is stored and listed under (`titles/<slug>/`).
        #[arg(long)]
        title: String,
        /// Descriptive title metadata (JSON, as `meta.json`: title, year, cast, …); packagings and renditions
        /// always come from the manifests. Default: DIR/meta.json if present, else the slug alone.
        #[arg(long)]
        meta: Option<PathBuf>,
        /// TOML config file naming the store and the catalog.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Print the quality of experience of the playback events on the bus over the last `--since`: per title
    /// (sessions, startup, stall ratio, average bitrate, switches, errors, abandonment), per edge and per region.
    Report {
        /// How far back: `90s`, `30m`, `24h`, `7d`.
        #[arg(long, default_value = "24h", value_parser = parse_span)]
        since: std::time::Duration,
        /// TOML config file naming the bus.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Take a title down: it leaves lists, search and playback, the media origin answers 410 for its objects,
    /// and every registered edge purges `/titles/<slug>/` (they read the change from the control plane). The
    /// objects stay in the store; `--restore` brings the title back.
    Takedown {
        /// The title's slug.
        slug: String,
        /// Bring a taken-down title back instead.
        #[arg(long)]
        restore: bool,
        /// Why (kept in the catalog).
        #[arg(long, default_value = "")]
        reason: String,
        /// TOML config file naming the catalog and the bus.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    shared::tls::install_crypto_provider();
    let cli = Cli::parse();
    let (config_path, check_only) = match cli.command {
        Command::Serve { config } => (config, false),
        Command::Check { config } => (Some(config), true),
        Command::Ingest {
            dir,
            title,
            meta,
            config,
            quiet,
        } => return ingest(&dir, &title, meta.as_deref(), config.as_deref(), quiet),
        Command::Report { since, config } => return report(since, config.as_deref()),
        Command::Takedown {
            slug,
            restore,
            reason,
            config,
        } => return takedown(&slug, restore, &reason, config.as_deref()),
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
        return match origin::media::store::Store::open(&config) {
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
    // Per media or API connection a descriptor; store connections and listeners besides.
    let needed = config.media.max_connections as u64 * 2 + 256;
    shared::serve::raise_open_file_limit(needed, "media.max_connections");
    shared::serve::run_server("origin", async {
        Origin::bind(config)
            .await?
            .run(shared::serve::shutdown_signal())
            .await
    })
}

/// The config at `path`, or the embedded defaults; an unreadable one is reported.
fn load_config(path: Option<&std::path::Path>) -> Result<OriginConfig, ExitCode> {
    path.map(OriginConfig::load)
        .unwrap_or_else(|| Ok(OriginConfig::default()))
        .map_err(|e| {
            eprintln!("origin: {e}");
            ExitCode::FAILURE
        })
}

/// Publishes a change the catalog already holds to the bus, for the control plane's consumers.
async fn announce(
    config: &OriginConfig,
    change: origin::control::changes::CatalogChange,
) -> Result<(), String> {
    let bus = origin::bus::Bus::open(&config.bus, &config.data_dir)
        .await
        .map_err(|e| format!("bus (bus.url): {e}"))?;
    origin::control::changes::publish(&bus, &change)
        .await
        .map_err(|e| format!("the catalog changed but the change could not be published: {e}"))
}

/// `90s`, `30m`, `24h`, `7d`: a span of time.
fn parse_span(text: &str) -> Result<std::time::Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a span such as 90s, 30m, 24h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit is s, m, h or d")),
    };
    n.checked_mul(secs)
        .filter(|s| *s > 0)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is not a positive span"))
}

fn report(since: std::time::Duration, config: Option<&std::path::Path>) -> ExitCode {
    let config = match load_config(config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        let bus = origin::bus::Bus::open(&config.bus, &config.data_dir)
            .await
            .map_err(|e| format!("bus (bus.url): {e}"))?;
        origin::control::qoe::report(&bus, since)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("origin report: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn takedown(slug: &str, restore: bool, reason: &str, config: Option<&std::path::Path>) -> ExitCode {
    let config = match load_config(config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        let catalog = origin::control::catalog::Catalog::open(&config.catalog_url())
            .await
            .map_err(|e| e.to_string())?;
        let now = origin::bus::now_ms();
        let seq = catalog
            .set_taken_down(slug, !restore, reason, now / 1000)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no title `{slug}` in the catalog"))?;
        let kind = if restore {
            origin::control::changes::ChangeKind::Restored
        } else {
            origin::control::changes::ChangeKind::TakenDown
        };
        // Published even when the state did not change: a run that failed to publish can be repeated.
        let change = origin::control::changes::CatalogChange {
            kind,
            slug: slug.to_string(),
            at_ms: now,
            seq,
        };
        announce(&config, change).await?;
        Ok::<_, String>(seq.is_some())
    });
    match result {
        Ok(changed) => {
            let what = if restore { "restored" } else { "taken down" };
            let note = if changed { "" } else { " (it already was)" };
            println!("origin takedown: {slug}: {what}{note}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("origin takedown: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn ingest(
    dir: &std::path::Path,
    slug: &str,
    meta: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
    quiet: bool,
) -> ExitCode {
    let config = match load_config(config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let plan = match origin::control::ingest::plan(dir, slug, meta) {
        Ok(plan) => plan,
        Err(reason) => {
            eprintln!("origin ingest: refused: {reason}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        let store = origin::media::store::Store::open(&config).map_err(|e| e.to_string())?;
        let catalog = origin::control::catalog::Catalog::open(&config.catalog_url())
            .await
            .map_err(|e| e.to_string())?;
        let (files, bytes, manifests) =
            (plan.files.len(), plan.total_bytes(), plan.manifests.len());
        origin::control::ingest::run(plan, dir, store.inner(), &catalog, !quiet).await?;
        let change = origin::control::changes::CatalogChange {
            kind: origin::control::changes::ChangeKind::Upserted,
            slug: slug.to_string(),
            at_ms: origin::bus::now_ms(),
            seq: None,
        };
        announce(&config, change).await?;
        Ok::<_, String>((files, bytes, manifests))
    });
    match result {
        Ok((files, bytes, manifests)) => {
            println!(
                "origin ingest: {slug}: {files} files ({bytes} bytes, {manifests} manifests checked) uploaded and registered"
            );
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("origin ingest: {reason}");
            ExitCode::FAILURE
        }
    }
}

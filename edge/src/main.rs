//! The `edge` binary: `edge serve` runs the edge cache, `edge check` validates a config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edge::{EdgeConfig, EdgeServer};

/// jemalloc instead of glibc's malloc: the hit path allocates and frees small buffers per request, and under
/// manifest load glibc's malloc and free were 8 % of the edge's CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start. Allocations of 1 MiB or more (cache slices filled or read from disk)
/// go to jemalloc's arena for huge allocations, which returns freed pages at once: with the default 10 s decay
/// for all sizes, evicted slices stayed resident and the memory tier's bound (RSS <= tier + 64 MiB,
/// `edge/tests/memory.rs`) broke by 120 MiB. Smaller sizes keep the default decay: purging them at once made
/// QUIC's per-packet buffers fault their pages in again, a quarter of the CPU under HTTP/3.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_OPTIONS: &[u8; 26] = b"oversize_threshold:131072\0";

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
    /// Validate a config file and the certificate it names, then exit: 0 when usable, 1 with the offending
    /// field.
    Check { config: PathBuf },
    /// Make a local CA and a certificate for localhost, 127.0.0.1 and ::1 (ca.pem, cert.pem, key.pem in DIR),
    /// for first runs and tests. Clients trust ca.pem. Existing files are kept unless --force.
    Cert {
        /// Output folder.
        #[arg(long, default_value = "data/edge/tls")]
        out: PathBuf,
        /// Validity in days (browsers pinning a certificate by hash accept at most 14).
        #[arg(long, default_value_t = 13)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Allocations from this size up are always mmapped and given back to the OS when freed.
const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

fn main() -> ExitCode {
    edge::allocator::set_in_use();
    // glibc raises its mmap threshold each time a large block is freed, after which the 2 MiB slices the cache
    // churns through come from the heap arenas and fragment them: resident memory then grows far past the
    // memory tier (measured: 359 MiB with a 256 MiB tier, 303 MiB with a fixed threshold). Fix the threshold.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
    // A write past the file size limit (`ulimit -f`) would kill the process; let it fail instead, as a failed
    // write the disk tier survives.
    // SAFETY: ignoring a signal before any other thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    shared::tls::install_crypto_provider();
    let cli = Cli::parse();
    let (path, check_only) = match cli.command {
        Command::Serve { config } => (config, false),
        Command::Check { config } => (Some(config), true),
        Command::Cert { out, days, force } => return make_cert(&out, days, force),
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
        if config.tls_addr().ok().flatten().is_some()
            && let Err(e) = shared::tls::ReloadableCert::load(&config.tls_cert(), &config.tls_key())
        {
            eprintln!("edge: invalid config: `tls.cert`: {e}");
            return ExitCode::FAILURE;
        }
        if let Err(e) =
            edge::cache::storage::check_disk_space(&config.disk_dir(), config.cache.disk_bytes)
        {
            eprintln!("edge: invalid config: {e}");
            return ExitCode::FAILURE;
        }
        println!("edge: config ok");
        return ExitCode::SUCCESS;
    }
    shared::logging::init(config.log.format, &config.log.level);
    // Per client connection a descriptor, and up to one upstream; the disk tier's files and listeners besides.
    let needed = config.limits.max_connections as u64 * 2 + 256;
    shared::serve::raise_open_file_limit(needed, "limits.max_connections");
    shared::serve::run_server("edge", async {
        EdgeServer::bind(config)
            .await?
            .run(shared::serve::shutdown_signal())
            .await
    })
}

fn make_cert(out: &std::path::Path, days: u32, force: bool) -> ExitCode {
    let files = ["ca.pem", "cert.pem", "key.pem"].map(|f| out.join(f));
    if !force && files.iter().all(|f| f.exists()) {
        println!("edge: keeping the certificate in {}", out.display());
        return ExitCode::SUCCESS;
    }
    let made = match shared::tls::generate_self_signed(&["localhost", "127.0.0.1", "::1"], days) {
        Ok(made) => made,
        Err(e) => {
            eprintln!("edge: cannot make a certificate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let written = std::fs::create_dir_all(out).and_then(|()| {
        std::fs::write(&files[0], made.ca_pem)?;
        std::fs::write(&files[1], made.chain_pem)?;
        std::fs::write(&files[2], made.key_pem)
    });
    match written {
        Ok(()) => {
            println!("edge: wrote {} (trust ca.pem in clients)", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edge: cannot write {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

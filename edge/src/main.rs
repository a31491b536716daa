//! The `edge` binary: the cache server players fetch segments from. Its serving pipeline is issue 3; this
//! binary only reports its version until then.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "edge",
    version,
    about = "Edge cache server for HLS/DASH (serving arrives with issue 3)"
)]
struct Cli {}

fn main() {
    Cli::parse();
    eprintln!("edge: the serving pipeline is not built yet (issue 3); see README.md");
    std::process::exit(2);
}

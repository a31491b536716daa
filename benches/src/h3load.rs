//! h3load: an HTTP/3 load generator (quinn + h3), because neither h2load nor wrk speak HTTP/3 here.
//!
//! `h3load --ca CA.pem --connections 8 --streams 4 --duration 10 [--server-pid PID] URL [URL…]` opens N QUIC
//! connections, keeps M requests in flight on each for the duration (URLs taken round-robin), and prints
//! requests/s, Gb/s, time-to-first-byte p50/p99 (request sent → response head), the load generator's CPU and,
//! with `--server-pid`, the server's CPU and requests per server CPU-second; the last line is JSON.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use clap::Parser;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[derive(Parser)]
#[command(about = "HTTP/3 load generator")]
struct Args {
    /// URLs to GET, round-robin (same host and port).
    #[arg(required = true)]
    urls: Vec<String>,
    /// CA certificate (PEM) to trust.
    #[arg(long)]
    ca: PathBuf,
    /// QUIC connections.
    #[arg(long, short = 'c', default_value_t = 8)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, short = 'm', default_value_t = 4)]
    streams: usize,
    /// Seconds of load.
    #[arg(long, short = 'D', default_value_t = 10.0)]
    duration: f64,
    /// The server's process id, to report its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    bytes: u64,
    ttfb_ms: Vec<f64>,
}

fn main() -> anyhow::Result<()> {
    shared::tls::install_crypto_provider();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let first: http::Uri = args.urls[0].parse()?;
    let host = first
        .host()
        .ok_or_else(|| anyhow::anyhow!("URL without host"))?
        .to_string();
    let port = first.port_u16().unwrap_or(443);
    let addr: SocketAddr = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("no address"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca)? {
        roots.add(cert?)?;
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window((16u32 << 20).into())
        .receive_window((64u32 << 20).into());
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    ));
    client.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
    endpoint.set_default_client_config(client);

    let paths: Arc<Vec<http::Uri>> = Arc::new(
        args.urls
            .iter()
            .map(|u| u.parse())
            .collect::<Result<_, _>>()?,
    );
    let server_cpu_before = args.server_pid.map(cpu_seconds_of);
    let client_cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    let mut connections = Vec::new();
    for c in 0..args.connections {
        let conn = endpoint.connect(addr, &host)?.await?;
        connections.push(conn.clone());
        let (mut driver, send_request) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
        tokio::spawn(async move { futures::future::poll_fn(|cx| driver.poll_close(cx)).await });
        for s in 0..args.streams {
            let (mut send_request, paths) = (send_request.clone(), Arc::clone(&paths));
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut next = c * 7919 + s * 104729;
                while Instant::now() < deadline {
                    let uri = paths[next % paths.len()].clone();
                    next += 1;
                    let sent = Instant::now();
                    match fetch(&mut send_request, uri).await {
                        Ok((ttfb, bytes)) => {
                            tally.requests += 1;
                            tally.bytes += bytes;
                            tally.ttfb_ms.push((ttfb - sent).as_secs_f64() * 1000.0);
                        }
                        Err(_) => tally.errors += 1,
                    }
                }
                tally
            }));
        }
    }
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await?;
        total.requests += t.requests;
        total.errors += t.errors;
        total.bytes += t.bytes;
        total.ttfb_ms.extend(t.ttfb_ms);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let client_cpu = own_cpu_seconds() - client_cpu_before;
    let server_cpu = args
        .server_pid
        .zip(server_cpu_before)
        .map(|(pid, before)| cpu_seconds_of(pid) - before);
    total.ttfb_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        total
            .ttfb_ms
            .get(
                ((total.ttfb_ms.len() as f64 * p) as usize)
                    .min(total.ttfb_ms.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or(0.0)
    };
    // What the server's packets looked like: datagrams received (a GSO/GRO batch counts once per datagram
    // it carried) and their mean size; and the path MTU this client's own discovery reached for its sends.
    let (mut datagrams, mut datagram_bytes, mut mtu) = (0u64, 0u64, 0u16);
    for conn in &connections {
        let stats = conn.stats();
        datagrams += stats.udp_rx.datagrams;
        datagram_bytes += stats.udp_rx.bytes;
        mtu = mtu.max(stats.path.current_mtu);
    }
    let mean_datagram = datagram_bytes.checked_div(datagrams).unwrap_or(0);
    let rps = total.requests as f64 / elapsed;
    let gbps = total.bytes as f64 * 8.0 / elapsed / 1e9;
    let per_core = server_cpu
        .filter(|c| *c > 0.0)
        .map(|c| total.requests as f64 / c);
    println!(
        "h3load: {} requests ({} errors) in {elapsed:.1}s: {rps:.0} req/s, {gbps:.2} Gb/s, ttfb p50 {:.2} ms p99 {:.2} ms, \
         client CPU {client_cpu:.2}s, server CPU {}, {} req per server CPU-second; {datagrams} datagrams \
         received, mean {mean_datagram} bytes, path MTU {mtu}",
        total.requests,
        total.errors,
        pct(0.5),
        pct(0.99),
        server_cpu.map_or("-".into(), |c| format!("{c:.2}s")),
        per_core.map_or("-".into(), |p| format!("{p:.0}")),
    );
    println!(
        "{}",
        serde_json::json!({
            "requests": total.requests, "errors": total.errors, "seconds": elapsed, "req_per_s": rps, "gbit_per_s": gbps,
            "ttfb_p50_ms": pct(0.5), "ttfb_p99_ms": pct(0.99), "client_cpu_s": client_cpu,
            "server_cpu_s": server_cpu, "req_per_server_cpu_s": per_core,
            "datagrams_received": datagrams, "mean_datagram_bytes": mean_datagram, "path_mtu": mtu,
        })
    );
    endpoint.close(0u32.into(), b"done");
    Ok(())
}

/// One GET; returns when the response head arrived and the body length.
async fn fetch(
    send_request: &mut h3::client::SendRequest<h3_quinn::OpenStreams, bytes::Bytes>,
    uri: http::Uri,
) -> anyhow::Result<(Instant, u64)> {
    let request = http::Request::get(uri).body(())?;
    let mut stream = send_request.send_request(request).await?;
    stream.finish().await?;
    let response = stream.recv_response().await?;
    let head_at = Instant::now();
    anyhow::ensure!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let mut bytes = 0u64;
    while let Some(chunk) = stream.recv_data().await? {
        bytes += chunk.remaining() as u64;
    }
    Ok((head_at, bytes))
}

fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// User + system CPU seconds of a process (all its threads), from /proc.
fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

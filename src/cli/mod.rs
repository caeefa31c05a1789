//! The command line: `wif-proxy [run]`, `check`, `ranges`, `doctor`,
//! `refresh`, `export` and `status`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use wif_proxy::config::Config;
use wif_proxy::Routes;
use wif_proxy::Server;
use wif_proxy::Shared;
use wif_proxy::Upstream;

mod admin;
mod doctor;
mod export;
mod refresh;
mod status;

#[derive(Debug, Parser)]
#[command(
    name = "wif-proxy",
    version,
    about = "Publishes only the OIDC discovery documents and key sets of a workload-identity issuer."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, default_value = "/etc/wif-proxy/proxy.toml")]
    pub config: PathBuf,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and print exactly what will be exposed.
    Check,
    /// Load the ip_allow sources; print their prefix counts and, for each IP
    /// given, whether it is allowed and by which source and prefix.
    Ranges {
        /// Addresses to classify.
        ips: Vec<std::net::IpAddr>,
    },
    /// Check a public issuer exactly as AWS, GCP and Azure will, and print
    /// the commands that make them trust it. Exit code 0: nothing failed;
    /// 1: something failed; 2: usage error.
    Doctor {
        /// Issuer URL, e.g. https://wif.example.com/v1/identity/oidc/plugins.
        /// Without it, every issuer that --config publishes is checked.
        issuer: Option<String>,
        /// Trust these PEM roots instead of the system's.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Whose rules to apply and print commands for.
        #[arg(long, value_enum, default_value_t = doctor::Provider::All)]
        provider: doctor::Provider,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Connect to ADDR:PORT for HOST:PORT, like curl (check before DNS points here).
        #[arg(long = "connect-to", value_parser = doctor::parse_connect_to)]
        connect_to: Vec<(String, u16, std::net::SocketAddr)>,
        /// Audience for the printed commands (defaults per provider).
        #[arg(long)]
        audience: Option<String>,
    },
    /// Refetch every document now, bypassing freshness (`POST /refresh` on
    /// the admin listener): after an emergency key rotation. Exit code 0:
    /// all refetched; 1: a document failed or the proxy refused; 2: usage.
    Refresh {
        /// Only this issuer's documents.
        #[arg(long)]
        issuer: Option<String>,
        /// The admin listener's address (default: server.admin_listen of --config).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Print the proxy's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Fetch and validate every listed document as the proxy does and write
    /// them under DIR at their public paths, with DIR/manifest.json, for a
    /// static mirror (bucket + CDN). All or nothing: exit code 1 leaves DIR
    /// as it was.
    Export {
        /// The directory to (re)place.
        #[arg(long)]
        out: PathBuf,
        /// What to write.
        #[arg(long, value_enum, default_value_t = export::ExportFormat::Files)]
        format: export::ExportFormat,
    },
    /// Print the running proxy's status page for a terminal: listeners and
    /// certificates, every document's state, and which ip_allow source last
    /// fetched which key set. Asks the admin listener of --config.
    Status {
        /// Ask this admin address instead of --config's server.admin_listen.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Print /status.json as it came.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Check) => check(&cli.config),
        Some(Command::Ranges { ips }) => ranges(&cli.config, ips),
        Some(Command::Doctor { issuer, ca, provider, json, connect_to, audience }) => {
            let opts = doctor::Options {
                provider: *provider,
                ca: ca.clone(),
                connect_to: connect_to.clone(),
                audience: audience.clone(),
            };
            doctor(&cli.config, issuer.as_deref(), &opts, *json)
        }
        Some(Command::Refresh { issuer, admin, json }) => refresh::run(&cli.config, issuer.as_deref(), *admin, *json),
        Some(Command::Export { out, format }) => export::run(&cli.config, out, *format),
        Some(Command::Status { admin, json }) => status::status(&cli.config, *admin, *json),
        None | Some(Command::Run) => run(&cli),
    }
}

/// Logs go to stderr from one thread (`accesslog`): requests never wait for
/// a `write`, access lines are formatted there, and `tracing` events share
/// the same writer. The guard flushes on exit.
fn init_logging(format: LogFormat) -> Option<wif_proxy::log::Guard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WIF_PROXY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let guard = match wif_proxy::log::start(match format {
        LogFormat::Text => wif_proxy::log::Format::Text,
        LogFormat::Json => wif_proxy::log::Format::Json,
    }) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("warning: no log thread ({e}); logging directly to stderr");
            None
        }
    };
    // Library events pass within their own budget, so no peer can make us
    // write a line per connection (see `within_budget`).
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::prelude::*;
    let filter = filter.and(filter_fn(wif_proxy::log::within_budget));
    let layer = tracing_subscriber::fmt::layer().with_writer(wif_proxy::log::LogWriter).with_ansi(ansi);
    match format {
        LogFormat::Json => {
            tracing_subscriber::registry().with(layer.json().flatten_event(true).with_filter(filter)).init()
        }
        LogFormat::Text => tracing_subscriber::registry().with(layer.with_filter(filter)).init(),
    }
    guard
}

/// `wif-proxy check`: everything start-up validates, plus the exposure list.
fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let routes = match Routes::build(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    for issuer in &config.issuers {
        if let Err(e) = Upstream::new(issuer) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let s = &config.server;
    println!("{}: configuration is valid", path.display());
    let tls = match config.tls.mode {
        wif_proxy::config::TlsMode::Off => "plain HTTP".to_string(),
        wif_proxy::config::TlsMode::Files => {
            format!("TLS from {} certificate file pair(s)", config.tls.certificates.len())
        }
        wif_proxy::config::TlsMode::Acme => {
            let domains = config.tls.acme.as_ref().map(|a| a.domains.join(", ")).unwrap_or_default();
            format!("TLS via ACME for {domains}")
        }
    };
    println!(
        "public listener {} ({tls}), admin listener {} (/healthz, /readyz, /metrics, POST /refresh, status page /)",
        s.listen, s.admin_listen
    );
    if let Some(http) = &config.tls.http_listen {
        println!("plain-HTTP listener {http}: ACME HTTP-01 and 308 redirects to https for the paths below");
    }
    println!("public URL {}", s.public_url);
    println!();
    println!("Exposed (exact request targets; anything else is answered by the proxy and never forwarded):");
    print!("{}", routes.describe(&config));
    ExitCode::SUCCESS
}

/// `wif-proxy doctor`.
fn doctor(config_path: &Path, issuer: Option<&str>, opts: &doctor::Options, json: bool) -> ExitCode {
    let issuers: Vec<String> = match issuer {
        Some(i) => vec![i.to_string()],
        None => {
            let config = match Config::load(config_path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: give an issuer URL, or a valid --config: {e}");
                    return ExitCode::from(2);
                }
            };
            let routes = match Routes::build(&config) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {}: {e}", config_path.display());
                    return ExitCode::from(2);
                }
            };
            routes
                .routes
                .iter()
                .filter(|r| r.kind == wif_proxy::DocKind::Discovery)
                .map(|r| wif_proxy::expected(&config.issuers[r.issuer], &r.path).issuer)
                .collect()
        }
    };
    let Some(runtime) = one_thread_runtime() else { return ExitCode::FAILURE };
    let reports: Vec<doctor::Report> =
        runtime.block_on(async { futures_util::future::join_all(issuers.iter().map(|i| doctor::run(i, opts))).await });
    let failed = reports.iter().any(|r| r.failed());
    if json {
        let value = match (issuer, reports.as_slice()) {
            (Some(_), [one]) => serde_json::to_value(one),
            _ => serde_json::to_value(&reports),
        };
        println!("{}", value.map(|v| serde_json::to_string_pretty(&v).unwrap_or_default()).unwrap_or_default());
    } else {
        for r in &reports {
            println!("{}", r.render());
        }
        println!("{}", if failed { "result: FAIL" } else { "result: ok" });
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The runtime of a command that waits on the network once; `None` (said on
/// stderr) when it cannot start.
fn one_thread_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

/// `wif-proxy ranges`: what the source-address allowlist contains.
fn ranges(path: &Path, ips: &[std::net::IpAddr]) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = one_thread_runtime() else { return ExitCode::FAILURE };
    let loaded = runtime.block_on(async {
        let started = std::time::Instant::now();
        wif_proxy::Ranges::load(&config.ip_allow, None, Default::default()).await.map(|r| (r, started.elapsed()))
    });
    let (ranges, took) = match loaded {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let mode = ranges.mode.as_str();
    println!("ip_allow mode {mode}; {} sources loaded in {} ms", ranges.sources.len(), took.as_millis());
    for s in &ranges.sources {
        let prefixes = s.prefixes.load();
        let v4 = prefixes.iter().filter(|n| matches!(n, ipnet::IpNet::V4(_))).count();
        println!(
            "source {} ({}): {} prefixes ({v4} IPv4, {} IPv6){}",
            s.config.name,
            s.config.format.as_str(),
            prefixes.len(),
            prefixes.len() - v4,
            if s.config.admit { "" } else { "; admit = false: fetch accounting only" }
        );
    }
    for ip in ips {
        match ranges.explain(*ip) {
            Some((source, net)) => println!("{ip}: allowed by {source} {net}"),
            None if ranges.source_of(*ip) < ranges.sources.len() => {
                println!(
                    "{ip}: denied (counted as {}, which does not admit)",
                    ranges.source_name(ranges.source_of(*ip))
                )
            }
            None => println!("{ip}: denied (in no source)"),
        }
    }
    ExitCode::SUCCESS
}

fn run(cli: &Cli) -> ExitCode {
    // Socket activation: read (and clear) LISTEN_FDS while the process is
    // still single-threaded, before the log thread and the runtime start.
    let mut passed = wif_proxy::SystemdSockets::from_env();
    let _flush_on_exit = init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(&cli.config, &mut passed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: &Path, passed: &mut wif_proxy::SystemdSockets) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let shared = Shared::load(path).await?;
    let server = Server::bind_passed(shared, passed).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let reloader = std::sync::Arc::clone(server.shared());
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match reloader.reload().await {
                Ok(()) => tracing::info!("SIGHUP: configuration reloaded"),
                Err(e) => tracing::error!("SIGHUP: configuration rejected, still serving the previous one: {e}"),
            }
        }
    });
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        public = %server.public_addr(),
        admin = %server.admin_addr(),
        "wif-proxy started"
    );
    server
        .run(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        })
        .await;
    tracing::info!("stopped");
    Ok(())
}

//! The `lotbridge` command: parses the command line, sets up logging, loads the
//! configuration and calls into the library.
//!
//! Exit codes: 0 success; 1 a run failed; 2 a usage error (from clap); 69 (`EX_UNAVAILABLE`)
//! `check-config --connect` found a check that failed; 78 (`EX_CONFIG`) the configuration
//! is unusable.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use lotbridge::config::{self, Config};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `EX_CONFIG` from sysexits.h, as `vector validate` uses it: the configuration is unusable.
const EXIT_CONFIG: u8 = 78;
/// `EX_UNAVAILABLE`: a go-live check could not reach or use a service.
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(name = "lotbridge", version, about = "Delivers parking-lot events from Kafka to city vendor platforms")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the configured topics and deliver every event to its sinks.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short, env = "LOTBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and print a summary; exits 78 if it is unusable.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long, short, env = "LOTBRIDGE_CONFIG")]
        config: PathBuf,
        /// List every bound lot of every sink (default: their count).
        #[arg(long, short)]
        verbose: bool,
        /// Also connect, without sending any event: Kafka metadata, topics and group
        /// access; per sink DNS, TLS, token and clock skew. Exits 69 on any failed check.
        #[arg(long)]
        connect: bool,
    },
    /// Serve simulators of the configured vendors on the addresses of their base URLs.
    Simulate {
        /// Configuration file (TOML); each sink's base_url must point at 127.0.0.1.
        #[arg(long, short, env = "LOTBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Try lotbridge in one command: embedded broker, vendor simulators, a synthetic city
    /// and the engine; ends with a summary and exits 0 only if nothing was left undone.
    Demo {
        /// Lots in the synthetic city.
        #[arg(long, default_value_t = 200)]
        lots: usize,
        /// Seconds of traffic.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Events per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Inject no faults (vendor outage, expired tokens, invalid events).
        #[arg(long)]
        no_faults: bool,
        /// Serve /metrics, /healthz and /readyz here while running (e.g. 127.0.0.1:9898).
        #[arg(long)]
        metrics_addr: Option<String>,
        /// Where to write the generated configuration (default: a temporary folder).
        #[arg(long)]
        config_out: Option<PathBuf>,
    },
    /// Inspect or replay the dead-letter topic.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Print a running lotbridge's status (GET /status): per sink its state and why, lag,
    /// budget, the largest backlogs and the most recent failures by lot.
    Status {
        /// Where the replica serves /metrics (HOST:PORT).
        #[arg(long, default_value = "127.0.0.1:9898")]
        addr: String,
        /// One lot's line per sink instead of the lists.
        #[arg(long)]
        lot: Option<String>,
        /// Print the JSON as served.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if a lotbridge health endpoint answers 2xx (container health checks).
    Healthcheck {
        /// The endpoint to call.
        #[arg(long, default_value = "http://127.0.0.1:9898/healthz")]
        url: String,
    },
    /// Produce the demo's synthetic city into a real Kafka cluster (a traffic source).
    Produce {
        /// Kafka bootstrap servers.
        #[arg(long)]
        brokers: String,
        /// Topic of contract events.
        #[arg(long)]
        topic: String,
        /// Lots in the city (codes L0000...).
        #[arg(long, default_value_t = 40)]
        lots: usize,
        /// Lots (by index, e.g. 20-29) that take coupons.
        #[arg(long, value_parser = lotbridge::produce::parse_range)]
        coupon_lots: Option<std::ops::RangeInclusive<usize>>,
        /// Events per second.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// Random seed of the city.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stop after this many seconds (default: until SIGINT/SIGTERM).
        #[arg(long)]
        duration: Option<u64>,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Re-publish selected dead letters (original key and bytes) to their original topic.
    Replay {
        /// Configuration file (TOML); only its [kafka] table is used.
        #[arg(long, short, env = "LOTBRIDGE_CONFIG")]
        config: PathBuf,
        /// The dead-letter topic to read.
        #[arg(long)]
        from: String,
        /// Only dead letters of this sink.
        #[arg(long)]
        sink: Option<String>,
        /// Only dead letters of this stage: decode, map or deliver.
        #[arg(long)]
        stage: Option<String>,
        /// Only dead letters of this lot (the event's lot, or the record's key).
        #[arg(long)]
        lot: Option<String>,
        /// Only dead letters written at or after this time (RFC 3339).
        #[arg(long, value_parser = rfc3339)]
        since: Option<DateTime<Utc>>,
        /// Only dead letters written before this time (RFC 3339).
        #[arg(long, value_parser = rfc3339)]
        until: Option<DateTime<Utc>>,
        /// Publish to this topic instead of each record's original topic.
        #[arg(long)]
        to: Option<String>,
        /// Count what would be replayed; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print dead letters grouped by sink, stage and reason.
    Inspect {
        /// Configuration file (TOML); only its [kafka] table is used.
        #[arg(long, short, env = "LOTBRIDGE_CONFIG")]
        config: PathBuf,
        /// The dead-letter topic (default: kafka.dead_letter_topic).
        #[arg(long)]
        from: Option<String>,
        /// Only dead letters of this sink.
        #[arg(long)]
        sink: Option<String>,
        /// Only dead letters of this lot (the event's lot, or the record's key).
        #[arg(long)]
        lot: Option<String>,
    },
}

fn rfc3339(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e} (e.g. 2026-11-23T08:00:00+08:00)"))
}

/// Logs to stderr: JSON lines if asked, else text, coloured only on a terminal.
fn init_logging(json: bool, filter: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter.unwrap_or("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Rebalance callbacks block a worker while lanes drain: keep spare workers.
        .worker_threads(std::thread::available_parallelism().map_or(4, |n| n.get().max(4)))
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(async_main(cli)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the runtime")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = if e.chain().any(|cause| cause.is::<config::ConfigError>()) { EXIT_CONFIG } else { 1 };
            // Once logging is set up (JSON in a pod), the error is a log line like any other.
            let text = error_text(&e);
            if tracing::dispatcher::has_been_set() {
                tracing::error!(error = %text, exit_code = code, "lotbridge stopped");
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::from(code)
        }
    }
}

async fn async_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { config, verbose, connect } => {
            let loaded = load(&config)?;
            print!("{}", lotbridge::load::summary(&loaded, verbose));
            println!("configuration OK");
            if connect && !lotbridge::probe::run(&loaded, &mut std::io::stdout()).await {
                return Ok(ExitCode::from(EXIT_UNAVAILABLE));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            // Logging first, from the file's [log] table alone, so that a configuration
            // error is logged the way the operator asked (JSON lines for a log shipper).
            let (json, filter) = log_settings(&config);
            init_logging(json, filter.as_deref());
            let loaded = load(&config)?;
            lotbridge::app::run(loaded, lotbridge::app::shutdown_signal()).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Simulate { config } => {
            init_logging(false, None);
            let loaded = load(&config)?;
            let servers = lotbridge::sim::start_for_config(&loaded).await?;
            for (name, server) in &servers {
                println!("simulating sink {name} on {}", server.base_url());
            }
            lotbridge::app::shutdown_signal().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { lots, duration, rate, no_faults, metrics_addr, config_out } => {
            // On a terminal the progress display owns stderr: log lines go to a file named
            // at the end instead of breaking it.
            let log_file = demo_logging();
            let opts = lotbridge::demo::Options {
                lots,
                duration: std::time::Duration::from_secs(duration),
                rate,
                faults: !no_faults,
                metrics_addr,
                config_out,
                ..Default::default()
            };
            let report = lotbridge::demo::run(opts).await?;
            print!("{report}");
            if let Some(path) = log_file.filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0)) {
                println!("warnings logged during the run: {}", path.display());
            }
            anyhow::ensure!(report.complete(), "some records have no final outcome");
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command } => {
            init_logging(false, Some("warn"));
            dlq(command).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Produce { brokers, topic, lots, coupon_lots, rate, seed, duration } => {
            init_logging(false, None);
            let duration = duration.map(std::time::Duration::from_secs);
            let opts = lotbridge::produce::Options { brokers, topic, lots, coupon_lots, rate, seed, duration };
            lotbridge::produce::run(opts, lotbridge::app::shutdown_signal()).await.map(|_| ExitCode::SUCCESS)
        }
        Command::Status { addr, lot, json } => status(&addr, lot.as_deref(), json).await.map(|()| ExitCode::SUCCESS),
        Command::Healthcheck { url } => {
            let status = reqwest::Client::builder()
                .no_proxy()
                .build()?
                .get(&url)
                .timeout(std::time::Duration::from_secs(3))
                .send()
                .await?
                .status();
            anyhow::ensure!(status.is_success(), "{url} answered {status}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn status(addr: &str, lot: Option<&str>, json: bool) -> anyhow::Result<()> {
    let url = reqwest::Url::parse_with_params(&format!("http://{addr}/status"), lot.map(|l| ("lot", l)))
        .with_context(|| format!("--addr {addr:?} is not HOST:PORT"))?;
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("no answer from {addr}"))?;
    anyhow::ensure!(response.status().is_success(), "{addr}/status answered {}", response.status());
    let text = response.text().await?;
    if json {
        println!("{text}");
        return Ok(());
    }
    let report: lotbridge::status::Report = serde_json::from_str(&text).context("not a lotbridge /status answer")?;
    print!("{}", lotbridge::status::render(&report));
    Ok(())
}

async fn dlq(command: DlqCommand) -> anyhow::Result<()> {
    use lotbridge::dlq;
    match command {
        DlqCommand::Replay { config, from, sink, stage, lot, since, until, to, dry_run } => {
            let kafka = kafka_only(&config, sink.as_deref())?;
            let selection = dlq::Selection { sink, stage, lot, since, until };
            let options = dlq::ReplayOptions { from, selection, to, dry_run };
            let summary = dlq::replay(&kafka, &options, &dlq::progress_bar()).await?;
            println!("{}{summary}", if dry_run { "dry run, nothing written: " } else { "" });
            Ok(())
        }
        DlqCommand::Inspect { config, from, sink, lot } => {
            let kafka = kafka_only(&config, sink.as_deref())?;
            let topic = from.unwrap_or_else(|| kafka.dead_letter_topic.clone());
            let selection = dlq::Selection { sink, lot, ..Default::default() };
            print!("{}", dlq::render_table(&dlq::inspect(&kafka, &topic, &selection).await?));
            Ok(())
        }
    }
}

/// The [kafka] table of a configuration, without resolving any vendor secret (the tools
/// never call a vendor). Warns when `sink` is not configured: its dead letters may predate
/// a rename.
fn kafka_only(path: &std::path::Path, sink: Option<&str>) -> anyhow::Result<config::KafkaConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut parsed = Config::parse(&text, path)?;
    parsed.kafka.resolve_properties(path.parent().unwrap_or(std::path::Path::new(".")))?;
    if let Some(name) = sink.filter(|n| !parsed.sinks.iter().any(|s| s.name == *n)) {
        eprintln!("warning: no sink named {name:?} in {}; selecting its dead letters anyway", path.display());
    }
    Ok(parsed.kafka)
}

/// The demo's logging: to stderr, or to a file when stderr is the progress display's
/// terminal (the file's path is returned).
fn demo_logging() -> Option<PathBuf> {
    if !std::io::stderr().is_terminal() {
        init_logging(false, Some("warn"));
        return None;
    }
    let path = std::env::temp_dir().join(format!("lotbridge-demo-{}.log", std::process::id()));
    match std::fs::File::create(&path) {
        Ok(file) => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            let writer = std::sync::Mutex::new(file);
            tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(false).init();
            Some(path)
        }
        Err(_) => {
            init_logging(false, Some("warn"));
            None
        }
    }
}

/// The error and its causes on one line, each cause once (a message that already quotes
/// its cause is not followed by it again).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !text.contains(&cause) {
            text = if text.is_empty() { cause } else { format!("{text}: {cause}") };
        }
    }
    text
}

/// `[log] json` and `filter` read leniently from the file (defaults if it cannot be read).
fn log_settings(path: &Path) -> (bool, Option<String>) {
    let table = std::fs::read_to_string(path).ok().and_then(|text| text.parse::<toml::Table>().ok());
    let log = table.as_ref().and_then(|t| t.get("log")).and_then(toml::Value::as_table);
    let json = log.and_then(|l| l.get("json")).and_then(toml::Value::as_bool).unwrap_or(false);
    let filter = log.and_then(|l| l.get("filter")).and_then(toml::Value::as_str).map(str::to_string);
    (json, filter)
}

fn load(path: &std::path::Path) -> anyhow::Result<lotbridge::load::Loaded> {
    lotbridge::load::load(path).with_context(|| format!("configuration {} is not usable", path.display()))
}

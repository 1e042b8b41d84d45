//! The `lotbridge` command: parses the command line, sets up logging, loads the
//! configuration and calls into the library.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use lotbridge::config::{self, Config};
use std::path::PathBuf;

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
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and print a summary; exits non-zero on any error.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Serve simulators of the configured vendors on the addresses of their base URLs.
    Simulate {
        /// Configuration file (TOML); each sink's base_url must point at 127.0.0.1.
        #[arg(long, short)]
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
        #[arg(long, short)]
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
        #[arg(long, short)]
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

fn init_logging(json: bool, filter: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter.unwrap_or("info")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Rebalance callbacks block a worker while lanes drain: keep spare workers.
        .worker_threads(std::thread::available_parallelism().map_or(4, |n| n.get().max(4)))
        .enable_all()
        .build()?;
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { config } => {
            let loaded = load(&config)?;
            print!("{}", config::summary(&loaded));
            println!("configuration OK");
            Ok(())
        }
        Command::Run { config } => {
            let loaded = load(&config)?;
            init_logging(loaded.config.log.json, loaded.config.log.filter.as_deref());
            lotbridge::app::run(loaded, lotbridge::app::shutdown_signal()).await
        }
        Command::Simulate { config } => {
            init_logging(false, None);
            let loaded = load(&config)?;
            let servers = lotbridge::sim::start_for_config(&loaded).await?;
            for (name, server) in &servers {
                println!("simulating sink {name} on {}", server.base_url());
            }
            lotbridge::app::shutdown_signal().await;
            Ok(())
        }
        Command::Demo { lots, duration, rate, no_faults, metrics_addr, config_out } => {
            init_logging(false, Some("warn"));
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
            anyhow::ensure!(report.complete(), "some records have no final outcome");
            Ok(())
        }
        Command::Dlq { command } => {
            init_logging(false, Some("warn"));
            dlq(command).await
        }
        Command::Produce { brokers, topic, lots, coupon_lots, rate, seed, duration } => {
            init_logging(false, None);
            let duration = duration.map(std::time::Duration::from_secs);
            let opts = lotbridge::produce::Options { brokers, topic, lots, coupon_lots, rate, seed, duration };
            lotbridge::produce::run(opts, lotbridge::app::shutdown_signal()).await.map(drop)
        }
        Command::Status { addr, lot, json } => status(&addr, lot.as_deref(), json).await,
        Command::Healthcheck { url } => {
            let status =
                reqwest::Client::new().get(&url).timeout(std::time::Duration::from_secs(3)).send().await?.status();
            anyhow::ensure!(status.is_success(), "{url} answered {status}");
            Ok(())
        }
    }
}

async fn status(addr: &str, lot: Option<&str>, json: bool) -> anyhow::Result<()> {
    let url = reqwest::Url::parse_with_params(&format!("http://{addr}/status"), lot.map(|l| ("lot", l)))
        .with_context(|| format!("--addr {addr:?} is not HOST:PORT"))?;
    let response = reqwest::Client::new()
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
    let parsed = Config::parse(&text, path)?;
    if let Some(name) = sink.filter(|n| !parsed.sinks.iter().any(|s| s.name == *n)) {
        eprintln!("warning: no sink named {name:?} in {}; selecting its dead letters anyway", path.display());
    }
    Ok(parsed.kafka)
}

fn load(path: &std::path::Path) -> anyhow::Result<config::Loaded> {
    Config::load(path, reqwest::Client::new())
        .with_context(|| format!("configuration {} is not usable", path.display()))
}

//! The `lotbridge` command: parses the command line, sets up logging, loads the
//! configuration and calls into the library.

use anyhow::Context;
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
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<config::Loaded> {
    Config::load(path, reqwest::Client::new())
        .with_context(|| format!("configuration {} is not usable", path.display()))
}

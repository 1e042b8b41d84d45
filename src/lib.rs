//! # lotbridge
//!
//! Consumes parking-lot events from Kafka and delivers each to the vendor platforms its lot
//! is bound to, losing nothing: a record is delivered or dead-lettered with its reason, and
//! offsets move only past records with a final outcome.
//!
//! # Layout
//! - [`event`]: the input contract v1: decoding and validation of one Kafka record.
//! - [`engine`]: the delivery engine: per-sink consumers, lanes, retries, holds, offsets,
//!   memory budget, generated records (its own map: `src/engine.rs`).
//! - [`app`]: a running lotbridge: the engine, `/metrics`, `/healthz`, `/readyz`, `/status`,
//!   and the shutdown signal.
//! - [`metrics`]: every Prometheus series, in one registry passed to whoever counts.
//! - [`probe`]: `check-config --connect`: Kafka, routes, TLS, tokens and clocks before go-live.
//! - [`config`]: the TOML configuration as written (vendor tables included), lot bindings
//!   (inline or CSV), checks; the lowest layer, importing nothing it configures.
//! - [`load`]: a configuration built into runnable sinks (HTTP client, bindings, vendor
//!   adapter), and the `check-config` summary.
//! - [`kafka`]: the one builder of Kafka client settings (brokers, TLS/SASL properties, secrets).
//! - [`secret`]: secret references and a value type that never prints.
//! - [`vendors`]: the adapter contract; one folder per vendor with its config, mapping,
//!   signing and response codes.
//! - [`auth`]: single-flight token cache shared by token-based vendors.
//! - [`net`]: one sink's HTTP client: trusted CAs, client certificate, proxy, timeouts.
//! - [`photo`]: the per-sink photo policy (recompress to fit, drop, or send as is).
//! - [`text`]: cutting text for logs, headers and reasons on character boundaries.
//! - [`sim`]: strict simulators of the four vendor platforms, with scriptable faults.
//! - [`dlq`]: operator tools over the dead-letter topic: inspect it, replay from it.
//! - [`status`]: the per-sink, per-lot status view (`GET /status`, `lotbridge status`).
//! - [`produce`]: `lotbridge produce`: the synthetic city into a real cluster (compose traffic).
//! - `fuzzing` (hidden): the property checks of the fuzz targets, run by `cargo fuzz` and by
//!   `cargo test` over every target's seeds and regressions.
//! - [`demo`]: `lotbridge demo`: broker, simulators, a synthetic city and the engine in one process.

pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod dlq;
pub mod engine;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod kafka;
pub mod load;
pub mod metrics;
pub mod net;
pub mod photo;
pub mod probe;
pub mod produce;
pub mod secret;
pub mod sim;
pub mod status;
pub mod text;
pub mod vendors;

//! Wiring of a running lotbridge: the HTTP client, metrics and health endpoints, the engine,
//! and the shutdown signal.

use crate::config::Loaded;
use crate::engine::Engine;
use crate::metrics::Metrics;
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The HTTP client shared by every sink: pooled connections, rustls, no proxy surprises.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .user_agent(concat!("lotbridge/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Health as `/readyz` reports it.
#[derive(Default)]
pub struct Health {
    /// False while draining.
    pub serving: AtomicBool,
}

#[derive(Clone)]
struct ServerState {
    metrics: Metrics,
    health: Arc<Health>,
    engine_ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn health_router(metrics: Metrics, health: Arc<Health>, ready: Arc<dyn Fn() -> bool + Send + Sync>) -> Router {
    async fn metrics_text(State(s): State<ServerState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
        ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
    }
    async fn healthz() -> &'static str {
        "ok\n"
    }
    async fn readyz(State(s): State<ServerState>) -> (StatusCode, &'static str) {
        if s.health.serving.load(Ordering::Relaxed) && (s.engine_ready)() {
            (StatusCode::OK, "ready\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        }
    }
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ServerState { metrics, health, engine_ready: ready })
}

/// Serves the health router on `addr`.
pub async fn serve_health(addr: &str, router: Router) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for metrics"))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))
}

/// Runs the engine of a loaded configuration until `shutdown`.
pub async fn run(loaded: Loaded, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("metrics")?;
    let listen = loaded.config.metrics.listen.clone();
    let engine = Engine::new(loaded, metrics.clone(), http_client()?)?;
    let health = Arc::new(Health::default());
    health.serving.store(true, Ordering::Relaxed);
    let sinks = engine.sinks().to_vec();
    let ready = Arc::new(move || sinks.iter().all(|s| !s.partitions.assigned().is_empty()));
    let server = serve_health(&listen, health_router(metrics, health.clone(), ready)).await?;
    let draining = health.clone();
    engine
        .run(async move {
            shutdown.await;
            draining.serving.store(false, Ordering::Relaxed);
        })
        .await?;
    server.abort();
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

//! Wiring of a running lotbridge: metrics and health endpoints, the engine,
//! and the shutdown signal.
//!
//! `/readyz` is ready when the configuration is loaded (the server starts only after) and
//! every sink's consumer has joined its group, with partitions assigned or waiting for an
//! assignment; it stops being ready when draining starts, and its body says why. Vendor
//! health (credential checks, token endpoints) is not part of readiness: a vendor outage
//! must not stall a rollout. It shows in metrics and alerts instead.

use crate::engine::sink::Sink;
use crate::engine::Engine;
use crate::load::Loaded;
use crate::metrics::Metrics;
use crate::vendors::PrepareError;
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often each sink's credentials are checked in the background (metrics only).
const AUTH_CHECK_EVERY: Duration = Duration::from_secs(30);
/// The longest one credential check may take before it counts as failed.
const AUTH_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Health as `/healthz` and `/readyz` report it.
pub struct Health {
    /// False while draining.
    pub serving: AtomicBool,
    /// The sinks whose failure (a task that died) fails `/healthz`.
    sinks: Vec<Arc<Sink>>,
}

impl Health {
    /// Serving, watching `sinks`.
    pub fn new(sinks: Vec<Arc<Sink>>) -> Health {
        Health { serving: AtomicBool::new(true), sinks }
    }

    /// The first failed sink and why, if any: the process is broken and must restart.
    pub fn failure(&self) -> Option<String> {
        self.sinks.iter().find_map(|s| s.failure().map(|why| format!("sink {}: {why}", s.name())))
    }
}

/// What `/readyz` answers: ready or not, and the text of its body (the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyAnswer {
    /// Whether the replica is ready.
    pub ready: bool,
    /// One line per sink (or the reason it is not ready), for people.
    pub body: String,
}

/// The readiness of an engine, as `/readyz` asks it.
pub type ReadyProbe = Arc<dyn Fn() -> ReadyAnswer + Send + Sync>;

#[derive(Clone)]
struct ServerState {
    metrics: Metrics,
    health: Arc<Health>,
    engine_ready: ReadyProbe,
}

impl ServerState {
    fn ready(&self) -> ReadyAnswer {
        let answer = if self.health.serving.load(Ordering::Relaxed) {
            (self.engine_ready)()
        } else {
            ReadyAnswer { ready: false, body: "not ready: draining (shutting down)\n".into() }
        };
        self.metrics.ready.set(i64::from(answer.ready));
        answer
    }
}

/// `/metrics`, `/healthz` and `/readyz`, with a plain yes/no readiness (its body says only
/// `ready` or `not ready`).
pub fn health_router(metrics: Metrics, health: Arc<Health>, ready: Arc<dyn Fn() -> bool + Send + Sync>) -> Router {
    let probe: ReadyProbe = Arc::new(move || {
        let ready = ready();
        ReadyAnswer { ready, body: if ready { "ready\n".into() } else { "not ready\n".into() } }
    });
    health_router_with_reasons(metrics, health, probe)
}

/// `/metrics`, `/healthz` and `/readyz`, whose body is the probe's reason.
pub fn health_router_with_reasons(metrics: Metrics, health: Arc<Health>, ready: ReadyProbe) -> Router {
    async fn metrics_text(State(s): State<ServerState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
        s.ready(); // keeps the `ready` gauge current for every scrape
        ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
    }
    async fn healthz(State(s): State<ServerState>) -> (StatusCode, String) {
        match s.health.failure() {
            None => (StatusCode::OK, "ok\n".to_string()),
            Some(why) => (StatusCode::INTERNAL_SERVER_ERROR, format!("failed: {why}\n")),
        }
    }
    async fn readyz(State(s): State<ServerState>) -> (StatusCode, String) {
        let answer = s.ready();
        let status = if answer.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        (status, answer.body)
    }
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ServerState { metrics, health, engine_ready: ready })
}

/// Serves the health router on `addr`.
pub async fn serve_health(addr: &str, router: Router) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    Ok(serve_on(bind(addr).await?, router))
}

async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for metrics"))
}

fn serve_on(listener: tokio::net::TcpListener, router: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    })
}

/// Where a sink stands in its consumer group, as readiness sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Not (yet) a member of its group: Kafka unreachable, or the join is under way.
    NotJoined,
    /// A member with no partition: waiting for an assignment (a standby when the group
    /// has more members than partitions); it takes partitions over on the next rebalance.
    Waiting,
    /// Partitions assigned.
    Assigned(usize),
}

impl Placement {
    fn is_ready(self) -> bool {
        self != Placement::NotJoined
    }

    fn describe(self) -> String {
        match self {
            Placement::NotJoined => "not in its consumer group yet".into(),
            Placement::Waiting => "joined its consumer group, waiting for partitions".into(),
            Placement::Assigned(n) => format!("{n} partitions assigned"),
        }
    }
}

/// Whether every sink can take its share of the work: configuration loaded, and its
/// consumer in its group, with partitions or waiting for them. Vendor credentials are
/// checked in the background for metrics and alerts only, never for readiness.
pub struct Readiness {
    sinks: Vec<Arc<Sink>>,
    metrics: Metrics,
    last: AtomicBool,
}

impl Readiness {
    /// Readiness of `sinks` (of a loaded configuration).
    pub fn new(sinks: Vec<Arc<Sink>>, metrics: Metrics) -> Arc<Readiness> {
        Arc::new(Readiness { sinks, metrics, last: AtomicBool::new(false) })
    }

    /// True when every sink's consumer has joined its group. Logs when the answer changes,
    /// with the first sink that holds readiness back.
    pub fn is_ready(&self) -> bool {
        self.answer().ready
    }

    /// The answer of `/readyz`: ready or not, and one line per sink saying where it stands.
    pub fn answer(&self) -> ReadyAnswer {
        let places: Vec<(&str, Placement)> = self.sinks.iter().map(|s| (s.name(), self.placement(s))).collect();
        let blocker = places.iter().find(|(_, p)| !p.is_ready());
        let ready = blocker.is_none();
        if self.last.swap(ready, Ordering::Relaxed) != ready {
            match blocker {
                None => tracing::info!("ready"),
                Some((sink, why)) => tracing::info!(sink, why = %why.describe(), "not ready"),
            }
        }
        let mut body = match blocker {
            None => "ready\n".to_string(),
            Some((sink, why)) => format!("not ready: sink {sink} is {}\n", why.describe()),
        };
        for (sink, place) in &places {
            body.push_str(&format!("sink {sink}: {}\n", place.describe()));
        }
        ReadyAnswer { ready, body }
    }

    /// Partitions assigned, or a member of its group waiting for them (more replicas than
    /// partitions, or between the join and the assignment).
    fn placement(&self, sink: &Sink) -> Placement {
        let assigned = sink.partitions.assigned().len();
        let joined = self.metrics.group_joined.get_metric_with_label_values(&[sink.name()]).is_ok_and(|g| g.get() == 1);
        match (assigned, joined) {
            (0, false) => Placement::NotJoined,
            (0, true) => Placement::Waiting,
            (n, _) => Placement::Assigned(n),
        }
    }

    /// Checks every sink's credentials once (concurrently) and records the results in the
    /// metrics (`auth_ok`, `auth_checks_total`, `credentials_rejected`).
    pub async fn check_auth(&self) {
        let results = futures::future::join_all(self.sinks.iter().map(|sink| check_one(sink))).await;
        for (sink, result) in self.sinks.iter().zip(results) {
            self.record(sink, result);
        }
    }

    fn record(&self, sink: &Sink, result: AuthCheck) {
        let name = sink.name();
        let ok = result == AuthCheck::Ok;
        self.metrics.auth_checks.with_label_values(&[name, result.as_str()]).inc();
        self.metrics.auth_ok.with_label_values(&[name]).set(i64::from(ok));
        // The engine raises this gauge on a refused token; only a good check lowers it again.
        if result != AuthCheck::Unavailable {
            self.metrics.credentials_rejected.with_label_values(&[name]).set(i64::from(!ok));
        }
    }

    /// Checks credentials every 30 s for the metrics, forever (abort the task to stop).
    pub async fn run_auth_checks(self: Arc<Self>) {
        let mut tick = tokio::time::interval(AUTH_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check_auth().await;
        }
    }
}

/// The result of one credential check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthCheck {
    /// A token (or nothing) was needed and obtained.
    Ok,
    /// The token endpoint failed or did not answer in time: maybe temporary.
    Unavailable,
    /// The vendor refused the credentials: an operator must act.
    Rejected,
}

impl AuthCheck {
    fn as_str(self) -> &'static str {
        match self {
            AuthCheck::Ok => "ok",
            AuthCheck::Unavailable => "unavailable",
            AuthCheck::Rejected => "rejected",
        }
    }
}

async fn check_one(sink: &Sink) -> AuthCheck {
    match tokio::time::timeout(AUTH_CHECK_TIMEOUT, sink.adapter.check_auth()).await {
        Ok(Ok(())) => AuthCheck::Ok,
        Ok(Err(PrepareError::AuthRejected(_))) => AuthCheck::Rejected,
        Ok(Err(e)) => {
            tracing::warn!(sink = sink.name(), error = %e, "credential check failed");
            AuthCheck::Unavailable
        }
        Err(_) => {
            tracing::warn!(sink = sink.name(), "credential check timed out");
            AuthCheck::Unavailable
        }
    }
}

/// The running health endpoints of an engine and its background credential checks;
/// stops both when dropped.
pub struct HealthServer {
    /// Set `serving` to false when draining starts.
    pub health: Arc<Health>,
    /// What `/readyz` reports.
    pub readiness: Arc<Readiness>,
    /// Where it listens (the real port when asked for port 0).
    pub addr: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HealthServer {
    /// Serves `/metrics`, `/healthz` and `/readyz` for `sinks` on `addr`.
    pub async fn start(addr: &str, metrics: Metrics, sinks: Vec<Arc<Sink>>) -> anyhow::Result<HealthServer> {
        sinks.iter().for_each(|s| metrics.init_sink(s.name()));
        let health = Arc::new(Health::new(sinks.clone()));
        let sinks_for_status = sinks.clone();
        let readiness = Readiness::new(sinks, metrics.clone());
        let probe = readiness.clone();
        let router = health_router_with_reasons(metrics, health.clone(), Arc::new(move || probe.answer()))
            .merge(crate::status::router(sinks_for_status));
        let listener = bind(addr).await?;
        let addr = listener.local_addr().context("metrics listener address")?;
        let server = serve_on(listener, router);
        let checks = tokio::spawn(readiness.clone().run_auth_checks());
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz and /status");
        Ok(HealthServer { health, readiness, addr, tasks: vec![server, checks] })
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

/// Runs the engine of a loaded configuration until `shutdown`.
pub async fn run(loaded: Loaded, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("metrics")?;
    let listen = loaded.config.metrics.listen.clone();
    let engine = Engine::new(loaded, metrics.clone())?;
    let server = HealthServer::start(&listen, metrics, engine.sinks().to_vec()).await?;
    let draining = server.health.clone();
    engine
        .run(async move {
            shutdown.await;
            draining.serving.store(false, Ordering::Relaxed);
        })
        .await?;
    drop(server);
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

//! Bearer-style tokens shared by all lanes of a sink: fetched once, refreshed ahead of expiry,
//! one fetch at a time however many callers wait, invalidated when the vendor refuses them.
//!
//! Credentials the vendor rejects (`invalid_client`) are a configuration error: the cache
//! then refuses to ask again until a cool-down has passed (doubling up to ten minutes), so
//! a wrong secret never hammers the token endpoint.

use crate::secret::Secret;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token as the vendor issued it.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    /// The token.
    pub value: Secret,
    /// Its lifetime from now.
    pub expires_in: Duration,
}

/// Why a token fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Network trouble or a server error: try again soon.
    #[error("token endpoint unavailable: {0}")]
    Unavailable(String),
    /// The vendor refused the credentials: an operator must fix the configuration.
    #[error("credentials rejected: {0}")]
    Rejected(String),
}

/// Fetches a new token from a vendor.
#[async_trait::async_trait]
pub trait TokenFetcher: Send + Sync {
    /// One call to the token endpoint.
    async fn fetch(&self) -> Result<FetchedToken, TokenError>;
}

/// Counters describing a cache's health (read by metrics).
#[derive(Debug, Default)]
pub struct TokenStats {
    /// Successful fetches.
    pub fetches: AtomicU64,
    /// Failed fetches.
    pub failures: AtomicU64,
    /// Invalidations after the vendor refused a token.
    pub invalidations: AtomicU64,
}

#[derive(Debug, Clone)]
struct Cached {
    value: Secret,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Debug, Clone)]
struct Rejection {
    reason: String,
    until: Instant,
    cooldown: Duration,
}

/// Timing of a token cache.
#[derive(Debug, Clone, Copy)]
pub struct TokenPolicy {
    /// Refresh once this share of the lifetime has passed (0.0..1.0).
    pub refresh_ratio: f64,
    /// Never use a token closer than this to its expiry.
    pub margin: Duration,
    /// First wait after rejected credentials; doubles up to `max_cooldown`.
    pub first_cooldown: Duration,
    /// Longest wait between two attempts with rejected credentials.
    pub max_cooldown: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            refresh_ratio: 0.8,
            margin: Duration::from_secs(30),
            first_cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(600),
        }
    }
}

/// A single-flight token cache.
pub struct TokenCache {
    fetcher: Box<dyn TokenFetcher>,
    policy: TokenPolicy,
    state: Mutex<Option<Cached>>,
    rejection: StdMutex<Option<Rejection>>,
    /// Health counters.
    pub stats: TokenStats,
}

impl TokenCache {
    /// A cache around `fetcher`.
    pub fn new(fetcher: Box<dyn TokenFetcher>, policy: TokenPolicy) -> Self {
        TokenCache {
            fetcher,
            policy,
            state: Mutex::new(None),
            rejection: StdMutex::new(None),
            stats: TokenStats::default(),
        }
    }

    /// A valid token, fetching one if needed. Concurrent callers share one fetch.
    pub async fn get(&self) -> Result<Secret, TokenError> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(cached) = state.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(cached.value.clone());
        }
        if let Some(rejected) = self.rejected(now) {
            return Err(TokenError::Rejected(rejected));
        }
        match self.fetcher.fetch().await {
            Ok(token) => {
                self.stats.fetches.fetch_add(1, Ordering::Relaxed);
                self.clear_rejection();
                let cached = self.cache(token);
                let value = cached.value.clone();
                *state = Some(cached);
                Ok(value)
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                if let TokenError::Rejected(reason) = &e {
                    self.reject(reason.clone());
                }
                // A token that is due for refresh but not yet expired still works.
                match state.as_ref().filter(|c| Instant::now() < c.expires_at) {
                    Some(cached) if matches!(e, TokenError::Unavailable(_)) => Ok(cached.value.clone()),
                    _ => Err(e),
                }
            }
        }
    }

    /// Forgets `refused` if it is still the cached token (a newer token stays).
    pub async fn invalidate(&self, refused: &Secret) {
        let mut state = self.state.lock().await;
        if state.as_ref().is_some_and(|c| &c.value == refused) {
            *state = None;
            self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets whatever token is cached.
    pub fn invalidate_now(&self) {
        if let Ok(mut state) = self.state.try_lock() {
            if state.take().is_some() {
                self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether the credentials are currently known to be rejected.
    pub fn credentials_rejected(&self) -> bool {
        self.rejection.lock().map(|r| r.is_some()).unwrap_or(false)
    }

    fn cache(&self, token: FetchedToken) -> Cached {
        let now = Instant::now();
        let life = token.expires_in;
        let usable = life.saturating_sub(self.policy.margin.min(life / 2));
        let refresh = life.mul_f64(self.policy.refresh_ratio.clamp(0.1, 1.0)).min(usable);
        Cached { value: token.value, refresh_at: now + refresh, expires_at: now + usable }
    }

    fn rejected(&self, now: Instant) -> Option<String> {
        let guard = self.rejection.lock().ok()?;
        guard.as_ref().filter(|r| now < r.until).map(|r| r.reason.clone())
    }

    fn reject(&self, reason: String) {
        if let Ok(mut guard) = self.rejection.lock() {
            let cooldown = match guard.as_ref() {
                Some(prev) => (prev.cooldown * 2).min(self.policy.max_cooldown),
                None => self.policy.first_cooldown,
            };
            *guard = Some(Rejection { reason, until: Instant::now() + cooldown, cooldown });
        }
    }

    fn clear_rejection(&self) {
        if let Ok(mut guard) = self.rejection.lock() {
            *guard = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Scripted {
        calls: Arc<AtomicU64>,
        reject: bool,
    }

    #[async_trait::async_trait]
    impl TokenFetcher for Scripted {
        async fn fetch(&self) -> Result<FetchedToken, TokenError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.reject {
                return Err(TokenError::Rejected("invalid_client".into()));
            }
            Ok(FetchedToken { value: Secret::new(format!("t{n}")), expires_in: Duration::from_secs(1000) })
        }
    }

    fn cache(reject: bool) -> (Arc<TokenCache>, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let fetcher = Box::new(Scripted { calls: calls.clone(), reject });
        (Arc::new(TokenCache::new(fetcher, TokenPolicy::default())), calls)
    }

    #[tokio::test(start_paused = true)]
    async fn single_flight_and_refresh_ahead() {
        let (cache, calls) = cache(false);
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                tokio::spawn({
                    let c = cache.clone();
                    async move { c.get().await.unwrap().expose().to_string() }
                })
            })
            .collect();
        for w in waiters {
            assert_eq!(w.await.unwrap(), "t1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(801)).await;
        assert_eq!(cache.get().await.unwrap().expose(), "t2", "refreshed at 80% of the lifetime");
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_only_the_refused_token() {
        let (cache, calls) = cache(false);
        let t1 = cache.get().await.unwrap();
        cache.invalidate(&t1).await;
        let t2 = cache.get().await.unwrap();
        assert_eq!(t2.expose(), "t2");
        cache.invalidate(&t1).await; // a late 401 for the old token
        assert_eq!(cache.get().await.unwrap().expose(), "t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_credentials_cool_down() {
        let (cache, calls) = cache(true);
        for _ in 0..10 {
            assert!(matches!(cache.get().await, Err(TokenError::Rejected(_))));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no hammering while cooling down");
        assert!(cache.credentials_rejected());
        tokio::time::advance(Duration::from_secs(31)).await;
        let _ = cache.get().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}

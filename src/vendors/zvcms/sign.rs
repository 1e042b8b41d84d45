//! The zvcms request signature (`Token`) and the per-request `Nonce`.
//!
//! The vendor's signing document is not public; lotbridge follows the scheme other Chinese
//! open platforms use with the same envelope (see `specs/README.md`): the public parameters
//! sorted by key and joined as `k=v&k=v`, HMAC-SHA1 with the account's secret key, standard
//! base64, then URL-escaped. Which spelling the keys have in the signed text and whether
//! `Action` is signed are configurable because deployments differ.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// How the parameter names are spelled in the signed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStyle {
    /// `grantCode`, `nonce`, `openId`, `timestamp` (and `action`): the published test vector.
    Camel,
    /// `GrantCode`, `Nonce`, `OpenId`, `Timestamp` (and `Action`): the envelope's own spelling.
    Pascal,
}

impl KeyStyle {
    fn names(self) -> [&'static str; 5] {
        match self {
            KeyStyle::Camel => ["openId", "grantCode", "timestamp", "nonce", "action"],
            KeyStyle::Pascal => ["OpenId", "GrantCode", "Timestamp", "Nonce", "Action"],
        }
    }
}

/// The values one signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// `OpenId`.
    pub open_id: &'a str,
    /// `GrantCode`.
    pub grant_code: &'a str,
    /// `Timestamp` as sent (Unix seconds).
    pub timestamp: &'a str,
    /// `Nonce` as sent.
    pub nonce: &'a str,
    /// `Action`, when the deployment signs it.
    pub action: Option<&'a str>,
}

/// The text that is signed: the parameters sorted by key, joined as `k=v&k=v`, unescaped.
pub fn signing_text(style: KeyStyle, values: &Signed<'_>) -> String {
    let [open_id, grant_code, timestamp, nonce, action] = style.names();
    let mut pairs = vec![
        (open_id, values.open_id),
        (grant_code, values.grant_code),
        (timestamp, values.timestamp),
        (nonce, values.nonce),
    ];
    if let Some(value) = values.action {
        pairs.push((action, value));
    }
    // Byte order, as the platforms' `ksort` does.
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    joined.join("&")
}

/// The `Token` field: URL-escaped standard base64 of HMAC-SHA1(secret, signing text).
pub fn token(secret_key: &[u8], style: KeyStyle, values: &Signed<'_>) -> String {
    use base64::Engine as _;
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps src free of
    // panics anyway and would only ever produce a signature the vendor refuses.
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret_key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(signing_text(style, values).as_bytes());
    let digest = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    // Base64 only holds `+`, `/` and `=` besides alphanumerics: all three are escaped.
    percent_encoding::utf8_percent_encode(&digest, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Smallest nonce sent (six digits, like the spec's example `658965`).
const NONCE_MIN: u64 = 100_000;
/// Largest nonce sent: fits a signed 32-bit integer, in case the platform stores it as one.
const NONCE_MAX: u64 = i32::MAX as u64;
const NONCE_SPAN: u64 = NONCE_MAX - NONCE_MIN + 1;

/// Hands out nonces: random positive integers, never repeated within the process.
///
/// A random start plus a counter: unique for the first two billion requests of a process,
/// and two replicas sharing one account collide only if their random starts fall within
/// a few requests of each other.
#[derive(Debug)]
pub struct NonceSource {
    start: u64,
    issued: AtomicU64,
}

impl NonceSource {
    /// A source starting at a random point.
    pub fn new() -> Self {
        NonceSource::starting_at(rand::random::<u64>())
    }

    /// A source starting at `seed` (tests).
    pub fn starting_at(seed: u64) -> Self {
        NonceSource { start: seed % NONCE_SPAN, issued: AtomicU64::new(0) }
    }

    /// The next nonce.
    pub fn next(&self) -> u64 {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        NONCE_MIN + (self.start + n % NONCE_SPAN) % NONCE_SPAN
    }
}

impl Default for NonceSource {
    fn default() -> Self {
        NonceSource::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const VECTOR: Signed<'static> = Signed {
        open_id: "fake-open-id-for-test-only-0001",
        grant_code: "fake-grant-code-0001",
        timestamp: "1712563200",
        nonce: "24680",
        action: None,
    };

    #[test]
    fn published_vector() {
        let token = token(b"fake-open-key-for-test-only-0001", KeyStyle::Camel, &VECTOR);
        assert_eq!(token, "ySypL4SRFMmfSrCqOiFE01LK3ks%3D");
    }

    #[test]
    fn camel_text_is_sorted() {
        assert_eq!(
            signing_text(KeyStyle::Camel, &VECTOR),
            "grantCode=fake-grant-code-0001&nonce=24680&openId=fake-open-id-for-test-only-0001&timestamp=1712563200"
        );
    }

    #[test]
    fn pascal_and_action_change_the_text_and_token() {
        let with_action = Signed { action: Some("coupon.user-coupon-list"), ..VECTOR };
        assert_eq!(
            signing_text(KeyStyle::Pascal, &with_action),
            "Action=coupon.user-coupon-list&GrantCode=fake-grant-code-0001&Nonce=24680\
             &OpenId=fake-open-id-for-test-only-0001&Timestamp=1712563200"
        );
        assert!(signing_text(KeyStyle::Camel, &with_action).starts_with("action=coupon.user-coupon-list&grantCode="));
        let key = b"fake-open-key-for-test-only-0001";
        let plain = token(key, KeyStyle::Camel, &VECTOR);
        assert_ne!(token(key, KeyStyle::Pascal, &VECTOR), plain);
        assert_ne!(token(key, KeyStyle::Camel, &with_action), plain);
    }

    #[test]
    fn token_is_url_escaped_base64_of_20_bytes() {
        use base64::Engine as _;
        let token = token(b"k", KeyStyle::Camel, &VECTOR);
        let unescaped = percent_encoding::percent_decode_str(&token).decode_utf8().unwrap();
        assert!(!token.contains(['+', '/', '=']));
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(unescaped.as_bytes()).unwrap().len(), 20);
    }

    #[test]
    fn nonces_are_positive_unique_and_in_range() {
        let source = NonceSource::starting_at(NONCE_SPAN - 3);
        let seen: HashSet<u64> = (0..10_000).map(|_| source.next()).collect();
        assert_eq!(seen.len(), 10_000);
        assert!(seen.iter().all(|n| (NONCE_MIN..=NONCE_MAX).contains(n)));
    }

    #[test]
    fn two_sources_start_apart() {
        assert_ne!(NonceSource::new().next(), NonceSource::new().next());
    }
}

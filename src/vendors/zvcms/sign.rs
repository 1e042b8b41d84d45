//! The zvcms request signature (`Token`) and the per-request `Nonce`.
//!
//! The vendor's signing document is not public; lotbridge follows the scheme other Chinese
//! open platforms use with the same envelope (see `specs/README.md`): the public parameters
//! sorted by key and joined as `k=v&k=v`, HMAC-SHA1 with the account's secret key, standard
//! base64, then URL-escaped. Which spelling the keys have in the signed text and whether
//! `Action` is signed are configurable because deployments differ.

use hmac::{Hmac, Mac};
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::config::vendor::zvcms::KeyStyle;

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

/// Second 0 of the nonce clock: 2024-01-01T00:00:00Z (32 bits of seconds last until 2160).
const NONCE_EPOCH: u64 = 1_704_067_200;
/// Bits of a nonce below its seconds.
const LOW_BITS: u32 = 31;
const LOW_MASK: u64 = (1 << LOW_BITS) - 1;
const SECONDS_MASK: u64 = (1 << 32) - 1;

/// Hands out nonces that stay unique across restarts and replicas: the seconds since
/// [`NONCE_EPOCH`] in the high 32 bits, and a per-process random start plus a counter in
/// the low 31 bits, so every nonce is a positive integer below 2^63.
///
/// - Within a process, the counter makes the first 2^31 nonces distinct whatever the clock
///   does (a step back included), and the seconds keep later ones apart.
/// - A restart cannot repeat an earlier process's nonce unless it also lands in the same
///   second, and then only if the two random starts fall within the requests of that
///   second of each other (odds of about requests/2^31).
/// - Replicas sharing one account differ in their random start: their nonces of one
///   second collide only if the starts fall within a few requests of each other, a chance
///   of about the requests in flight / 2^31 over the whole time they run together.
#[derive(Debug)]
pub struct NonceSource {
    start: u64,
    issued: AtomicU64,
}

impl NonceSource {
    /// A source with a random start.
    pub fn new() -> Self {
        NonceSource::starting_at(rand::random::<u64>())
    }

    /// A source whose low bits start at `seed` (tests).
    pub fn starting_at(seed: u64) -> Self {
        NonceSource { start: seed & LOW_MASK, issued: AtomicU64::new(0) }
    }

    /// The next nonce for a request stamped at `unix_secs`.
    pub fn next_at(&self, unix_secs: u64) -> u64 {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        // Never 0 (a clock before the epoch still gives a positive nonce).
        let secs = (unix_secs.saturating_sub(NONCE_EPOCH) & SECONDS_MASK).max(1);
        (secs << LOW_BITS) | (self.start.wrapping_add(n) & LOW_MASK)
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

    const NOW: u64 = 1_764_700_000;

    #[test]
    fn nonces_are_positive_and_unique_within_a_process() {
        let source = NonceSource::starting_at(LOW_MASK - 3);
        let seen: HashSet<u64> = (0..10_000).map(|i| source.next_at(NOW + i % 3)).collect();
        assert_eq!(seen.len(), 10_000);
        assert!(seen.iter().all(|n| *n > 0 && *n < 1 << 63));
        // A clock stepping back does not repeat a nonce.
        let back: HashSet<u64> = [NOW, NOW - 5, NOW].iter().map(|t| source.next_at(*t)).collect();
        assert!(back.len() == 3 && back.is_disjoint(&seen));
    }

    #[test]
    fn a_restart_never_repeats_even_with_the_same_random_start() {
        let before = NonceSource::starting_at(42);
        let first: HashSet<u64> = (0..5_000).map(|_| before.next_at(NOW)).collect();
        let after = NonceSource::starting_at(42);
        let second: HashSet<u64> = (0..5_000).map(|_| after.next_at(NOW + 1)).collect();
        assert!(first.is_disjoint(&second));
    }

    #[test]
    fn replicas_in_the_same_second_differ_by_their_start() {
        let (a, b) = (NonceSource::starting_at(7), NonceSource::starting_at(7 + 1_000_000));
        let from_a: HashSet<u64> = (0..5_000).map(|_| a.next_at(NOW)).collect();
        let from_b: HashSet<u64> = (0..5_000).map(|_| b.next_at(NOW)).collect();
        assert!(from_a.is_disjoint(&from_b));
        assert_ne!(NonceSource::new().next_at(NOW), NonceSource::new().next_at(NOW));
    }
}

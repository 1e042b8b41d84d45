//! The simulator's own check of a zvcms `Token`, written from the published scheme and
//! never from the adapter's code, so a misreading in one is caught by the other.
//!
//! The scheme (`specs/README.md`): the public parameters (grant code, nonce, open id,
//! timestamp, and `Action` where the deployment signs it) sorted by key in byte order,
//! joined as `k=v&k=v`, HMAC-SHA1 keyed with the account's secret key, standard base64
//! (with `=` padding), then URL-escaped (`+` → `%2B`, `/` → `%2F`, `=` → `%3D`).

use hmac::{Hmac, Mac};

/// What the platform knows about one account's signing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheme {
    /// Keys spelled `OpenId` rather than `openId`.
    pub(crate) pascal: bool,
    /// Whether `Action` is part of the signed text.
    pub(crate) sign_action: bool,
}

/// The parameters one request was signed over, as received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp<'a> {
    pub(crate) open_id: &'a str,
    pub(crate) grant_code: &'a str,
    pub(crate) timestamp: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) action: &'a str,
}

/// The token the platform expects for `stamp`.
pub(crate) fn expected(key: &[u8], scheme: Scheme, stamp: &Stamp<'_>) -> String {
    escape(&base64(&hmac_sha1(key, canonical(scheme, stamp).as_bytes())))
}

/// The signed text: pairs sorted by key name, `k=v` joined by `&`.
pub(crate) fn canonical(scheme: Scheme, stamp: &Stamp<'_>) -> String {
    let spell = |camel: &'static str, pascal: &'static str| if scheme.pascal { pascal } else { camel };
    let mut pairs = vec![
        (spell("openId", "OpenId"), stamp.open_id),
        (spell("grantCode", "GrantCode"), stamp.grant_code),
        (spell("timestamp", "Timestamp"), stamp.timestamp),
        (spell("nonce", "Nonce"), stamp.nonce),
    ];
    if scheme.sign_action {
        pairs.push((spell("action", "Action"), stamp.action));
    }
    pairs.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut text = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            text.push('&');
        }
        text.push_str(k);
        text.push('=');
        text.push_str(v);
    }
    text
}

fn hmac_sha1(key: &[u8], text: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; the empty result only ever mismatches.
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(key) else { return Vec::new() };
    mac.update(text);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 4648 base64 with padding, three bytes to four characters.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-escapes everything but ASCII letters and digits, upper-case hex, as PHP's
/// `urlencode` and Java's `URLEncoder` do for base64 text.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: Stamp<'static> = Stamp {
        open_id: "fake-open-id-for-test-only-0001",
        grant_code: "fake-grant-code-0001",
        timestamp: "1712563200",
        nonce: "24680",
        action: "coupon.user-coupon-list",
    };
    const PUBLISHED: Scheme = Scheme { pascal: false, sign_action: false };

    #[test]
    fn published_test_vector() {
        let token = expected(b"fake-open-key-for-test-only-0001", PUBLISHED, &VECTOR);
        assert_eq!(token, "ySypL4SRFMmfSrCqOiFE01LK3ks%3D");
    }

    #[test]
    fn canonical_text_sorts_by_key() {
        assert_eq!(
            canonical(PUBLISHED, &VECTOR),
            "grantCode=fake-grant-code-0001&nonce=24680&openId=fake-open-id-for-test-only-0001&timestamp=1712563200"
        );
        let variant = Scheme { pascal: true, sign_action: true };
        assert!(canonical(variant, &VECTOR).starts_with("Action=coupon.user-coupon-list&GrantCode="));
    }

    #[test]
    fn base64_and_escaping_follow_the_rfcs() {
        // RFC 4648 section 10 vectors.
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
        assert_eq!(escape("+/8="), "%2B%2F8%3D");
    }
}

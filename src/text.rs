//! Cutting text for logs, dead-letter headers and reasons: by characters, never inside
//! one, so no text from a vendor, Kafka or a config file can make a cut panic.

use std::borrow::Cow;

/// At most `max_chars` characters of `text`, with `…` marking a cut.
pub fn cut(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// At most `max_bytes` bytes of `text`, ending on a character boundary (no marker): for
/// fields whose limit is in bytes.
pub fn cut_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_between_characters_whatever_the_script() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc…");
        assert_eq!(cut("停车场编码错误", 2), "停车…");
        assert_eq!(cut("👍🏽ok", 1), "👍…");
        assert_eq!(cut("", 0), "");
        assert_eq!(cut("x", 0), "…");
        // Every byte length over a mixed string: no panic, always a prefix on a boundary.
        let mixed = "a停b👍c\u{3000}d";
        for n in 0..=mixed.len() + 1 {
            let c = cut_bytes(mixed, n);
            assert!(c.len() <= n && mixed.starts_with(c), "{n}: {c:?}");
        }
        assert_eq!(cut_bytes("停车", 4), "停");
    }
}

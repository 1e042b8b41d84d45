//! Plate normalisation shared by every vendor: one place decides what "a plate without
//! spaces" means.
//!
//! Canonical Chinese plates have no spaces (`浙A11111`), but edge systems and OCR send
//! `浙 A11111` or `浙\u{3000}B22222` (an ideographic space). Bingzhouxing's spec requires
//! plates without spaces; the ISP spec's example shows one, in a text whose other fields
//! have stray spaces too (`"park_code "`), so its reading is an option per sink.

use std::borrow::Cow;

pub use crate::config::vendor::PlateSpaces;

/// The plate as a sink sends it, borrowed when nothing changes.
pub fn normalize(plate: &str, spaces: PlateSpaces) -> Cow<'_, str> {
    match spaces {
        PlateSpaces::Strip if plate.chars().any(char::is_whitespace) => {
            Cow::Owned(plate.chars().filter(|c| !c.is_whitespace()).collect())
        }
        PlateSpaces::Strip | PlateSpaces::Keep => Cow::Borrowed(plate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ascii_and_ideographic_spaces() {
        assert_eq!(normalize("浙 A11111", PlateSpaces::Strip), "浙A11111");
        assert_eq!(normalize("浙\u{3000}B22222", PlateSpaces::Strip), "浙B22222");
        assert_eq!(normalize(" 浙\tC 3 3333\u{a0}", PlateSpaces::Strip), "浙C33333");
        assert!(matches!(normalize("浙A11111", PlateSpaces::Strip), Cow::Borrowed(_)));
    }

    #[test]
    fn keep_sends_as_received() {
        assert_eq!(normalize("浙 A11111", PlateSpaces::Keep), "浙 A11111");
        assert_eq!(normalize("浙\u{3000}B22222", PlateSpaces::Keep), "浙\u{3000}B22222");
    }
}

//! `lotbridge check-config --connect`: the go-live check (placeholder, filled in below).

use crate::config::Loaded;

/// Runs every check, printing one line each; true when all passed.
pub async fn run(_loaded: &Loaded, _out: &mut impl std::io::Write) -> bool {
    true
}

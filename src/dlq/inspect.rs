//! `dlq inspect`: dead letters grouped by sink, stage and reason, with counts and the
//! first and last time each group was written.

use super::read::{Letter, Reader};
use super::{DlqError, Selection};
use crate::config::KafkaConfig;
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::BTreeMap;

/// Longest reason shown; the rest of a vendor's message is in the dead letter's header.
const REASON_CHARS: usize = 100;

/// Dead letters sharing a sink, a stage and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `lotbridge.sink` (`-` when absent).
    pub sink: String,
    /// `lotbridge.stage` (`-` when absent).
    pub stage: String,
    /// The reason with its record-specific numbers folded (see [`reason_class`]).
    pub reason: String,
    /// How many.
    pub count: u64,
    /// Earliest dead-letter timestamp.
    pub first: Option<DateTime<Utc>>,
    /// Latest dead-letter timestamp.
    pub last: Option<DateTime<Utc>>,
}

/// The class of a dead letter's reason: its first two `": "`-separated parts, with every
/// number replaced by `#` except vendor codes and HTTP statuses (`code 1002`, `HTTP 503`),
/// so "gave up after 3600 s and 57 attempts: HTTP 503" and the same with 58 attempts group
/// together while different vendor codes do not.
pub fn reason_class(error: &str) -> String {
    let head: Vec<&str> = error.splitn(3, ": ").take(2).collect();
    let folded = fold_numbers(&head.join(": "));
    match folded.char_indices().nth(REASON_CHARS) {
        Some((i, _)) => format!("{}…", &folded[..i]),
        None => folded,
    }
}

fn fold_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        let mut number = c.to_string();
        while let Some(d) = chars.next_if(char::is_ascii_digit) {
            number.push(d);
        }
        let keep = out.ends_with("code ") || out.ends_with("HTTP ");
        out.push_str(if keep { &number } else { "#" });
    }
    out
}

/// Reads the whole dead-letter topic once and groups the selected dead letters, largest
/// groups first within each sink.
pub async fn inspect(kafka: &KafkaConfig, topic: &str, selection: &Selection) -> Result<Vec<Group>, DlqError> {
    selection.check()?;
    let mut reader = Reader::open(kafka, topic)?;
    let mut groups: BTreeMap<(String, String, String), Group> = BTreeMap::new();
    while let Some(letter) = reader.next().await? {
        if selection.matches(&letter) {
            add(&mut groups, &letter);
        }
    }
    let mut out: Vec<Group> = groups.into_values().collect();
    out.sort_by(|a, b| (&a.sink, &a.stage, b.count, &a.reason).cmp(&(&b.sink, &b.stage, a.count, &b.reason)));
    Ok(out)
}

fn add(groups: &mut BTreeMap<(String, String, String), Group>, letter: &Letter) {
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let (sink, stage, reason) =
        (text(&letter.sink), text(&letter.stage), reason_class(letter.error.as_deref().unwrap_or("-")));
    let group = groups.entry((sink.clone(), stage.clone(), reason.clone())).or_insert(Group {
        sink,
        stage,
        reason,
        count: 0,
        first: None,
        last: None,
    });
    group.count += 1;
    if let Some(at) = letter.timestamp {
        group.first = Some(group.first.map_or(at, |f| f.min(at)));
        group.last = Some(group.last.map_or(at, |l| l.max(at)));
    }
}

/// A fixed-width table of `groups`, one line per group, and a total line.
pub fn render_table(groups: &[Group]) -> String {
    let width = |f: fn(&Group) -> usize, title: &str| groups.iter().map(f).chain([title.len()]).max().unwrap_or(0);
    let (ws, wt) = (width(|g| g.sink.chars().count(), "SINK"), width(|g| g.stage.len(), "STAGE"));
    let time = |t: Option<DateTime<Utc>>| t.map_or("-".into(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    let mut out = format!("{:ws$}  {:wt$}  {:>7}  {:20}  {:20}  REASON\n", "SINK", "STAGE", "COUNT", "FIRST", "LAST");
    for g in groups {
        out.push_str(&format!(
            "{:ws$}  {:wt$}  {:>7}  {:20}  {:20}  {}\n",
            g.sink,
            g.stage,
            g.count,
            time(g.first),
            time(g.last),
            g.reason
        ));
    }
    let total: u64 = groups.iter().map(|g| g.count).sum();
    out.push_str(&format!("{total} dead letters in {} groups\n", groups.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_across_record_specific_numbers_but_not_across_codes() {
        let a = reason_class("gave up after 3600 s and 57 attempts: HTTP 503: busy");
        let b = reason_class("gave up after 3601 s and 58 attempts: HTTP 503: busy again");
        assert_eq!(a, b);
        assert_eq!(a, "gave up after # s and # attempts: HTTP 503");
        assert_ne!(reason_class("code 1000: m1000 [unknown lotCode]"), reason_class("code 1002: bad auth"));
        assert_eq!(reason_class("data.free: 9 exceeds data.total 5"), "data.free: # exceeds data.total #");
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let long = "车".repeat(300);
        let class = reason_class(&long);
        assert_eq!(class.chars().count(), REASON_CHARS + 1);
        assert!(class.ends_with('…'));
    }

    #[test]
    fn groups_count_and_span_their_letters() {
        let mut groups = BTreeMap::new();
        let letter = |ms: i64, error: &str| Letter {
            sink: Some("bzx".into()),
            stage: Some("deliver".into()),
            error: Some(error.into()),
            timestamp: DateTime::from_timestamp_millis(ms),
            ..Letter::default()
        };
        add(&mut groups, &letter(2_000, "code 1000: unknown lot: L1"));
        add(&mut groups, &letter(1_000, "code 1000: unknown lot: L2"));
        add(&mut groups, &letter(3_000, "code 1002: z"));
        let g: Vec<&Group> = groups.values().collect();
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].count, g[0].first, g[0].last),
            (2, DateTime::from_timestamp_millis(1_000), DateTime::from_timestamp_millis(2_000))
        );
        let table = render_table(&groups.into_values().collect::<Vec<_>>());
        assert!(table.contains("code 1000"), "{table}");
        assert!(table.ends_with("3 dead letters in 2 groups\n"), "{table}");
    }
}

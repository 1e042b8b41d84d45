//! Dead-letter tools for operators: `lotbridge dlq inspect` summarises the dead-letter
//! topic, `lotbridge dlq replay` re-publishes the dead letters an operator selects to
//! their original topic once the cause is fixed.
//!
//! Both read the dead-letter topic from the beginning up to the high watermarks taken at
//! start, with assigned partitions and no consumer group: they never commit an offset, never
//! join a group, and never write anything but the replayed records.

mod inspect;
mod read;
mod replay;

pub use inspect::{inspect, reason_class, render_table, Group};
pub use read::{Letter, Reader};
pub use replay::{progress_bar, replay, ReplayOptions, ReplaySummary};

use chrono::{DateTime, Utc};
use rdkafka::error::KafkaError;

/// Headers lotbridge adds to a replayed record (the dead letter's own headers are not
/// copied: the engine never reads them).
pub mod headers {
    /// The sink whose dead letter this record was: a record replayed for sink A is consumed
    /// again by every sink's group, and a sink other than this one may skip it.
    pub const REPLAY_SINK: &str = "lotbridge.replay.sink";
    /// `<dead-letter topic>/<partition>/<offset>` the record was replayed from.
    pub const REPLAY_OF: &str = "lotbridge.replay.of";
}

/// Why a dead-letter tool stopped.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The cluster refused or did not answer.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The topic to read does not exist.
    #[error("topic {0:?} does not exist")]
    NoSuchTopic(String),
    /// Nothing arrived for too long before the high watermarks were reached.
    #[error("reading {topic:?} stalled: no record for {secs} s before the end taken at start")]
    Stalled {
        /// The topic read.
        topic: String,
        /// How long nothing arrived.
        secs: u64,
    },
    /// The options contradict themselves or the configuration.
    #[error("{0}")]
    Invalid(String),
}

impl DlqError {
    /// Whether running the same command again may succeed (broker trouble, not a mistake).
    pub fn is_retryable(&self) -> bool {
        matches!(self, DlqError::Kafka(_) | DlqError::Stalled { .. })
    }
}

/// Which dead letters a command applies to. Every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only dead letters of this sink (`lotbridge.sink`).
    pub sink: Option<String>,
    /// Only dead letters of this stage: `decode`, `map` or `deliver` (`lotbridge.stage`).
    pub stage: Option<String>,
    /// Only dead letters of this lot: the event's `lot` field, or the record's key when the
    /// value is not a readable event (see [`Letter::lot`]).
    pub lot: Option<String>,
    /// Only dead letters written at or after this time (the dead letter's timestamp).
    pub since: Option<DateTime<Utc>>,
    /// Only dead letters written before this time.
    pub until: Option<DateTime<Utc>>,
}

impl Selection {
    /// Whether `letter` is selected. A time bound excludes letters without a timestamp.
    pub fn matches(&self, letter: &Letter) -> bool {
        let same = |want: &Option<String>, got: &Option<String>| want.as_ref().is_none_or(|w| got.as_ref() == Some(w));
        if !same(&self.sink, &letter.sink) || !same(&self.stage, &letter.stage) {
            return false;
        }
        if self.lot.is_some() && !same(&self.lot, &letter.lot()) {
            return false;
        }
        match letter.timestamp {
            Some(at) => self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u),
            None => self.since.is_none() && self.until.is_none(),
        }
    }

    /// Refuses a window that selects nothing and a stage that does not exist.
    pub fn check(&self) -> Result<(), DlqError> {
        if let (Some(s), Some(u)) = (self.since, self.until) {
            if s >= u {
                return Err(DlqError::Invalid(format!("--since {s} is not before --until {u}")));
            }
        }
        if self.lot.as_deref().is_some_and(str::is_empty) {
            return Err(DlqError::Invalid("--lot needs a lot code".into()));
        }
        if let Some(stage) = &self.stage {
            if !["decode", "map", "deliver"].contains(&stage.as_str()) {
                return Err(DlqError::Invalid(format!("--stage {stage:?}: write decode, map or deliver")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(sink: &str, stage: &str, at: Option<i64>) -> Letter {
        Letter {
            sink: Some(sink.into()),
            stage: Some(stage.into()),
            timestamp: at.and_then(DateTime::from_timestamp_millis),
            ..Letter::default()
        }
    }

    fn at(ms: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(ms)
    }

    #[test]
    fn an_empty_selection_takes_everything() {
        assert!(Selection::default().matches(&letter("a", "deliver", None)));
        assert!(Selection::default().matches(&Letter::default()));
    }

    #[test]
    fn sink_and_stage_must_both_match() {
        let sel = Selection { sink: Some("a".into()), stage: Some("deliver".into()), ..Selection::default() };
        assert!(sel.matches(&letter("a", "deliver", None)));
        assert!(!sel.matches(&letter("b", "deliver", None)));
        assert!(!sel.matches(&letter("a", "decode", None)));
        assert!(!sel.matches(&Letter::default()), "a record without lotbridge headers is not sink a's");
    }

    #[test]
    fn lot_is_the_events_lot_or_else_the_key() {
        let event = |lot: &str| format!(r#"{{"v":1,"id":"e","type":"lot.heartbeat","lot":"{lot}","data":{{}}}}"#);
        let with = |key: Option<&str>, value: &str| Letter {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.as_bytes().to_vec(),
            ..letter("a", "deliver", None)
        };
        let sel = Selection { lot: Some("P1".into()), ..Selection::default() };
        assert!(sel.matches(&with(Some("other-key"), &event("P1"))), "the event's lot decides");
        assert!(!sel.matches(&with(Some("P1"), &event("P2"))), "even against the key");
        assert!(sel.matches(&with(Some("P1"), "{not json")), "an unreadable value falls back to the key");
        assert!(!sel.matches(&with(None, "{not json")), "no lot at all: not P1's");
        assert!(!sel.matches(&with(Some("P10"), "[1]")), "whole codes, not prefixes");
        let lots = |value: &str| with(Some("K"), value).lot();
        assert_eq!(lots(r#"{"lot": 5}"#).as_deref(), Some("K"), "a lot that is not text: the key");
        assert!(Selection { lot: Some(String::new()), ..Selection::default() }.check().is_err());
    }

    #[test]
    fn since_is_inclusive_and_until_exclusive() {
        let sel = Selection { since: at(1_000), until: at(2_000), ..Selection::default() };
        assert!(!sel.matches(&letter("a", "deliver", Some(999))));
        assert!(sel.matches(&letter("a", "deliver", Some(1_000))));
        assert!(sel.matches(&letter("a", "deliver", Some(1_999))));
        assert!(!sel.matches(&letter("a", "deliver", Some(2_000))));
        assert!(!sel.matches(&letter("a", "deliver", None)), "no timestamp, no match under a time bound");
    }

    #[test]
    fn contradictory_options_are_refused() {
        let empty = Selection { since: at(2_000), until: at(1_000), ..Selection::default() };
        assert!(empty.check().is_err());
        let typo = Selection { stage: Some("delivery".into()), ..Selection::default() };
        assert!(typo.check().unwrap_err().to_string().contains("deliver"));
        assert!(Selection { stage: Some("map".into()), ..Selection::default() }.check().is_ok());
    }
}

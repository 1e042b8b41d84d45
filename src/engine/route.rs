//! Routing of decoded batches: offsets registered, records counted, the invalid
//! dead-lettered, the skipped completed, and the rest queued on their lanes.

use super::acks::Outcome;
use super::decode::{Batch, Prepared, Routed};
use super::deliver::run_lane;
use super::lane::{Item, Origin, ReplyTo};
use super::output::Stage;
use super::sink::Sink;
use super::task::spawn_guarded;
use crate::event::{Event, EventData};
use crate::photo::PhotoOutcome;
use crate::vendors::Mapping;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

/// Routes a batch: registers its offsets, counts it, dead-letters the invalid, completes
/// the skipped, and queues the rest on their lanes, each lane once per batch.
pub(crate) fn route_all(sink: &Arc<Sink>, batch: Batch) {
    count_consumed(sink, &batch.records);
    let read = batch.records.iter().map(|p| (&p.origin_tp, p.offset, p.generation));
    let tickets = sink.partitions.register_read(read);
    let before = sink.partitions.finished_before(&tickets);
    let read_at = Instant::now();
    let mut lanes: HashMap<String, Vec<Item>> = HashMap::new();
    let mut finished = Vec::new();
    for ((p, ticket), before) in batch.records.into_iter().zip(tickets).zip(before) {
        let Some(ticket) = ticket else {
            continue; // a late record of a revoked partition, or read twice: handled elsewhere
        };
        if p.replay_for.as_deref().is_some_and(|target| target != sink.name()) {
            sink.metrics.skipped.with_label_values(&[sink.name(), "replayed_for_other_sink"]).inc();
            finished.push(ticket);
            continue;
        }
        if let (Some(book), Ok(routed)) = (&sink.lot_book, &p.result) {
            book.observe(&routed.event, &p.origin_tp);
        }
        if before {
            // Finished by the partition's previous reader, after its committed offset (the
            // map committed with it, `ahead.rs`): not sent again.
            sink.metrics.skipped.with_label_values(&[sink.name(), "finished_before"]).inc();
            finished.push(ticket);
            continue;
        }
        match p.result {
            Err((stage, error)) => {
                let origin = Arc::new(Origin { ticket, key: p.key, raw: p.raw });
                dead_letter_invalid(sink, origin, stage, error);
            }
            Ok(Routed { mapping: Mapping::Skip(reason), .. }) => {
                sink.metrics.skipped.with_label_values(&[sink.name(), reason.as_str()]).inc();
                finished.push(ticket);
            }
            Ok(Routed { lot, mapping: Mapping::Record(mapped), event }) => {
                count_photo(sink, mapped.photo.as_ref());
                let item = Item {
                    reply_to: reply_to(&event),
                    event_type: event.event_type(),
                    event_at: event.at,
                    read_at,
                    origin: Some(Arc::new(Origin { ticket, key: p.key, raw: p.raw })),
                    mapped,
                    backlog: batch.backlog,
                };
                lanes.entry(lot).or_default().push(item);
            }
        }
    }
    sink.complete_all(&finished);
    for (lot, items) in lanes {
        if let Some(origin) = items.first().and_then(|i| i.origin.as_ref()) {
            super::schedule::note_live(sink, &lot, &origin.ticket.tp);
        }
        submit_all(sink, &lot, items);
    }
}

/// Counts a batch's records by topic (nearly always one topic per batch).
fn count_consumed(sink: &Sink, records: &[Prepared]) {
    let mut runs: Vec<(&str, u64)> = Vec::new();
    for p in records {
        match runs.last_mut() {
            Some((topic, n)) if *topic == &*p.origin_tp.0 => *n += 1,
            _ => runs.push((&p.origin_tp.0, 1)),
        }
    }
    for (topic, n) in runs {
        sink.metrics.consumed.with_label_values(&[sink.name(), topic]).inc_by(n);
    }
}

fn dead_letter_invalid(sink: &Arc<Sink>, origin: Arc<Origin>, stage: Stage, error: String) {
    sink.metrics.invalid.with_label_values(&[sink.name(), stage.as_str()]).inc();
    let size = origin.raw.len();
    sink.budget.hold(size, 1);
    let task_sink = sink.clone();
    spawn_guarded(sink, "dead-lettering an invalid record", async move {
        let sink = task_sink;
        sink.dead_letter(&origin, stage, &error, 0).await;
        sink.budget.release(size, 1);
        sink.acks.count_label("invalid", "dead_lettered", 1);
        sink.complete_all([&origin.ticket]);
    });
}

/// Queues an item on its lane, settling what coalesced and starting the lane if new.
pub(crate) fn submit(sink: &Arc<Sink>, lot: &str, item: Item) {
    submit_all(sink, lot, vec![item]);
}

/// Queues items of one lot on its lane, in order, with one wake-up of the lane.
pub(crate) fn submit_all(sink: &Arc<Sink>, lot: &str, items: Vec<Item>) {
    sink.budget.hold(items.iter().map(Item::size).sum(), items.len());
    let (settled, new_lane) = sink.enqueue_all(lot, items);
    for (item, how) in settled {
        sink.finish(&item, Outcome::Settled(how));
    }
    if let Some(lane) = new_lane {
        spawn_guarded(sink, "running a lane", run_lane(sink.clone(), lot.to_string(), lane));
    }
}

fn reply_to(event: &Event) -> Option<ReplyTo> {
    match &event.data {
        EventData::MemberCouponsRequested(q) => {
            Some(ReplyTo { request_id: event.id.clone(), member_id: q.member_id.clone(), lot: event.lot.clone() })
        }
        _ => None,
    }
}

fn count_photo(sink: &Sink, photo: Option<&PhotoOutcome>) {
    let Some(photo) = photo else { return };
    let outcome = match photo {
        PhotoOutcome::Unchanged => "unchanged",
        PhotoOutcome::Recompressed { before_bytes, after_bytes } => {
            let saved = before_bytes.saturating_sub(*after_bytes) as u64;
            sink.metrics.photo_bytes_saved.with_label_values(&[sink.name()]).inc_by(saved);
            "recompressed"
        }
        PhotoOutcome::Dropped(reason) => reason.as_str(),
    };
    sink.metrics.photos.with_label_values(&[sink.name(), outcome]).inc();
}

//! Panics and dying tasks. A panic while handling one record becomes that record's dead
//! letter (`internal error: panic: ...`); a task of the engine that dies any other way
//! marks its sink failed, which fails `/healthz` and stops the engine with an error, so
//! the process exits non-zero and the orchestrator restarts it. Either way no offset
//! passes a record without a final outcome.

use super::sink::Sink;
use crate::text::cut;
use futures::FutureExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The message of a caught panic, cut for a reason or a log line.
pub(crate) fn panic_text(panic: &(dyn Any + Send)) -> String {
    let text = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s,
        (_, Some(s)) => s.as_str(),
        _ => "(no message)",
    };
    cut(text, 200).into_owned()
}

/// Runs `f`, turning a panic into `Err("internal error: panic while {what}: ...")`.
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|p| format!("internal error: panic while {what}: {}", panic_text(&*p)))
}

/// Spawns a task of `sink`; if it panics, the sink is marked failed (the engine stops).
pub(crate) fn spawn_guarded<F>(sink: &Arc<Sink>, what: &'static str, task: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let sink = sink.clone();
    tokio::spawn(async move {
        if let Err(p) = AssertUnwindSafe(task).catch_unwind().await {
            sink.fail(what, &panic_text(&*p));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_reasons_with_their_message_cut_on_a_character_boundary() {
        let long = "停".repeat(300);
        let err = guard("mapping", || -> u8 { panic!("{long}") }).unwrap_err();
        assert!(err.starts_with("internal error: panic while mapping: 停停"), "{err}");
        assert!(err.chars().count() < 260, "cut: {}", err.chars().count());
        assert_eq!(guard("x", || 7), Ok(7));
        let err = guard("x", || -> u8 { std::panic::panic_any(42u32) }).unwrap_err();
        assert!(err.ends_with("(no message)"), "{err}");
    }
}

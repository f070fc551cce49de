//! Copies past the duplicate window.
//!
//! A receiver sees the same event twice when it is redelivered (same stream message) or when
//! it is stored again under another message id (a producer's retry, a republish). Within the
//! events stream's duplicate window JetStream drops the second copy of what the handler emits
//! (output ids are derived from the input's id); past it nothing would. So a reactor asks the
//! log before it handles an input that may be past the window: did it already answer this
//! event? Saga instances recognise copies themselves (the record keeps the ids of its last
//! inputs).

use std::time::Duration;

use choreo_schemas::{Event, EventType};
use time::OffsetDateTime;

use crate::bus::Bus;
use crate::error::BusError;

/// Whether the outputs of an earlier handling of this input may be older than the duplicate
/// `window`: the input (or the event it copies) is older than half the window, by the older of
/// its `time` and its stored time (half: room for clocks that disagree).
pub(crate) fn maybe_past_window(
    event_time: OffsetDateTime,
    stored: OffsetDateTime,
    now: OffsetDateTime,
    window: Duration,
) -> bool {
    let oldest = event_time.min(stored);
    let age = now - oldest;
    age >= time::Duration::try_from(window / 2).unwrap_or(time::Duration::MAX)
}

/// Whether the actor with `source` already answered `input`: an event of one of `types` in the
/// input's correlation, caused by the input and emitted by that actor, is on the log. An actor
/// that emits nothing cannot be asked (`false`): it must be idempotent itself.
pub(crate) async fn already_answered<'a>(
    bus: &Bus,
    input: &Event,
    source: &str,
    types: impl IntoIterator<Item = &'a EventType>,
) -> Result<bool, BusError> {
    let partition = bus.partition_of(&input.correlation);
    let filters: Vec<String> = types
        .into_iter()
        .map(|ty| bus.subjects().event(partition, &input.correlation, ty))
        .collect();
    if filters.is_empty() {
        return Ok(false);
    }
    let stored = bus
        .read_raw_multi(&bus.config().events_stream(), filters)
        .await?;
    Ok(stored.iter().any(|m| {
        m.decode(bus.subjects())
            .is_ok_and(|e| e.causation == input.id && e.source == source)
    }))
}

#[cfg(test)]
mod tests {
    use super::maybe_past_window;
    use std::time::Duration;
    use time::OffsetDateTime;

    #[test]
    fn an_input_is_suspect_from_half_the_window_by_its_older_clock() {
        let now = OffsetDateTime::from_unix_timestamp(10_000).expect("valid");
        let w = Duration::from_secs(120);
        let ago = |s: i64| now - time::Duration::seconds(s);
        assert!(!maybe_past_window(ago(1), ago(1), now, w), "fresh");
        assert!(!maybe_past_window(ago(59), ago(2), now, w));
        assert!(
            maybe_past_window(ago(60), ago(2), now, w),
            "old by its time"
        );
        assert!(
            maybe_past_window(ago(2), ago(300), now, w),
            "old by its stored time (a redelivery)"
        );
        // A time in the future (a skewed producer) does not hide an old stored time.
        assert!(maybe_past_window(
            now + time::Duration::hours(1),
            ago(61),
            now,
            w
        ));
        assert!(!maybe_past_window(
            now + time::Duration::hours(1),
            now,
            now,
            w
        ));
    }
}

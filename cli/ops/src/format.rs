//! Text output shared by the commands.

use choreo::StoredEvent;
use time::format_description::well_known::Rfc3339;

pub(crate) const TAIL_HEADER: &str =
    "TIME                            TYPE                      CORRELATION       CAUSATION                             SOURCE              DEPTH";

pub(crate) fn tail_line(stored: &StoredEvent) -> String {
    match &stored.event {
        Ok(e) => format!(
            "{:<31} {:<25} {:<17} {:<37} {:<19} {}",
            e.time.format(&Rfc3339).unwrap_or_default(),
            e.ty.as_str(),
            e.correlation.as_str(),
            if e.is_root() {
                "-".to_owned()
            } else {
                e.causation.to_string()
            },
            e.source,
            e.depth
        ),
        Err(err) => format!(
            "seq {} on {}: not a choreo event ({err})",
            stored.sequence, stored.subject
        ),
    }
}

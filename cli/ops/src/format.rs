//! Text output shared by the commands.

use choreo::StoredEvent;
use time::format_description::well_known::Rfc3339;

use crate::style::{paint, Style};

/// The header of `tail`'s lines (bold on a terminal: print it through [`paint`]).
pub(crate) const TAIL_HEADER: &str =
    "TIME                            TYPE                      CORRELATION       CAUSATION                             SOURCE              DEPTH";

/// `text` left-aligned in `width` columns, then coloured (the padding stays plain).
pub(crate) fn padded(text: &str, width: usize, style: Style) -> String {
    let pad = width.saturating_sub(text.chars().count());
    format!("{}{}", paint(text, style), " ".repeat(pad))
}

pub(crate) fn tail_line(stored: &StoredEvent) -> String {
    match &stored.event {
        Ok(e) => format!(
            "{:<31} {} {:<17} {:<37} {:<19} {}",
            e.time.format(&Rfc3339).unwrap_or_default(),
            padded(e.ty.as_str(), 25, Style::Type),
            e.correlation.as_str(),
            if e.is_root() {
                "-".to_owned()
            } else {
                e.causation.to_string()
            },
            e.source,
            e.depth
        ),
        Err(err) => paint(
            &format!(
                "seq {} on {}: not a choreo event ({err})",
                stored.sequence, stored.subject
            ),
            Style::Bad,
        ),
    }
}

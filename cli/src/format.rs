//! Text output shared by the commands.

use std::collections::BTreeMap;

use choreo::{Event, EventId, StoredEvent};
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

/// Render the causal tree of a correlation's events: children indented under their cause.
pub(crate) fn causal_tree(events: &[Event]) -> String {
    let ids: std::collections::BTreeSet<EventId> = events.iter().map(|e| e.id).collect();
    let mut children: BTreeMap<EventId, Vec<&Event>> = BTreeMap::new();
    let mut roots = Vec::new();
    for e in events {
        if e.is_root() || !ids.contains(&e.causation) {
            roots.push(e);
        } else {
            children.entry(e.causation).or_default().push(e);
        }
    }
    let mut out = String::new();
    for r in roots {
        walk(r, &children, "", true, true, &mut out);
    }
    out
}

fn walk(
    e: &Event,
    children: &BTreeMap<EventId, Vec<&Event>>,
    prefix: &str,
    last: bool,
    root: bool,
    out: &mut String,
) {
    let branch = if root {
        ""
    } else if last {
        "└─ "
    } else {
        "├─ "
    };
    out.push_str(&format!(
        "{prefix}{branch}{} [{}] by {}\n",
        e.ty,
        short(&e.id),
        e.source
    ));
    let kids = children.get(&e.id).map(Vec::as_slice).unwrap_or_default();
    let next_prefix = if root {
        prefix.to_owned()
    } else {
        format!("{prefix}{}", if last { "   " } else { "│  " })
    };
    for (i, k) in kids.iter().enumerate() {
        walk(k, children, &next_prefix, i + 1 == kids.len(), false, out);
    }
}

fn short(id: &EventId) -> String {
    id.to_string().chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo::{CorrelationId, EventType};

    #[test]
    fn children_are_indented_under_their_cause() {
        let c = CorrelationId::new("c").expect("valid");
        let root = Event::root_raw(
            "/a",
            c.clone(),
            EventType::new("a.v1").expect("valid"),
            vec![],
        );
        let mut child = Event::root_raw(
            "/b",
            c.clone(),
            EventType::new("b.v1").expect("valid"),
            vec![],
        );
        child.causation = root.id;
        let mut grandchild =
            Event::root_raw("/c", c, EventType::new("c.v1").expect("valid"), vec![]);
        grandchild.causation = child.id;
        let tree = causal_tree(&[root, child, grandchild]);
        let lines: Vec<&str> = tree.lines().collect();
        assert!(lines[0].starts_with("a.v1"), "{tree}");
        assert!(lines[1].starts_with("└─ b.v1"), "{tree}");
        assert!(lines[2].starts_with("   └─ c.v1"), "{tree}");
    }
}

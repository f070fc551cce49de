//! Text, DOT and Mermaid renderings of a causal tree.

use std::fmt::Write as _;

use super::tree::{CausalTree, NodeKind, TreeNode};

/// The last 8 hex digits of the id: the random part of a root's UUID v7 (its first digits are
/// the timestamp, alike for every event of a minute) and part of a derived id's hash.
fn short(n: &TreeNode) -> String {
    let hex = n.id.as_uuid().simple().to_string();
    hex.get(hex.len().saturating_sub(8)..)
        .unwrap_or(&hex)
        .to_owned()
}

fn marker(n: &TreeNode) -> String {
    match &n.kind {
        NodeKind::Event if n.redriven => " (redriven)".to_owned(),
        NodeKind::Event => String::new(),
        NodeKind::SagaDecision => " [saga]".to_owned(),
        NodeKind::DeadLetter { actor, reason } => format!(" [DLQ by {actor}: {reason}]"),
        NodeKind::Deadlock { cycle, victim } => {
            format!(" [DEADLOCK: {cycle}; victim {victim}, youngest wait]")
        }
        NodeKind::Stall { detail } => format!(" [STALL: {detail}]"),
    }
}

impl CausalTree {
    /// An indented tree, children under their cause.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for &r in &self.roots {
            self.walk(r, "", true, true, &mut out);
        }
        out
    }

    fn walk(&self, i: usize, prefix: &str, last: bool, root: bool, out: &mut String) {
        let Some(n) = self.nodes.get(i) else { return };
        let branch = if root {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let what = match n.kind {
            NodeKind::DeadLetter { .. } => "✗ ",
            NodeKind::Deadlock { .. } => "⟲ ",
            NodeKind::Stall { .. } => "⏸ ",
            _ => "",
        };
        let _ = writeln!(
            out,
            "{prefix}{branch}{what}{} #{} [{}] by {}{}",
            n.ty,
            n.sequence,
            short(n),
            n.source,
            marker(n)
        );
        let next = if root {
            prefix.to_owned()
        } else {
            format!("{prefix}{}", if last { "   " } else { "│  " })
        };
        for (k, c) in n.children.iter().enumerate() {
            self.walk(*c, &next, k + 1 == n.children.len(), false, out);
        }
    }

    /// Graphviz DOT.
    pub fn to_dot(&self, title: &str) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
            esc(title)
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let style = match n.kind {
                NodeKind::Event => "",
                NodeKind::SagaDecision => ", style=rounded",
                NodeKind::DeadLetter { .. } => ", color=red, fontcolor=red",
                NodeKind::Deadlock { .. } => ", color=orange, fontcolor=orange, penwidth=2",
                NodeKind::Stall { .. } => ", color=gray, fontcolor=gray",
            };
            let _ = writeln!(
                out,
                "  n{i} [label=\"{}\\n{} #{}{}\"{style}];",
                esc(&n.ty),
                esc(&n.source),
                n.sequence,
                esc(&marker(n))
            );
        }
        for (p, c) in self.edges() {
            let _ = writeln!(out, "  n{p} -> n{c};");
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for (i, n) in self.nodes.iter().enumerate() {
            let label =
                format!("{}<br/>{} #{}{}", n.ty, n.source, n.sequence, marker(n)).replace('"', "'");
            let shape = match n.kind {
                NodeKind::Event => format!("n{i}[\"{label}\"]"),
                NodeKind::SagaDecision => format!("n{i}([\"{label}\"])"),
                NodeKind::DeadLetter { .. } => format!("n{i}{{{{\"{label}\"}}}}"),
                NodeKind::Deadlock { .. } | NodeKind::Stall { .. } => format!("n{i}>[\"{label}\"]"),
            };
            let _ = writeln!(out, "  {shape}");
        }
        for (p, c) in self.edges() {
            let _ = writeln!(out, "  n{p} --> n{c}");
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::super::{History, HistoryEntry};
    use choreo_schemas::{CorrelationId, Event, EventType};

    fn history() -> History {
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
        child.depth = 1;
        let mut saga = Event::root_raw(
            "/sagas/s",
            c,
            EventType::new("choreo.saga.started").expect("valid"),
            vec![],
        );
        saga.causation = child.id;
        saga.depth = 2;
        History {
            events: vec![
                HistoryEntry {
                    stored_ms: 0,
                    sequence: 1,
                    event: root,
                    redriven_from: None,
                    redriven_to: None,
                },
                HistoryEntry {
                    stored_ms: 0,
                    sequence: 2,
                    event: child,
                    redriven_from: None,
                    redriven_to: None,
                },
                HistoryEntry {
                    stored_ms: 0,
                    sequence: 3,
                    event: saga,
                    redriven_from: None,
                    redriven_to: None,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn text_tree_indents_children_and_marks_saga_decisions() {
        let t = history().tree();
        assert!(t.is_well_formed());
        let text = t.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("a.v1 #1"), "{text}");
        assert!(lines[1].starts_with("└─ b.v1 #2"), "{text}");
        assert!(
            lines[2].starts_with("   └─ choreo.saga.started #3") && lines[2].ends_with("[saga]"),
            "{text}"
        );
    }

    #[test]
    fn short_ids_of_roots_made_in_one_minute_differ() {
        let h = history();
        let t = h.tree();
        let shorts: std::collections::BTreeSet<String> = t.nodes.iter().map(super::short).collect();
        assert_eq!(shorts.len(), t.nodes.len(), "{shorts:?}");
        // Two fresh v7 ids share their leading (timestamp) digits, not their short forms.
        let (a, b) = (
            choreo_schemas::EventId::new_root(),
            choreo_schemas::EventId::new_root(),
        );
        let tail = |id: &choreo_schemas::EventId| {
            let hex = id.as_uuid().simple().to_string();
            hex[hex.len() - 8..].to_owned()
        };
        assert_ne!(tail(&a), tail(&b));
        assert!(t.nodes.iter().all(|n| super::short(n).len() == 8));
    }

    #[test]
    fn dot_and_mermaid_have_every_node_and_edge() {
        let t = history().tree();
        let dot = t.to_dot("c");
        assert!(dot.starts_with("digraph \"c\" {") && dot.trim_end().ends_with('}'));
        assert_eq!(dot.matches(" -> ").count(), 2);
        let mermaid = t.to_mermaid();
        assert!(mermaid.starts_with("flowchart TD"));
        assert_eq!(mermaid.matches(" --> ").count(), 2);
        assert!(
            mermaid.contains("n2([\""),
            "saga decisions are rounded: {mermaid}"
        );
    }
}

//! Tests of the timeline renderer.
use super::*;

fn bucket(at_ms: u64, ops: f64, p50: f64, p99: f64) -> Bucket {
    Bucket {
        at_ms,
        ops_per_s: ops,
        p50_ms: p50,
        p99_ms: p99,
    }
}
fn band(from_ms: u64, to_ms: u64, kind: &str, target: &str) -> Band {
    Band {
        from_ms,
        to_ms,
        kind: kind.into(),
        target: target.into(),
    }
}
fn phase(name: &str, from_ms: u64, to_ms: u64) -> Phase {
    Phase {
        name: name.into(),
        from_ms,
        to_ms,
    }
}
fn example() -> Timeline {
    Timeline {
        title: "seed 42".into(),
        buckets: vec![
            bucket(0, 100.0, 2.0, 9.0),
            bucket(1000, 80.0, 3.0, 40.0),
            bucket(2000, 120.0, 2.5, 12.0),
        ],
        faults: vec![
            band(500, 1500, "partition", "n1 <&>"),
            band(1200, 1800, "latency", "s2"),
        ],
        phases: vec![phase("warm-up", 0, 1000), phase("faults", 1000, 2000)],
    }
}
/// Asserts the document's shape: one root, balanced tags, every `&` an entity, no NaN or inf.
fn well_formed(svg: &str) {
    let svg = svg.trim();
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches("<svg").count(), 1);
    for tag in ["text", "title", "g"] {
        let open =
            svg.matches(&format!("<{tag}>")).count() + svg.matches(&format!("<{tag} ")).count();
        assert_eq!(
            open,
            svg.matches(&format!("</{tag}>")).count(),
            "<{tag}> unbalanced"
        );
    }
    for (i, _) in svg.match_indices('&') {
        let rest = &svg[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| rest.starts_with(e)),
            "bare & at {i}"
        );
    }
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
}

#[test]
fn small_example_has_the_expected_elements() {
    let svg = render(&example());
    well_formed(&svg);
    // Background, two chart frames, two chart bands, two lane bars, two legend swatches.
    assert_eq!(svg.matches("<rect").count(), 9);
    assert_eq!(svg.matches("<polyline").count(), 3);
    assert_eq!(svg.matches("<polygon").count(), 1);
    assert_eq!(svg.matches(r#"stroke-dasharray"#).count(), 3);
    assert!(svg.contains("seed 42") && svg.contains("warm-up") && svg.contains("height=\"460.0\""));
}

#[test]
fn strings_are_escaped() {
    let mut t = example();
    t.title = r#"a"b'c"#.into();
    t.phases[0].name = "<heal>".into();
    let svg = render(&t);
    well_formed(&svg);
    assert!(svg.contains("n1 &lt;&amp;&gt;") && !svg.contains("n1 <&>"));
    assert!(svg.contains("a&quot;b&apos;c") && svg.contains("&lt;heal&gt;"));
    assert!(!svg.contains("<heal>"));
}

#[test]
fn each_fault_has_a_band_in_its_kind_colour() {
    let mut t = example();
    t.faults.push(band(100, 300, "partition", "n3"));
    let svg = render(&t);
    well_formed(&svg);
    assert_eq!(svg.matches(r#"class="band""#).count(), 3);
    assert_eq!(svg.matches(r#"class="bar""#).count(), 3);
    let colour = colours(&["latency", "partition"].into());
    assert_ne!(colour["latency"], colour["partition"]);
    for (kind, n) in [("partition", 2), ("latency", 1)] {
        let c = colour[kind];
        let band = format!(r#"class="band" fill="{c}" fill-opacity="0.16""#);
        assert_eq!(svg.matches(&band).count(), n, "{kind}");
        let bar = format!(r#"class="bar" rx="2" fill="{c}""#);
        assert_eq!(svg.matches(&bar).count(), n, "{kind}");
        assert!(
            svg.contains(&format!(r#"fill="{c}"/><text x="#)),
            "legend {kind}"
        );
    }
}

#[test]
fn colours_are_stable_and_distinct() {
    let kinds: BTreeSet<&str> = ["cut", "delay", "kill", "pause", "partition", "slow"].into();
    let colour = colours(&kinds);
    assert_eq!(colour, colours(&kinds));
    assert_eq!(colour.values().collect::<BTreeSet<_>>().len(), kinds.len());
    // A kind alone in a picture gets its home colour; so does the first kind by name.
    assert_eq!(colours(&["cut"].into())["cut"], colour["cut"]);
}

#[test]
fn bands_are_clamped_and_inverted_ones_dropped() {
    let mut t = example();
    t.faults = vec![
        band(0, u64::MAX, "cut", "n1"),
        band(1800, 900, "ghost", "n9"),
        band(9000, 9500, "tardy", "n8"),
    ];
    let svg = render(&t);
    well_formed(&svg);
    let full = r#"<rect x="100.0" y="52.0" width="836.0" height="284.0" class="band""#;
    assert!(svg.contains(full), "{svg}");
    assert!(!svg.contains("ghost") && !svg.contains("n9") && !svg.contains("tardy"));
    assert_eq!(svg.matches(r#"class="band""#).count(), 1);
}

#[test]
fn edge_cases_render_without_nan() {
    let huge = Timeline {
        title: String::new(),
        buckets: vec![
            bucket(u64::MAX, f64::MAX, f64::MAX, f64::INFINITY),
            bucket(0, f64::NAN, -1.0, f64::NAN),
            bucket(u64::MAX / 2, f64::INFINITY, 1e-300, 1e300),
        ],
        faults: vec![band(u64::MAX, u64::MAX, "k", "t"), band(5, 1, "x", "y")],
        phases: vec![phase("p", u64::MAX - 1, u64::MAX), phase("q", 9, 3)],
    };
    let cases = [
        Timeline::default(),
        Timeline {
            buckets: vec![bucket(1000, 5.0, 1.0, 2.0)],
            ..example()
        },
        Timeline {
            buckets: vec![bucket(0, 0.0, 0.0, 0.0), bucket(1000, 0.0, 0.0, 0.0)],
            ..example()
        },
        Timeline {
            buckets: vec![],
            ..example()
        },
        Timeline {
            buckets: vec![bucket(7, 0.001, 0.0001, 0.002); 2],
            ..Timeline::default()
        },
        huge,
    ];
    for t in &cases {
        well_formed(&render(t));
    }
}

#[test]
fn rendering_is_deterministic() {
    let t = example();
    assert_eq!(render(&t), render(&t.clone()));
}

#[test]
fn labels_are_compact() {
    assert_eq!(fmt_num(0.0), "0");
    assert_eq!(fmt_num(2.5), "2.5");
    assert_eq!(fmt_num(1500.0), "1.5k");
    assert_eq!(fmt_num(2e6), "2M");
    assert_eq!(decade(-2), "0.01");
    assert_eq!(decade(3), "1000");
    assert_eq!(nice_step(37.0), 50.0);
}

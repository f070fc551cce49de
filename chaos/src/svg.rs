//! The chaos run's timeline as a standalone SVG document: throughput and latency over time, each
//! fault's interval as a translucent band behind the charts and as a bar in its target's lane,
//! phase boundaries as dashed lines, and a legend of fault kinds.
//!
//! Pure and dependency-free: [`render`] builds the document as a string. Every input string is
//! XML-escaped and every number is made finite before it is written, so odd input (no buckets,
//! inverted intervals, huge or non-finite values) gives an odd picture, never a panic or a `NaN`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One time bucket of the run (e.g. one second).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Bucket {
    /// Start of the bucket, in milliseconds since the run started.
    pub at_ms: u64,
    /// Operations completed per second during the bucket.
    pub ops_per_s: f64,
    /// Median latency in the bucket, in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency in the bucket, in milliseconds.
    pub p99_ms: f64,
}

/// One fault's interval.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Band {
    /// When the fault was applied, in milliseconds since the run started.
    pub from_ms: u64,
    /// When the fault was healed; `from_ms > to_ms` is treated as empty and not drawn.
    pub to_ms: u64,
    /// The fault's kind (e.g. `partition`); it picks the colour.
    pub kind: String,
    /// What the fault was applied to (a node, a server, a link); one lane per target.
    pub target: String,
}

/// A phase of the run (warm-up, faults, heal, quiescence, check).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Phase {
    /// The phase's name, shown at the top of its boundary line.
    pub name: String,
    /// Start of the phase, in milliseconds since the run started.
    pub from_ms: u64,
    /// End of the phase, in milliseconds since the run started.
    pub to_ms: u64,
}

/// Everything the picture shows.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Timeline {
    /// The title line.
    pub title: String,
    /// Throughput and latency per time bucket, in any order.
    pub buckets: Vec<Bucket>,
    /// The faults' intervals.
    pub faults: Vec<Band>,
    /// The run's phases.
    pub phases: Vec<Phase>,
}

const W: f64 = 960.0;
const LEFT: f64 = 100.0;
const PLOT_W: f64 = W - LEFT - 24.0;
const TP_TOP: f64 = 52.0;
const CHART_H: f64 = 130.0;
const LAT_TOP: f64 = 206.0;
const LAT_BOTTOM: f64 = LAT_TOP + CHART_H;
const LANES_TOP: f64 = 368.0;
const LANE_H: f64 = 20.0;
const END: &str = r#"text-anchor="end""#;
const MIDDLE: &str = r#"text-anchor="middle""#;
const FAINT: &str = r##"stroke="#eee""##;
const DASHED: &str = r##"stroke="#555" stroke-dasharray="4 3""##;
const HALO: &str =
    r##"font-size="10" fill="#555" stroke="#fff" stroke-width="3" paint-order="stroke""##;
const PALETTE: [&str; 10] = [
    "#e15759", "#f28e2b", "#edc948", "#b07aa1", "#76b7b2", "#ff9da7", "#9c755f", "#59a14f",
    "#4e79a7", "#bab0ac",
];

/// The colour of each fault kind: FNV-1a of the kind picks its slot in a fixed palette, so a kind
/// keeps its colour across pictures; a kind whose slot is taken (in name order) takes the next free
/// one, so up to ten kinds in one picture never share a colour.
fn colours<'a>(kinds: &BTreeSet<&'a str>) -> BTreeMap<&'a str, &'static str> {
    let mut taken = [false; PALETTE.len()];
    let mut out = BTreeMap::new();
    for kind in kinds {
        let h = kind.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let home = (h % PALETTE.len() as u64) as usize;
        let slot = (0..PALETTE.len())
            .map(|i| (home + i) % PALETTE.len())
            .find(|i| !taken[*i])
            .unwrap_or(home);
        taken[slot] = true;
        out.insert(*kind, PALETTE[slot]);
    }
    out
}

/// Escapes XML's special characters and drops the control characters XML 1.0 forbids.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c < ' ' && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// At most `n` characters of `s`, with an ellipsis when cut.
fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    s.chars().take(n.saturating_sub(1)).chain(['…']).collect()
}

/// A coordinate as written: one decimal, and never `NaN` or `inf`.
fn px(v: f64) -> String {
    format!("{:.1}", if v.is_finite() { v } else { 0.0 })
}

/// `v` if it is finite and positive, else 0.
fn pos(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

/// A round step (1, 2 or 5 times a power of ten) close to `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let step = mag
        * [1.0, 2.0, 5.0]
            .into_iter()
            .find(|m| n <= *m)
            .unwrap_or(10.0);
    if step.is_finite() && step > 0.0 {
        step
    } else {
        raw
    }
}

/// A compact label for a value: `950`, `2.5`, `1.5k`, `2M`, `3.1e9`.
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    let s = match a {
        _ if a >= 1e9 => format!("{v:.1e}"),
        _ if a >= 1e6 => format!("{:.1}M", v / 1e6),
        _ if a >= 1e3 => format!("{:.1}k", v / 1e3),
        _ if a >= 10.0 || a == 0.0 => format!("{v:.0}"),
        _ => format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned(),
    };
    s.replace(".0k", "k")
        .replace(".0M", "M")
        .replace(".0e", "e")
}

/// The label of the latency tick at `10^e` ms.
fn decade(e: i32) -> String {
    match e {
        e if e < 0 => format!("0.{}1", "0".repeat((-e - 1) as usize)),
        0..=3 => format!("1{}", "0".repeat(e as usize)),
        e => format!("1e{e}"),
    }
}

/// The x axis: the buckets' time range (else the phases' and faults'), onto which all is clamped.
struct Axis {
    lo: u64,
    hi: u64,
}

impl Axis {
    fn of(t: &Timeline) -> Axis {
        let ms: Vec<u64> = if t.buckets.is_empty() {
            let phases = t.phases.iter().map(|p| (p.from_ms, p.to_ms));
            let faults = t.faults.iter().map(|f| (f.from_ms, f.to_ms));
            let valid = phases.chain(faults).filter(|(from, to)| from <= to);
            valid.flat_map(|(from, to)| [from, to]).collect()
        } else {
            t.buckets.iter().map(|b| b.at_ms).collect()
        };
        let lo = ms.iter().copied().min().unwrap_or(0);
        let hi = ms.iter().copied().max().unwrap_or(1000);
        let hi = if hi > lo { hi } else { lo.saturating_add(1000) };
        Axis { lo, hi }
    }
    fn overlaps(&self, from: u64, to: u64) -> bool {
        from <= to && to >= self.lo && from <= self.hi
    }
    fn at(&self, ms: u64) -> f64 {
        let ms = ms.clamp(self.lo, self.hi);
        LEFT + (ms - self.lo) as f64 / (self.hi - self.lo).max(1) as f64 * PLOT_W
    }
    /// The interval clamped to the axis, as x and width (at least 1.5 so it shows).
    fn span(&self, from: u64, to: u64) -> (f64, f64) {
        let x0 = self.at(from);
        (x0, (self.at(to) - x0).max(1.5))
    }
}

/// The document being written; every number goes through [`px`].
struct Svg(String);

impl Svg {
    fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) {
        let (x1, y1, x2, y2) = (px(x1), px(y1), px(x2), px(y2));
        let _ = write!(
            self.0,
            r#"<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" {style}/>"#
        );
    }
    /// `body` must already be escaped.
    fn text(&mut self, (x, y): (f64, f64), attrs: &str, body: &str) {
        let (x, y) = (px(x), px(y));
        let _ = write!(self.0, r#"<text x="{x}" y="{y}" {attrs}>{body}</text>"#);
    }
    fn rect(&mut self, (x, y): (f64, f64), (w, h): (f64, f64), attrs: &str) {
        let (x, y, w, h) = (px(x), px(y), px(w), px(h));
        let _ = write!(
            self.0,
            r#"<rect x="{x}" y="{y}" width="{w}" height="{h}" {attrs}/>"#
        );
    }
    /// A horizontal grid line across the plot at `y`, labelled on the left.
    fn grid(&mut self, y: f64, label: &str) {
        self.line((LEFT, y), (LEFT + PLOT_W, y), FAINT);
        self.text((LEFT - 6.0, y + 3.0), END, label);
    }
    fn polyline(&mut self, points: &str, colour: &str) {
        let _ = write!(
            self.0,
            r#"<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#
        );
    }
}

/// Renders the timeline as a standalone SVG document, 960 wide and `420 + 20 × targets` high.
pub fn render(t: &Timeline) -> String {
    let mut buckets: Vec<&Bucket> = t.buckets.iter().collect();
    buckets.sort_by_key(|b| b.at_ms);
    let x = Axis::of(t);
    let faults: Vec<&Band> = t
        .faults
        .iter()
        .filter(|f| x.overlaps(f.from_ms, f.to_ms))
        .collect();
    let targets: BTreeSet<&str> = faults.iter().map(|f| f.target.as_str()).collect();
    let colour = colours(&faults.iter().map(|f| f.kind.as_str()).collect());
    let colour_of = |kind: &str| colour.get(kind).copied().unwrap_or(PALETTE[0]);
    let lanes_h = LANE_H * targets.len() as f64;
    let (height, bottom) = (
        420.0 + lanes_h,
        if targets.is_empty() {
            LAT_BOTTOM
        } else {
            LANES_TOP + lanes_h
        },
    );
    let title = esc(if t.title.is_empty() {
        "chaos run"
    } else {
        &t.title
    });
    let mut s = Svg(String::with_capacity(
        8192 + 400 * (buckets.len() + faults.len()),
    ));
    let h = px(height);
    let _ = write!(
        s.0,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="11" fill="#333"><title>{title}</title>"##
    );
    s.rect((0.0, 0.0), (W, height), r##"fill="#fff""##);
    s.text((LEFT, 26.0), r#"font-size="16" font-weight="bold""#, &title);
    let peak = buckets.iter().map(|b| pos(b.ops_per_s)).fold(0.0, f64::max);
    let worst = buckets.iter().map(|b| pos(b.p99_ms)).fold(0.0, f64::max);
    let (peak_s, worst_s, n) = (fmt_num(peak), fmt_num(worst), faults.len());
    let summary = format!("peak {peak_s} ops/s · worst p99 {worst_s} ms · {n} faults");
    s.text(
        (W - 24.0, 26.0),
        r##"text-anchor="end" fill="#666""##,
        &summary,
    );
    s.text((LEFT, TP_TOP - 6.0), "", "throughput (ops/s)");
    s.text((LEFT, LAT_TOP - 6.0), "", "latency (ms, log scale)");
    // Fault bands, behind everything else.
    for f in &faults {
        let (x0, wd) = x.span(f.from_ms, f.to_ms);
        let style = format!(
            r#"class="band" fill="{}" fill-opacity="0.16""#,
            colour_of(&f.kind)
        );
        s.rect((x0, TP_TOP), (wd, LAT_BOTTOM - TP_TOP), &style);
    }
    // Throughput: linear from 0 with round ticks.
    let step = nice_step(peak / 4.0);
    let top = match (peak / step).ceil() * step {
        v if v.is_finite() && v >= peak && v > 0.0 => v,
        _ if peak > 0.0 => peak,
        _ => step * 4.0,
    };
    let ty = |v: f64| TP_TOP + CHART_H - (pos(v) / top).min(1.0) * CHART_H;
    for v in (0..=10)
        .map(|i| f64::from(i) * step)
        .take_while(|v| v.is_finite() && v - top <= step * 1e-6)
    {
        s.grid(ty(v), &fmt_num(v));
    }
    // Latency: log scale over whole decades, values clamped to [0.001, 10⁹] ms.
    let lat = buckets
        .iter()
        .flat_map(|b| [b.p50_ms, b.p99_ms])
        .filter(|v| pos(*v) > 0.0);
    let (lmin, lmax) = lat.fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let exp = |v: f64, round: fn(f64) -> f64| round(v.clamp(1e-3, 1e9).log10()) as i32;
    let (lexp, hexp) = match lmax > 0.0 {
        true => (exp(lmin, f64::floor), exp(lmax, f64::ceil)),
        false => (0, 1),
    };
    let hexp = hexp.max(lexp + 1);
    let (lmin, lmax) = (10f64.powi(lexp), 10f64.powi(hexp));
    let ly = |v: f64| {
        let frac = (pos(v).clamp(lmin, lmax).log10() - f64::from(lexp)) / f64::from(hexp - lexp);
        LAT_BOTTOM - frac.clamp(0.0, 1.0) * CHART_H
    };
    for e in (lexp..=hexp).step_by(((hexp - lexp + 5) / 6).max(1) as usize) {
        s.grid(ly(10f64.powi(e)), &decade(e));
    }
    for top in [TP_TOP, LAT_TOP] {
        s.rect(
            (LEFT, top),
            (PLOT_W, CHART_H),
            r##"fill="none" stroke="#bbb""##,
        );
    }
    // The data.
    let pts = |f: &dyn Fn(&Bucket) -> f64| -> Vec<String> {
        buckets
            .iter()
            .map(|b| format!("{},{}", px(x.at(b.at_ms)), px(f(b))))
            .collect()
    };
    if let (Some(first), Some(last)) = (buckets.first(), buckets.last()) {
        let tp = pts(&|b| ty(b.ops_per_s)).join(" ");
        let (x0, x1, y) = (
            px(x.at(first.at_ms)),
            px(x.at(last.at_ms)),
            px(TP_TOP + CHART_H),
        );
        let area = format!("{x0},{y} {tp} {x1},{y}");
        let _ = write!(
            s.0,
            r##"<polygon points="{area}" fill="#9ec5ea" fill-opacity="0.5"/>"##
        );
        s.polyline(&tp, "#1f4e79");
        let lines = [
            ("p50", "#2c7a7b", pts(&|b| ly(b.p50_ms))),
            ("p99", "#9b2c2c", pts(&|b| ly(b.p99_ms))),
        ];
        for (i, (name, c, line)) in lines.into_iter().enumerate() {
            s.polyline(&line.join(" "), c);
            let (lx, y, style) = (
                W - 130.0 + 56.0 * i as f64,
                LAT_TOP + 10.0,
                format!(r#"stroke="{c}" stroke-width="2""#),
            );
            s.line((lx, y), (lx + 16.0, y), &style);
            s.text((lx + 20.0, LAT_TOP + 14.0), "", name);
        }
    } else {
        s.text(
            (LEFT + PLOT_W / 2.0, TP_TOP + CHART_H / 2.0),
            MIDDLE,
            "no data",
        );
    }
    // The x axis, in seconds.
    let (lo_s, hi_s) = (x.lo as f64 / 1000.0, x.hi as f64 / 1000.0);
    let span_s = (hi_s - lo_s).max(1e-3);
    let step = nice_step(span_s / 10.0);
    let dec = (-step.log10()).ceil().clamp(0.0, 3.0) as usize;
    let first = (lo_s / step).ceil();
    for sec in (0..60)
        .map(|i| (first + f64::from(i)) * step)
        .take_while(|sec| sec - hi_s <= step * 1e-6)
    {
        let tx = LEFT + ((sec - lo_s) / span_s).clamp(0.0, 1.0) * PLOT_W;
        s.line(
            (tx, LAT_BOTTOM),
            (tx, LAT_BOTTOM + 4.0),
            r##"stroke="#999""##,
        );
        s.text((tx, LAT_BOTTOM + 15.0), MIDDLE, &format!("{sec:.dec$}s"));
    }
    // One lane per target, its faults as solid bars labelled with the kind.
    for (row, target) in targets.iter().enumerate() {
        let y = LANES_TOP + LANE_H * row as f64;
        let _ = write!(s.0, "<g><title>{}</title>", esc(target));
        s.text((LEFT - 6.0, y + 14.0), END, &esc(&short(target, 15)));
        s.0.push_str("</g>");
        s.line((LEFT, y + LANE_H), (LEFT + PLOT_W, y + LANE_H), FAINT);
        for f in faults.iter().filter(|f| f.target == *target) {
            let (x0, wd) = x.span(f.from_ms, f.to_ms);
            let (kind, on) = (esc(&f.kind), esc(target));
            let (from, to) = (f.from_ms as f64 / 1000.0, f.to_ms as f64 / 1000.0);
            let _ = write!(
                s.0,
                "<g><title>{kind} on {on}: {from:.1}s to {to:.1}s</title>"
            );
            let style = format!(r#"class="bar" rx="2" fill="{}""#, colour_of(&f.kind));
            s.rect((x0, y + 3.0), (wd, 14.0), &style);
            if wd >= 6.5 * f.kind.chars().count() as f64 + 8.0 {
                s.text(
                    (x0 + 4.0, y + 14.0),
                    r##"font-size="10" fill="#111""##,
                    &kind,
                );
            }
            s.0.push_str("</g>");
        }
    }
    // Phase boundaries, on top, names alternating between two heights.
    let phases: Vec<&Phase> = t
        .phases
        .iter()
        .filter(|p| x.overlaps(p.from_ms, p.to_ms))
        .collect();
    for (i, p) in phases.iter().enumerate() {
        let lx = x.at(p.from_ms);
        s.line((lx, TP_TOP), (lx, bottom), DASHED);
        let y = TP_TOP + 11.0 + 12.0 * (i % 2) as f64;
        // A name that would run off the right edge goes to the left of its line.
        let (tx, anchor) = match lx + 3.0 + 6.0 * p.name.chars().count() as f64 > LEFT + PLOT_W {
            true => (lx - 3.0, format!("{HALO} {END}")),
            false => (lx + 3.0, HALO.to_owned()),
        };
        s.text((tx, y), &anchor, &esc(&p.name));
    }
    let end = phases.iter().map(|p| p.to_ms).max();
    if let Some(end) = end.filter(|e| phases.iter().all(|p| p.from_ms != *e)) {
        s.line((x.at(end), TP_TOP), (x.at(end), bottom), DASHED);
    }
    // The legend of fault kinds.
    let ly = height - 20.0;
    s.text((LEFT - 6.0, ly), END, "faults");
    let mut lx = LEFT;
    for (kind, c) in &colour {
        s.rect((lx, ly - 10.0), (12.0, 12.0), &format!(r#"fill="{c}""#));
        s.text((lx + 16.0, ly), "", &esc(kind));
        lx += 30.0 + 6.5 * kind.chars().count() as f64;
    }
    if colour.is_empty() {
        s.text((LEFT, ly), r##"fill="#999""##, "none");
    }
    s.0.push_str("</svg>\n");
    s.0
}

#[cfg(test)]
#[path = "svg_tests.rs"]
mod tests;

//! Summaries (median and min-max over runs), the text table, and SVG plots written by hand.

use std::fmt::Write as _;

use serde::Serialize;

use crate::runner::{ClientKind, RunRecord};

/// Median, minimum and maximum of one figure over the runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One client's figures over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub client: ClientKind,
    pub client_version: String,
    pub runs: usize,
    pub records_per_s: Stat,
    pub mb_per_s: Stat,
    pub p50_ms: Option<Stat>,
    pub p90_ms: Option<Stat>,
    pub p99_ms: Option<Stat>,
    pub p999_ms: Option<Stat>,
    pub max_ms: Option<Stat>,
    pub cpu_s_per_gb: Stat,
    /// Median records/s divided by ours (None when ours did not run).
    pub throughput_vs_ours: Option<f64>,
    /// Median CPU s/GB divided by ours.
    pub cpu_vs_ours: Option<f64>,
    pub settings: std::collections::BTreeMap<String, String>,
}

pub fn summarize(runs: &[RunRecord], order: &[ClientKind]) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    for &kind in order {
        let mine: Vec<&RunRecord> = runs.iter().filter(|r| r.client == kind).collect();
        let Some(first) = mine.first() else { continue };
        let col = |f: &dyn Fn(&RunRecord) -> f64| {
            Stat::of(&mine.iter().map(|r| f(r)).collect::<Vec<_>>())
        };
        let lat = |f: &dyn Fn(&crate::spec::Percentiles) -> f64| {
            let v: Vec<f64> = mine
                .iter()
                .filter_map(|r| r.latency_ms.as_ref().map(f))
                .collect();
            Stat::of(&v)
        };
        let (Some(rps), Some(mbps), Some(cpu)) = (
            col(&|r| r.records_per_s),
            col(&|r| r.mb_per_s),
            col(&|r| r.cpu_s_per_gb),
        ) else {
            continue;
        };
        out.push(Summary {
            client: kind,
            client_version: first.client_version.clone(),
            runs: mine.len(),
            records_per_s: rps,
            mb_per_s: mbps,
            p50_ms: lat(&|p| p.p50),
            p90_ms: lat(&|p| p.p90),
            p99_ms: lat(&|p| p.p99),
            p999_ms: lat(&|p| p.p999),
            max_ms: lat(&|p| p.max),
            cpu_s_per_gb: cpu,
            throughput_vs_ours: None,
            cpu_vs_ours: None,
            settings: first.settings.clone(),
        });
    }
    let ours = out
        .iter()
        .find(|s| s.client == ClientKind::Ours)
        .map(|s| (s.records_per_s.median, s.cpu_s_per_gb.median));
    if let Some((rps, cpu)) = ours {
        for s in &mut out {
            if rps > 0.0 {
                s.throughput_vs_ours = Some(s.records_per_s.median / rps);
            }
            if cpu > 0.0 {
                s.cpu_vs_ours = Some(s.cpu_s_per_gb.median / cpu);
            }
        }
    }
    out
}

fn fmt_stat(s: &Stat, prec: usize) -> String {
    if s.min == s.max {
        format!("{:.prec$}", s.median)
    } else {
        format!("{:.prec$} ({:.prec$}-{:.prec$})", s.median, s.min, s.max)
    }
}

fn fmt_opt(s: &Option<Stat>, prec: usize) -> String {
    s.as_ref().map_or_else(|| "-".into(), |s| fmt_stat(s, prec))
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

/// The text table: median (min-max) over runs.
pub fn table(summaries: &[Summary]) -> String {
    let header = [
        "client",
        "runs",
        "records/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "CPU s/GB",
        "rec/s vs ours",
        "CPU vs ours",
    ];
    let rows: Vec<[String; 9]> = summaries
        .iter()
        .map(|s| {
            [
                s.client.name().to_string(),
                s.runs.to_string(),
                fmt_stat(&s.records_per_s, 0),
                fmt_stat(&s.mb_per_s, 1),
                fmt_opt(&s.p50_ms, 2),
                fmt_opt(&s.p99_ms, 2),
                fmt_stat(&s.cpu_s_per_gb, 2),
                fmt_ratio(s.throughput_vs_ours),
                fmt_ratio(s.cpu_vs_ours),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut l = String::from("|");
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(l, " {c:<w$} |");
        }
        out.push_str(&l);
        out.push('\n');
    };
    line(&mut out, &header.map(String::from));
    let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &sep);
    for r in &rows {
        line(&mut out, r);
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// Bar chart of median MB/s per client with min-max whiskers.
pub fn throughput_svg(title: &str, summaries: &[Summary]) -> String {
    let (w, h, left, bottom, top) = (640.0, 360.0, 70.0, 50.0, 40.0);
    let plot_h = h - bottom - top;
    let max = summaries
        .iter()
        .map(|s| s.mb_per_s.max)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let n = summaries.len().max(1) as f64;
    let slot = (w - left - 20.0) / n;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{w}" height="{h}" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let y = top + plot_h - plot_h * i as f64 / 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            w - 20.0,
            left - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">MB/s (median, min-max)</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    for (i, s) in summaries.iter().enumerate() {
        let x = left + slot * i as f64 + slot * 0.2;
        let bw = slot * 0.6;
        let y = |v: f64| top + plot_h - plot_h * v / max;
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{}"/>"#,
            y(s.mb_per_s.median),
            plot_h * s.mb_per_s.median / max,
            COLORS[i % COLORS.len()]
        );
        let cx = x + bw / 2.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="black"/>"#,
            y(s.mb_per_s.min),
            y(s.mb_per_s.max)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{cx:.1}" y="{:.1}" text-anchor="middle">{:.1}</text>"#,
            h - bottom + 18.0,
            esc(s.client.name()),
            y(s.mb_per_s.median) - 6.0,
            s.mb_per_s.median
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Grouped bars of median latency percentiles (p50, p90, p99, p99.9, max) per client, log scale.
pub fn latency_svg(title: &str, summaries: &[Summary]) -> Option<String> {
    let with: Vec<&Summary> = summaries.iter().filter(|s| s.p50_ms.is_some()).collect();
    if with.is_empty() {
        return None;
    }
    let (w, h, left, bottom, top) = (720.0, 380.0, 70.0, 60.0, 40.0);
    let plot_h = h - bottom - top;
    let labels = ["p50", "p90", "p99", "p99.9", "max"];
    let values = |s: &Summary| -> [f64; 5] {
        let m = |o: &Option<Stat>| o.map_or(0.0, |s| s.median);
        [
            m(&s.p50_ms),
            m(&s.p90_ms),
            m(&s.p99_ms),
            m(&s.p999_ms),
            m(&s.max_ms),
        ]
    };
    let hi = with
        .iter()
        .flat_map(|s| values(s))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let lo = 0.01f64;
    let decades_hi = hi.log10().ceil();
    let span = decades_hi - lo.log10();
    let y = |v: f64| {
        let v = v.max(lo);
        top + plot_h - plot_h * (v.log10() - lo.log10()) / span
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{w}" height="{h}" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    let mut d = lo.log10();
    while d <= decades_hi + 1e-9 {
        let v = 10f64.powf(d);
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - 20.0,
            left - 6.0,
            yy + 4.0,
            if v < 1.0 {
                format!("{v}")
            } else {
                format!("{v:.0}")
            }
        );
        d += 1.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">latency ms (median over runs, log)</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    let group = (w - left - 20.0) / labels.len() as f64;
    let bw = group * 0.8 / with.len() as f64;
    for (g, label) in labels.iter().enumerate() {
        let gx = left + group * g as f64 + group * 0.1;
        for (i, s) in with.iter().enumerate() {
            let v = values(s)[g];
            let x = gx + bw * i as f64;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {label}: {v:.2} ms</title></rect>"#,
                y(v),
                bw * 0.9,
                (top + plot_h - y(v)).max(0.0),
                COLORS[i % COLORS.len()],
                esc(s.client.name())
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            gx + group * 0.4,
            h - bottom + 18.0
        );
    }
    for (i, s) in with.iter().enumerate() {
        let x = left + 10.0 + 110.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            h - 24.0,
            COLORS[i % COLORS.len()],
            x + 14.0,
            h - 15.0,
            esc(s.client.name())
        );
    }
    svg.push_str("</svg>\n");
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Mode, Percentiles};

    fn run(client: ClientKind, rps: f64, p50: f64) -> RunRecord {
        RunRecord {
            client,
            client_version: client.name().into(),
            mode: Mode::Produce,
            run: 0,
            records: 100,
            bytes: 100_000,
            elapsed_s: 100.0 / rps,
            records_per_s: rps,
            mb_per_s: rps * 1000.0 / 1e6,
            latency_ms: Some(Percentiles {
                p50,
                p90: p50 * 2.0,
                p99: p50 * 3.0,
                p999: p50 * 4.0,
                max: p50 * 5.0,
            }),
            cpu_s: 0.5,
            cpu_s_per_gb: 5000.0,
            settings: Default::default(),
        }
    }

    #[test]
    fn median_and_range() {
        let s = Stat::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Stat::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Stat::of(&[]).is_none());
    }

    #[test]
    fn ratios_are_against_ours() {
        let runs = vec![
            run(ClientKind::Ours, 100.0, 1.0),
            run(ClientKind::Java, 50.0, 2.0),
            run(ClientKind::Ours, 300.0, 1.0),
            run(ClientKind::Java, 150.0, 2.0),
            run(ClientKind::Ours, 200.0, 1.0),
            run(ClientKind::Java, 100.0, 2.0),
        ];
        let s = summarize(&runs, &ClientKind::ALL);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].records_per_s.median, 200.0);
        assert_eq!(s[1].records_per_s.median, 100.0);
        assert_eq!(s[1].throughput_vs_ours, Some(0.5));
        assert_eq!(s[0].throughput_vs_ours, Some(1.0));
        let t = table(&s);
        assert!(t.contains("| java "), "{t}");
        assert!(t.contains("0.50x"), "{t}");
        let svg = throughput_svg("t", &s);
        assert!(svg.starts_with("<svg") && svg.contains("java"));
        assert!(latency_svg("l", &s).unwrap().contains("p99.9"));
    }

    #[test]
    fn no_ours_no_ratio() {
        let s = summarize(&[run(ClientKind::Java, 10.0, 1.0)], &ClientKind::ALL);
        assert_eq!(s[0].throughput_vs_ours, None);
        assert!(table(&s).contains(" - "));
    }
}

//! Charts for the report: SVG strings drawn with `plotters` (text left to the
//! browser's fonts, so nothing is loaded from disk or network).

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// A named series of (x, y) points.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A point of a scatter chart; `hot` points (cold starts) are drawn in red.
pub struct Dot {
    pub x: f64,
    pub y: f64,
    pub hot: bool,
}

const W: u32 = 760;
const H: u32 = 380;

fn colour(i: usize) -> RGBColor {
    // Colour-blind-friendly (Okabe-Ito).
    const C: [RGBColor; 7] = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(213, 94, 0),
        RGBColor(120, 120, 120),
    ];
    C[i % C.len()]
}

fn range(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    (lo, hi + (hi - lo) * 0.05)
}

type Chart<'a> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Where every chart starts: a white page, the title, margins and room for
/// the axis labels.
fn builder<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let _ = root.fill(&WHITE);
    let mut b = ChartBuilder::on(root);
    b.caption(title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64);
    b
}

/// The frame every chart shares: title, axes, grid; `draw` adds the data.
fn frame(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    log_x: bool,
    draw: impl FnOnce(&mut Chart<'_>),
) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let chart = builder(&root, title).build_cartesian_2d(x0..x1, y0..y1);
        let Ok(mut chart) = chart else {
            return String::new();
        };
        // A log axis is drawn as log10 values with their powers as labels.
        let power = |v: &f64| {
            let x = 10f64.powf(*v);
            if x >= 100.0 {
                format!("{x:.0}")
            } else if x >= 1.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.3}")
            }
        };
        let plain = |v: &f64| format!("{v}");
        let x_desc = if log_x {
            format!("{x_desc} (log scale)")
        } else {
            x_desc.to_string()
        };
        let _ = chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(if log_x { &power } else { &plain })
            .light_line_style(RGBColor(235, 235, 235))
            .draw();
        draw(&mut chart);
        let _ = root.present();
    }
    svg
}

/// Lines over a numeric x axis; logarithmic when the x values are positive
/// and span more than 20x (latency CDFs mixing fast and slow functions,
/// memory sizes from 128 MB to 10 GB).
pub fn lines(title: &str, x_desc: &str, y_desc: &str, series: &[Line]) -> String {
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (lo, hi) = xs().fold((f64::INFINITY, 0f64), |(l, h), x| (l.min(x), h.max(x)));
    let log_x = lo > 0.0 && hi / lo > 20.0;
    let logged: Vec<Line>;
    let series = if log_x {
        logged = series
            .iter()
            .map(|s| Line {
                name: s.name.clone(),
                points: s.points.iter().map(|&(x, y)| (x.log10(), y)).collect(),
            })
            .collect();
        &logged[..]
    } else {
        series
    };
    let (x0, x1) = range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
        false,
    );
    let (y0, y1) = range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        true,
    );
    frame(title, x_desc, y_desc, (x0, x1), (y0, y1), log_x, |chart| {
        for (i, s) in series.iter().enumerate() {
            let c = colour(i);
            let drawn =
                chart.draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)));
            if let Ok(d) = drawn {
                d.label(s.name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            }
            if s.points.len() <= 40 {
                let _ = chart.draw_series(
                    s.points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 3, c.filled())),
                );
            }
        }
        if series.len() > 1 || series.first().is_some_and(|s| !s.name.is_empty()) {
            let _ = chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .draw();
        }
    })
}

/// One series of a two-axis chart: its name, unit and one value per x.
pub struct Axis<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub values: &'a [f64],
}

/// Two series over the same x values, `left` on the left axis and `right`
/// on the right (as AWS Lambda Power Tuning draws duration and cost against
/// memory).
pub fn dual_axis(title: &str, x_desc: &str, x: &[f64], left: &Axis, right: &Axis) -> String {
    let (x0, x1) = range(x.iter().copied(), false);
    let (l0, l1) = range(left.values.iter().copied(), true);
    let (r0, r1) = range(right.values.iter().copied(), true);
    let points =
        |a: &Axis| -> Vec<(f64, f64)> { x.iter().copied().zip(a.values.iter().copied()).collect() };
    let (lc, rc) = (colour(0), colour(5));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let chart = builder(&root, title)
            .right_y_label_area_size(72)
            .build_cartesian_2d(x0..x1, l0..l1);
        let Ok(chart) = chart else {
            return String::new();
        };
        let mut chart = chart.set_secondary_coord(x0..x1, r0..r1);
        let _ = chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(format!("{} ({})", left.name, left.unit))
            .light_line_style(RGBColor(235, 235, 235))
            .draw();
        let _ = chart
            .configure_secondary_axes()
            .y_desc(format!("{} ({})", right.name, right.unit))
            .y_label_formatter(&|v| format!("{v:.2e}"))
            .draw();
        let legend = |c: RGBColor| {
            move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
        };
        if let Ok(d) = chart.draw_series(LineSeries::new(points(left), lc.stroke_width(2))) {
            d.label(left.name.to_string()).legend(legend(lc));
        }
        let _ = chart.draw_series(
            points(left)
                .into_iter()
                .map(|p| Circle::new(p, 3, lc.filled())),
        );
        if let Ok(d) =
            chart.draw_secondary_series(LineSeries::new(points(right), rc.stroke_width(2)))
        {
            d.label(right.name.to_string()).legend(legend(rc));
        }
        let _ = chart.draw_secondary_series(
            points(right)
                .into_iter()
                .map(|p| Circle::new(p, 3, rc.filled())),
        );
        let _ = chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw();
        let _ = root.present();
    }
    svg
}

/// A scatter of latency over time, cold starts in red.
pub fn timeline(title: &str, x_desc: &str, y_desc: &str, dots: &[Dot]) -> String {
    let (x0, x1) = range(dots.iter().map(|d| d.x), true);
    let (y0, y1) = range(dots.iter().map(|d| d.y), true);
    frame(title, x_desc, y_desc, (x0, x1), (y0, y1), false, |chart| {
        let warm = colour(0);
        let cold = RGBColor(213, 40, 40);
        if let Ok(d) = chart.draw_series(
            dots.iter()
                .filter(|d| !d.hot)
                .map(|d| Circle::new((d.x, d.y), 2, warm.mix(0.7).filled())),
        ) {
            d.label("warm")
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, warm.filled()));
        }
        if let Ok(d) = chart.draw_series(
            dots.iter()
                .filter(|d| d.hot)
                .map(|d| Circle::new((d.x, d.y), 4, cold.filled())),
        ) {
            d.label("cold start")
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, cold.filled()));
        }
        let _ = chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_labels() {
        let svg = lines(
            "Latency CDF",
            "ms",
            "fraction",
            &[
                Line {
                    name: "a & b".into(),
                    points: vec![(1.0, 0.1), (2.0, 0.5), (3.0, 1.0)],
                },
                Line {
                    name: "c".into(),
                    points: vec![(1.5, 0.2), (4.0, 1.0)],
                },
            ],
        );
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        assert!(svg.contains("Latency CDF") && svg.contains("a &amp; b"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));
        let d = dual_axis(
            "tune",
            "memory (MB)",
            &[128.0, 512.0, 1024.0],
            &Axis {
                name: "p50 duration",
                unit: "ms",
                values: &[40.0, 12.0, 6.0],
            },
            &Axis {
                name: "cost per invocation",
                unit: "USD",
                values: &[2.1e-7, 2.2e-7, 2.3e-7],
            },
        );
        assert!(d.starts_with("<svg"));
        assert!(d.contains("p50 duration (ms)") && d.contains("cost per invocation (USD)"));
        // Both series are drawn, each in its own colour.
        let drawn = |c: &str| d.to_uppercase().contains(&format!("STROKE=\"{c}\""));
        assert!(drawn("#0072B2") && drawn("#D55E00"), "{d}");
        let t = timeline(
            "t",
            "s",
            "ms",
            &[
                Dot {
                    x: 0.0,
                    y: 5.0,
                    hot: true,
                },
                Dot {
                    x: 1.0,
                    y: 1.0,
                    hot: false,
                },
            ],
        );
        assert!(t.contains("cold start") && t.contains("<circle"));
    }

    #[test]
    fn wide_x_ranges_get_a_log_axis() {
        let wide = Line {
            name: "cdf".into(),
            points: vec![(0.3, 0.1), (2.0, 0.5), (300.0, 1.0)],
        };
        let svg = lines("w", "latency (ms)", "fraction", &[wide]);
        assert!(svg.contains("(log scale)"), "no log axis");
        let narrow = Line {
            name: "t".into(),
            points: vec![(1.0, 10.0), (16.0, 20.0)],
        };
        assert!(!lines("n", "users", "req/s", &[narrow]).contains("log scale"));
    }

    #[test]
    fn empty_and_flat_series_do_not_panic() {
        assert!(lines("e", "x", "y", &[]).starts_with("<svg"));
        let flat = Line {
            name: String::new(),
            points: vec![(1.0, 2.0)],
        };
        assert!(lines("f", "x", "y", &[flat]).starts_with("<svg"));
        assert!(timeline("t", "x", "y", &[]).starts_with("<svg"));
    }
}

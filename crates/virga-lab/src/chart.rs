//! A small SVG line chart with two y axes (like AWS Lambda Power Tuning's
//! visualisation: duration and cost against memory).

/// One series: name, colour, values (one per x label).
pub struct Series<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub colour: &'a str,
    pub values: &'a [f64],
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders `left` on the left axis and `right` on the right one, over evenly
/// spaced categorical `x` labels.
pub fn dual_axis_svg(
    title: &str,
    x_title: &str,
    x: &[String],
    left: &Series,
    right: &Series,
) -> String {
    let (w, h) = (720.0, 400.0);
    let (ml, mr, mt, mb) = (80.0, 90.0, 40.0, 60.0);
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let n = x.len().max(1);
    let xpos = |i: usize| {
        if n == 1 {
            ml + pw / 2.0
        } else {
            ml + pw * i as f64 / (n - 1) as f64
        }
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
         <line x1=\"{ml}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>\n",
        w / 2.0,
        esc(title),
        mt + ph,
        ml + pw,
        mt + ph
    );
    for (i, label) in x.iter().enumerate() {
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            xpos(i),
            mt + ph + 18.0,
            esc(label)
        ));
    }
    out.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        ml + pw / 2.0,
        h - 15.0,
        esc(x_title)
    ));
    for (series, axis_x, anchor, side) in [(left, ml, "end", -8.0), (right, ml + pw, "start", 8.0)]
    {
        let max = series.values.iter().cloned().fold(0.0_f64, f64::max);
        let top = if max > 0.0 { max * 1.1 } else { 1.0 };
        let y = |v: f64| mt + ph - ph * v / top;
        out.push_str(&format!(
            "<line x1=\"{axis_x}\" y1=\"{mt}\" x2=\"{axis_x}\" y2=\"{}\" stroke=\"{}\"/>\n",
            mt + ph,
            series.colour
        ));
        for k in 0..=4 {
            let v = top * k as f64 / 4.0;
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"{}\">{}</text>\n",
                axis_x + side,
                y(v) + 4.0,
                series.colour,
                short(v)
            ));
        }
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"{}\">{} ({})</text>\n",
            axis_x + side,
            mt - 8.0,
            series.colour,
            esc(series.name),
            esc(series.unit)
        ));
        let points: Vec<String> = series
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", xpos(i), y(*v)))
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
            series.colour,
            points.join(" ")
        ));
        for p in &points {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            out.push_str(&format!(
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"3.5\" fill=\"{}\"/>\n",
                series.colour
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}

/// A compact number for axis ticks.
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_series_with_escaped_labels() {
        let x: Vec<String> = vec!["128".into(), "256".into(), "<512>".into()];
        let svg = dual_axis_svg(
            "t & t",
            "memory (MB)",
            &x,
            &Series {
                name: "duration",
                unit: "ms",
                colour: "#1f77b4",
                values: &[30.0, 15.0, 8.0],
            },
            &Series {
                name: "cost",
                unit: "USD",
                colour: "#d62728",
                values: &[1e-6, 1.1e-6, 1.3e-6],
            },
        );
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains("t &amp; t") && svg.contains("&lt;512&gt;"));
    }
}

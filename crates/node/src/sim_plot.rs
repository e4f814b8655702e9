//! `mixnode sim mix --plot DIR`: what anonymity costs, as SVG charts. Each chart is a sweep
//! of one setting around the scenario: the normalised entropy of senders and receivers on
//! the left axis, the median latency it costs on the right one. The rows behind them go to
//! `sweeps.json` beside them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mix_sim::mixnet::MixScenario;
use plotters::prelude::*;

use crate::sim_mix::{Row, run_all};

/// Mean delays per hop the delay chart sweeps (ms).
const DELAYS: [f64; 7] = [0.0, 5.0, 15.0, 50.0, 100.0, 200.0, 500.0];
/// Cover slots per second per node the cover chart sweeps (0: no cover).
const COVER_RATES: [f64; 6] = [0.0, 10.0, 20.0, 50.0, 100.0, 200.0];
/// Path modes the path chart compares.
const MODES: [&str; 4] = ["random", "rtt", "hybrid", "layered"];

/// Runs the three sweeps and writes `delay.svg`, `cover.svg`, `paths.svg` and the rows
/// (`sweeps.json`) into `dir`.
pub(crate) fn write_charts(
    base: &MixScenario,
    dir: &Path,
    threads: usize,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut scenarios = Vec::new();
    for d in DELAYS {
        scenarios.push((
            vec![("hop_delay_ms".into(), d.to_string())],
            base.with_setting("hop_delay_ms", &d.to_string())?,
        ));
    }
    for c in COVER_RATES {
        let s = if c == 0.0 {
            base.with_setting("cover", "off")?
        } else {
            // Loops at a tenth of the slots, as Nym's clients send them.
            base.with_setting("cover_rate", &c.to_string())?
                .with_setting("loop_rate", &(c / 10.0).to_string())?
                .with_setting("cover", "loopix")?
        };
        scenarios.push((vec![("cover_rate".into(), c.to_string())], s));
    }
    for m in MODES {
        scenarios.push((vec![("paths".into(), m.into())], base.with_setting("paths", m)?));
    }
    let rows = run_all(scenarios, threads);
    let data = dir.join("sweeps.json");
    std::fs::write(&data, serde_json::to_string_pretty(&rows)?)
        .with_context(|| format!("writing {}", data.display()))?;
    let (delay, rest) = rows.split_at(DELAYS.len());
    let (cover, paths) = rest.split_at(COVER_RATES.len());
    let title = format!(
        "{} nodes, {} messages/s per sender, {} % corrupt",
        base.nodes,
        base.rate,
        (base.corrupt * 100.0).round()
    );
    let mut written = vec![data];
    let path = dir.join("delay.svg");
    chart(&path, &title, "mean delay per hop (ms)", &DELAYS, delay, None)?;
    written.push(path);
    let path = dir.join("cover.svg");
    // Slots include real packets; cover is loopix above 0.
    chart(
        &path,
        &title,
        "cover slots per second per node (loops: a tenth)",
        &COVER_RATES,
        cover,
        None,
    )?;
    written.push(path);
    let path = dir.join("paths.svg");
    chart(&path, &title, "path selection", &[0.0, 1.0, 2.0, 3.0], paths, Some(&MODES))?;
    written.push(path);
    Ok(written)
}

fn chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    xs: &[f64],
    rows: &[Row],
    categories: Option<&[&str]>,
) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (860, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (low, high) = match categories {
        Some(_) => (-0.5, xs.len() as f64 - 0.5),
        None => {
            (xs.iter().copied().fold(f64::MAX, f64::min), xs.iter().copied().fold(0.0, f64::max))
        }
    };
    let latency_max = rows.iter().map(|r| r.report().latency_ms_p50).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .right_y_label_area_size(70)
        .build_cartesian_2d(low..high, 0.0..1.0)
        .map_err(|e| err(&e))?
        .set_secondary_coord(low..high, 0.0..latency_max);
    let label = |x: &f64| match categories {
        Some(names) => names.get(x.round().max(0.0) as usize).copied().unwrap_or("").to_owned(),
        None => format!("{x}"),
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("normalised entropy (1 = perfect)")
        .x_label_formatter(&label)
        .x_labels(if categories.is_some() { xs.len() } else { 10 })
        .draw()
        .map_err(|e| err(&e))?;
    chart.configure_secondary_axes().y_desc("latency p50 (ms)").draw().map_err(|e| err(&e))?;
    let points = |f: &dyn Fn(&Row) -> f64| -> Vec<(f64, f64)> {
        xs.iter().zip(rows).map(|(&x, r)| (x, f(r))).collect()
    };
    let senders = points(&|r| r.report().entropy_normalised_mean);
    let receivers = points(&|r| r.report().receiver_entropy_normalised_mean);
    let latency = points(&|r| r.report().latency_ms_p50);
    for (data, colour, name) in
        [(senders, BLUE, "senders (entropy)"), (receivers, GREEN, "receivers (entropy)")]
    {
        chart
            .draw_series(LineSeries::new(data.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(data.into_iter().map(|p| Circle::new(p, 4, colour.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .draw_secondary_series(LineSeries::new(latency.clone(), RED.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label("latency p50 (right axis)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .draw_secondary_series(latency.into_iter().map(|p| TriangleMarker::new(p, 5, RED.filled())))
        .map_err(|e| err(&e))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

//! Browser drawing of the small charts with plotters on a canvas.

use super::Bar;
use crate::ui::heatmap::Geom;
use plotters::prelude::*;
use plotters_canvas::CanvasBackend;
use tensor_surgeon_core::stats::Histogram;
use web_sys::HtmlCanvasElement;

const NAN_COLOR: RGBColor = RGBColor(214, 0, 160);
const LINE: RGBColor = RGBColor(36, 86, 199);
const FLAG: RGBColor = RGBColor(200, 30, 30);

fn geom<X: Ranged, Y: Ranged>(chart: &ChartContext<'_, CanvasBackend, Cartesian2d<X, Y>>) -> Geom {
    let (px, py) = chart.plotting_area().get_pixel_range();
    Geom {
        left: f64::from(px.start),
        top: f64::from(py.start),
        width: f64::from(px.end - px.start),
        height: f64::from(py.end - py.start),
    }
}

use tensor_surgeon_core::units::tick_label;

/// The finite range of values, padded; `(0, 1)` when there is nothing finite.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-6).max(1e-12);
    (lo - pad, hi + pad)
}

/// A line profile over `values.len()` slots (one per row or column): the per-pixel min/max
/// envelope when there are more slots than pixels, NaN slots marked below the axis, and
/// `mark` drawn as a vertical rule.
pub fn line(
    canvas: &HtmlCanvasElement,
    values: &[f32],
    x_desc: &str,
    y_desc: &str,
    mark: Option<usize>,
) -> Option<Geom> {
    let backend = CanvasBackend::with_canvas_object(canvas.clone())?;
    let root = backend.into_drawing_area();
    let (bg, fg) = crate::ui::heatmap::draw::theme();
    root.fill(&bg).ok()?;
    let n = values.len().max(1) as f64;
    let (lo, hi) = range(values.iter().map(|&v| f64::from(v)));
    let mut chart = ChartBuilder::on(&root)
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n, lo..hi)
        .ok()?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 12).into_font().color(&fg))
        .axis_desc_style(("sans-serif", 12).into_font().color(&fg))
        .axis_style(fg)
        .x_label_formatter(&|v| format!("{}", v.floor()))
        .y_label_formatter(&|v| tick_label(*v, hi - lo))
        .draw()
        .ok()?;
    let g = geom(&chart);
    let buckets = (g.width as usize).max(1);
    let per = values.len().div_ceil(buckets).max(1);
    let mut points = Vec::with_capacity(2 * buckets);
    let mut nan_slots = Vec::new();
    for (b, chunk) in values.chunks(per).enumerate() {
        let x = (b * per) as f64 + chunk.len() as f64 / 2.0;
        let (mut a, mut z) = (f64::INFINITY, f64::NEG_INFINITY);
        for &v in chunk {
            let v = f64::from(v);
            if v.is_nan() {
                nan_slots.push(x);
            } else if v.is_finite() {
                a = a.min(v);
                z = z.max(v);
            }
        }
        if a <= z {
            points.push((x, a));
            if z > a {
                points.push((x, z));
            }
        }
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            points,
            LINE.stroke_width(1),
        )))
        .ok()?;
    chart
        .draw_series(
            nan_slots
                .into_iter()
                .map(|x| Circle::new((x, lo), 3, NAN_COLOR.filled())),
        )
        .ok()?;
    if let Some(m) = mark {
        let x = m as f64 + 0.5;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, lo), (x, hi)],
                FLAG.stroke_width(1),
            )))
            .ok()?;
    }
    root.present().ok()?;
    Some(g)
}

/// A histogram: bars per bin, counts linear or log10.
pub fn histogram(canvas: &HtmlCanvasElement, h: &Histogram, log: bool) -> Option<Geom> {
    let backend = CanvasBackend::with_canvas_object(canvas.clone())?;
    let root = backend.into_drawing_area();
    let (bg, fg) = crate::ui::heatmap::draw::theme();
    root.fill(&bg).ok()?;
    let height = |c: u64| {
        if !log {
            c as f64
        } else if c == 0 {
            f64::NAN
        } else {
            (c as f64).log10()
        }
    };
    let peak = h.counts.iter().copied().max().unwrap_or(0);
    let (base, top) = if log {
        (-0.3, height(peak.max(1)) + 0.3)
    } else {
        (0.0, (peak.max(1) as f64) * 1.05)
    };
    let mut chart = ChartBuilder::on(&root)
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(64)
        .build_cartesian_2d(h.lo..h.hi, base..top)
        .ok()?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("value")
        .y_desc(if log { "count (log10)" } else { "count" })
        .label_style(("sans-serif", 12).into_font().color(&fg))
        .axis_desc_style(("sans-serif", 12).into_font().color(&fg))
        .axis_style(fg)
        .x_label_formatter(&|v| tick_label(*v, h.hi - h.lo))
        .y_label_formatter(&|v| {
            if log {
                tick_label(10f64.powf(*v).round(), top)
            } else {
                tick_label(*v, top)
            }
        })
        .draw()
        .ok()?;
    let bars = h.counts.iter().enumerate().filter_map(|(i, &c)| {
        let y = height(c);
        (c > 0 && y.is_finite()).then(|| {
            let (a, b) = h.bin_range(i);
            Rectangle::new(
                [(a, base), (b, y.max(base + 0.02))],
                LINE.mix(0.85).filled(),
            )
        })
    });
    chart.draw_series(bars).ok()?;
    let g = geom(&chart);
    root.present().ok()?;
    Some(g)
}

/// Bars with labels (e.g. one tensor statistic by layer); flagged bars in red; an optional
/// reference line (the median).
pub fn bars(
    canvas: &HtmlCanvasElement,
    items: &[Bar],
    reference: Option<f64>,
    y_desc: &str,
) -> Option<Geom> {
    let backend = CanvasBackend::with_canvas_object(canvas.clone())?;
    let root = backend.into_drawing_area();
    let (bg, fg) = crate::ui::heatmap::draw::theme();
    root.fill(&bg).ok()?;
    let n = items.len().max(1) as f64;
    let top = items
        .iter()
        .map(|b| b.value)
        .chain(reference)
        .filter(|v| v.is_finite())
        .fold(0f64, f64::max)
        .max(1e-12)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n, 0f64..top)
        .ok()?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .x_desc("layer")
        .y_desc(y_desc)
        .label_style(("sans-serif", 12).into_font().color(&fg))
        .axis_desc_style(("sans-serif", 12).into_font().color(&fg))
        .axis_style(fg)
        .y_label_formatter(&|v| tick_label(*v, top))
        .draw()
        .ok()?;
    chart
        .draw_series(items.iter().enumerate().map(|(i, b)| {
            Text::new(
                b.label.clone(),
                (i as f64 + 0.4, b.value.max(0.0) + top * 0.02),
                ("sans-serif", 12),
            )
        }))
        .ok()?;
    chart
        .draw_series(items.iter().enumerate().map(|(i, b)| {
            let color = if b.flagged { FLAG } else { LINE };
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, b.value.max(0.0))],
                color.filled(),
            )
        }))
        .ok()?;
    if let Some(r) = reference {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, r), (n, r)],
                BLACK.mix(0.5).stroke_width(1),
            )))
            .ok()?;
    }
    let g = geom(&chart);
    root.present().ok()?;
    Some(g)
}

/// A scatter of points already laid out in `[0, 1]^2` (see `tensor_surgeon_core::scatter`): axes for 2-D
/// layouts (`bounds`), axis titles, each point a 3 px square in its colour, `mark` ringed.
pub fn scatter(
    canvas: &HtmlCanvasElement,
    screen: &[[f32; 2]],
    colors: &[[u8; 4]],
    mark: Option<usize>,
    bounds: Option<tensor_surgeon_core::scatter::Bounds>,
    titles: &[String],
) -> Option<Geom> {
    let backend = CanvasBackend::with_canvas_object(canvas.clone())?;
    let root = backend.into_drawing_area();
    let (bg, fg) = crate::ui::heatmap::draw::theme();
    root.fill(&bg).ok()?;
    let (x0, x1, y0, y1) = bounds.unwrap_or((0.0, 1.0, 0.0, 1.0));
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .ok()?;
    let fx = |v: &f64| tick_label(*v, x1 - x0);
    let fy = |v: &f64| tick_label(*v, y1 - y0);
    let mut mesh = chart.configure_mesh();
    mesh.disable_mesh()
        .label_style(("sans-serif", 12).into_font().color(&fg))
        .axis_desc_style(("sans-serif", 12).into_font().color(&fg))
        .axis_style(fg);
    if bounds.is_some() {
        mesh.x_desc(titles.first().cloned().unwrap_or_default())
            .y_desc(titles.get(1).cloned().unwrap_or_default())
            .x_label_formatter(&fx)
            .y_label_formatter(&fy);
    } else {
        mesh.x_labels(0).y_labels(0).x_desc(titles.join(" · "));
    }
    mesh.draw().ok()?;
    let g = geom(&chart);
    drop(chart);
    root.present().ok()?;
    let (w, h) = (g.width.max(1.0) as usize, g.height.max(1.0) as usize);
    let mut rgba = vec![0u8; w * h * 4];
    let mut dot = |p: &[f32; 2], c: [u8; 4], r: i64| {
        let (cx, cy) = ((p[0] * w as f32) as i64, (p[1] * h as f32) as i64);
        for y in cy - r..=cy + r {
            for x in cx - r..=cx + r {
                if (0..w as i64).contains(&x) && (0..h as i64).contains(&y) {
                    let at = (y as usize * w + x as usize) * 4;
                    rgba[at..at + 4].copy_from_slice(&c);
                }
            }
        }
    };
    for (p, c) in screen.iter().zip(colors) {
        dot(p, *c, 1);
    }
    if let Some(p) = mark.and_then(|m| screen.get(m)) {
        dot(p, [200, 30, 30, 255], 4);
        dot(p, colors.get(mark?).copied().unwrap_or([0, 0, 0, 255]), 2);
    }
    let off = crate::ui::heatmap::draw::image(&rgba, w as u32, h as u32)?;
    crate::ui::heatmap::draw::blit(canvas, &off, g)?;
    Some(g)
}

/// One row of values as a strip of coloured cells (diverging, centred at zero).
pub fn strip(canvas: &HtmlCanvasElement, values: &[f64]) -> Option<Geom> {
    use tensor_surgeon_core::colormap::{Colormap, Scale, ScaleMode};
    let backend = CanvasBackend::with_canvas_object(canvas.clone())?;
    let root = backend.into_drawing_area();
    let (bg, fg) = crate::ui::heatmap::draw::theme();
    root.fill(&bg).ok()?;
    let n = values.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .margin(6)
        .x_label_area_size(24)
        .y_label_area_size(8)
        .build_cartesian_2d(0f64..n, 0f64..1f64)
        .ok()?;
    chart
        .configure_mesh()
        .disable_mesh()
        .y_labels(0)
        .label_style(("sans-serif", 11).into_font().color(&fg))
        .axis_desc_style(("sans-serif", 11).into_font().color(&fg))
        .axis_style(fg)
        .x_label_formatter(&|v| format!("{}", v.floor()))
        .draw()
        .ok()?;
    let g = geom(&chart);
    drop(chart);
    root.present().ok()?;
    let scale = Scale::fit(
        Colormap::Diverging,
        ScaleMode::Symmetric,
        values.iter().copied(),
    );
    let mut rgba = Vec::with_capacity(values.len() * 4);
    scale.paint(values.iter().copied(), &mut rgba);
    let off = crate::ui::heatmap::draw::image(&rgba, values.len().max(1) as u32, 1)?;
    crate::ui::heatmap::draw::blit(canvas, &off, g)?;
    Some(g)
}

//! Browser drawing: the cell image, plotters axes and colour bar, and the overlay.

use super::Geom;
use plotters::prelude::*;
use plotters_canvas::CanvasBackend;
use tensor_surgeon_core::colormap::{Colormap, Scale, ScaleMode};
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::view::ViewSpec;
use tensor_surgeon_wire::ViewData;
use wasm_bindgen::{Clamped, JsCast};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, ImageData};

fn context(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok()??.dyn_into().ok()
}

/// An offscreen canvas holding `rgba` as `w x h` pixels.
pub(in crate::ui) fn image(rgba: &[u8], w: u32, h: u32) -> Option<HtmlCanvasElement> {
    let doc = web_sys::window()?.document()?;
    let off: HtmlCanvasElement = doc.create_element("canvas").ok()?.dyn_into().ok()?;
    off.set_width(w);
    off.set_height(h);
    let img = ImageData::new_with_u8_clamped_array_and_sh(Clamped(rgba), w, h).ok()?;
    context(&off)?.put_image_data(&img, 0.0, 0.0).ok()?;
    Some(off)
}

pub(in crate::ui) fn blit(
    canvas: &HtmlCanvasElement,
    off: &HtmlCanvasElement,
    g: Geom,
) -> Option<()> {
    let ctx = context(canvas)?;
    ctx.set_image_smoothing_enabled(false);
    ctx.draw_image_with_html_canvas_element_and_dw_and_dh(off, g.left, g.top, g.width, g.height)
        .ok()
}

/// The page's colours for drawing on canvases (`--panel` behind, `--fg` for text and axes),
/// so charts follow the light or dark theme.
pub(in crate::ui) fn theme() -> (RGBColor, RGBColor) {
    let read = |name: &str| -> Option<RGBColor> {
        let w = web_sys::window()?;
        let el = w.document()?.document_element()?;
        let v = w
            .get_computed_style(&el)
            .ok()??
            .get_property_value(name)
            .ok()?;
        let hex = v.trim().strip_prefix('#')?;
        let n = u32::from_str_radix(hex, 16)
            .ok()
            .filter(|_| hex.len() == 6)?;
        Some(RGBColor((n >> 16) as u8, (n >> 8) as u8, n as u8))
    };
    (
        read("--panel").unwrap_or(WHITE),
        read("--fg").unwrap_or(BLACK),
    )
}

/// Milliseconds since page load.
pub fn now() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

/// A y tick: the index, and its token when the rows are labelled.
fn axis_label(v: f64, span: tensor_surgeon_core::view::Span, labels: &[String]) -> String {
    // A tick between two rows (a short axis) would repeat the row above it.
    if v.fract() != 0.0 {
        return String::new();
    }
    let i = v.floor();
    let k = (i - span.start as f64) / span.step.max(1) as f64;
    match labels
        .get(k as usize)
        .filter(|_| k >= 0.0 && k.fract() == 0.0)
    {
        Some(l) => format!("{l:?} {i}"),
        None => format!("{i}"),
    }
}

/// Draws the data; returns where the cells are and the scale used.
pub fn cells(
    canvas: &HtmlCanvasElement,
    d: &ViewData,
    cm: Colormap,
    mode: ScaleMode,
) -> Option<(Geom, Scale)> {
    cells_scaled(canvas, d, &|values| {
        Scale::fit(cm, mode, values.iter().copied())
    })
}

/// Draws the data on the scale `scale_of` makes of its values.
pub fn cells_scaled(
    canvas: &HtmlCanvasElement,
    d: &ViewData,
    scale_of: &dyn Fn(&[f64]) -> Scale,
) -> Option<(Geom, Scale)> {
    let dt = dtype::parse_name(&d.dtype)?;
    let mut values = Vec::new();
    if d.block == (1, 1) && d.mode != tensor_surgeon_core::view::ViewMode::Delta {
        dtype::decode_f64_into(dt, &d.bytes, &mut values);
    } else {
        values.extend(d.pooled.iter().map(|&v| f64::from(v)));
    }
    let scale = scale_of(&values);
    let mut rgba = Vec::with_capacity(values.len() * 4);
    scale.paint(values.iter().copied(), &mut rgba);
    let (rows, cols) = (d.rows.max(1) as u32, d.cols.max(1) as u32);
    if values.is_empty() {
        rgba = vec![255; 4];
    }

    let backend = CanvasBackend::with_canvas_object(canvas.clone())?;
    let root = backend.into_drawing_area();
    let (bg, fg) = theme();
    root.fill(&bg).ok()?;
    let (w, _) = root.dim_in_pixel();
    let (main, bar) = root.split_horizontally(w as i32 - 110);
    let spec = &d.spec;
    let x0 = spec.x.start as f64;
    let x1 = x0 + (spec.x.count().max(1) * spec.x.step) as f64;
    let y0 = spec.y.start as f64;
    let y1 = y0 + (spec.y.count().max(1) * spec.y.step) as f64;
    let mut chart = ChartBuilder::on(&main)
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(if d.y_labels.is_empty() { 64 } else { 130 })
        .build_cartesian_2d(x0..x1, y1..y0)
        .ok()?;
    let xd = spec.x_dim.map(|d| format!("dim {d}")).unwrap_or_default();
    let yd = spec.y_dim.map(|d| format!("dim {d}")).unwrap_or_default();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(xd)
        .y_desc(yd)
        .label_style(("sans-serif", 13).into_font().color(&fg))
        .axis_desc_style(("sans-serif", 13).into_font().color(&fg))
        .axis_style(fg)
        .x_label_formatter(&|v| format!("{}", v.floor()))
        .y_label_formatter(&|v| axis_label(*v, spec.y, &d.y_labels))
        .draw()
        .ok()?;
    let (px, py) = chart.plotting_area().get_pixel_range();
    let g = Geom {
        left: f64::from(px.start),
        top: f64::from(py.start),
        width: f64::from(px.end - px.start),
        height: f64::from(py.end - py.start),
    };

    // Colour bar: a gradient image in its own plotting area, values on its axis (on a
    // symmetric-log scale the axis runs in colour position, labelled with the values). When
    // the scale clips, a triangle at each clipped end carries the true min / max.
    let clip_lo = scale.data_lo < scale.lo;
    let clip_hi = scale.data_hi > scale.hi;
    let span = scale.hi - scale.lo;
    let mut cb = ChartBuilder::on(&bar)
        .margin_top(if clip_hi { 28 } else { 12 })
        .margin_bottom(if clip_lo { 62 } else { 46 })
        .margin_right(8)
        .y_label_area_size(66)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .ok()?;
    cb.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .label_style(("sans-serif", 12).into_font().color(&fg))
        .axis_desc_style(("sans-serif", 12).into_font().color(&fg))
        .axis_style(fg)
        .y_label_formatter(&|t| tensor_surgeon_core::units::tick_label(scale.value_at(*t), span))
        .draw()
        .ok()?;
    let (bx, by) = cb.plotting_area().get_pixel_range();
    let tip = |up: bool, value: f64| {
        let (x0, x1) = (bx.start, bx.end);
        let mid = (x0 + x1) / 2;
        let (base, apex) = if up {
            (by.start - 2, by.start - 12)
        } else {
            (by.end + 2, by.end + 12)
        };
        let end = scale.color(if up { scale.hi } else { scale.lo });
        let fill = RGBColor(end[0], end[1], end[2]).filled();
        let _ = root.draw(&Polygon::new(
            vec![(x0, base), (x1, base), (mid, apex)],
            fill,
        ));
        let label = format!(
            "{} {}",
            if up { "max" } else { "min" },
            tensor_surgeon_core::units::tick_label(value, span)
        );
        let y = if up { apex - 14 } else { apex + 2 };
        let _ = root.draw(&Text::new(
            label,
            (x0 - 60, y),
            ("sans-serif", 12).into_font().color(&fg),
        ));
    };
    if clip_hi {
        tip(true, scale.data_hi);
    }
    if clip_lo {
        tip(false, scale.data_lo);
    }
    drop(chart);
    drop(cb);
    root.present().ok()?;

    let off = image(&rgba, cols, rows)?;
    blit(canvas, &off, g)?;
    let lut: Vec<u8> = scale
        .lut()
        .iter()
        .rev()
        .flat_map(|c| c.iter().copied())
        .collect();
    let bar_img = image(&lut, 1, 256)?;
    blit(
        canvas,
        &bar_img,
        Geom {
            left: f64::from(bx.start),
            top: f64::from(by.start),
            width: f64::from(bx.end - bx.start),
            height: f64::from(by.end - by.start),
        },
    )?;
    Some((g, scale))
}

/// Draws the selection and the hover crosshair over the cells.
pub fn overlay(
    canvas: &HtmlCanvasElement,
    g: Geom,
    view: &ViewSpec,
    sel: Option<&crate::ui::state::CellRect>,
    hover: Option<(u64, u64)>,
) {
    let Some(ctx) = context(canvas) else { return };
    ctx.clear_rect(
        0.0,
        0.0,
        f64::from(canvas.width()),
        f64::from(canvas.height()),
    );
    let Some(backend) = CanvasBackend::with_canvas_object(canvas.clone()) else {
        return;
    };
    let root = backend.into_drawing_area();
    let (rows, cols) = view.cells();
    let (rows, cols) = (rows.max(1) as f64, cols.max(1) as f64);
    let px = |c: f64| (g.left + c / cols * g.width) as i32;
    let py = |r: f64| (g.top + r / rows * g.height) as i32;
    if let Some((r, c)) = hover {
        let (r, c) = (r as f64, c as f64);
        let style = ShapeStyle {
            color: BLACK.mix(0.35),
            filled: false,
            stroke_width: 1,
        };
        let _ = root.draw(&PathElement::new(
            vec![
                (px(c + 0.5), g.top as i32),
                (px(c + 0.5), (g.top + g.height) as i32),
            ],
            style,
        ));
        let _ = root.draw(&PathElement::new(
            vec![
                (g.left as i32, py(r + 0.5)),
                ((g.left + g.width) as i32, py(r + 0.5)),
            ],
            style,
        ));
    }
    if let Some(s) = sel {
        let rect = [
            (px(s.cols.0 as f64), py(s.rows.0 as f64)),
            (
                px(s.cols.1 as f64).max(px(s.cols.0 as f64) + 2),
                py(s.rows.1 as f64).max(py(s.rows.0 as f64) + 2),
            ),
        ];
        let _ = root.draw(&Rectangle::new(
            rect,
            ShapeStyle {
                color: BLACK.to_rgba(),
                filled: false,
                stroke_width: 2,
            },
        ));
        let inner = [
            (rect[0].0 + 2, rect[0].1 + 2),
            (rect[1].0 - 2, rect[1].1 - 2),
        ];
        let _ = root.draw(&Rectangle::new(
            inner,
            ShapeStyle {
                color: YELLOW.to_rgba(),
                filled: false,
                stroke_width: 1,
            },
        ));
    }
    let _ = root.present();
}

//! The heatmap: cells painted into a pixel buffer and blitted once; plotters draws the axes,
//! the colour bar and the hover/selection overlay. Wheel zooms, drag pans, click selects,
//! shift-drag selects a rectangle, arrow keys move the selection, Enter starts editing.

use super::controls::scale_mode;
use super::state::{message, use_ctx, CellRect};
use crate::api::{get_view, remote_reads};
use leptos::html;
use leptos::prelude::*;
use tensor_surgeon_core::colormap::Scale;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::view::{Span, ViewSpec};
use tensor_surgeon_wire::{RemoteRead, ViewRequest};

/// Canvas size in pixels.
pub const WIDTH: u32 = 872;
pub const HEIGHT: u32 = 720;
/// Room for axes and the colour bar; the grid asked of the server fits the rest.
pub(super) const GRID_W: u64 = WIDTH as u64 - 200;
pub(super) const GRID_H: u64 = HEIGHT as u64 - 60;

/// Where the cells landed on the canvas, from the last draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geom {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// The cell under the pointer, in view cells.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Hover {
    row: u64,
    col: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Drag {
    x: f64,
    y: f64,
    cell: Hover,
    shift: bool,
}

fn cell_at(g: Geom, view: &ViewSpec, x: f64, y: f64) -> Option<Hover> {
    let (rows, cols) = view.cells();
    let fx = (x - g.left) / g.width;
    let fy = (y - g.top) / g.height;
    if !(0.0..1.0).contains(&fx) || !(0.0..1.0).contains(&fy) || rows == 0 || cols == 0 {
        return None;
    }
    Some(Hover {
        row: ((fy * rows as f64) as u64).min(rows - 1),
        col: ((fx * cols as f64) as u64).min(cols - 1),
    })
}

/// Shows `view` with `f(span, axis, dim size)` applied to its y and x spans (no new history
/// entry: panning and zooming would flood it).
fn show_spans(
    ctx: super::Ctx,
    view: &ViewSpec,
    shape: &[u64],
    f: impl Fn(Span, char, u64) -> Span,
) {
    let mut v = view.clone();
    if let Some(d) = v.y_dim {
        v.y = f(v.y, 'y', shape[d as usize]);
    }
    if let Some(d) = v.x_dim {
        v.x = f(v.x, 'x', shape[d as usize]);
    }
    ctx.go(
        &ctx.url.get_untracked().with_view(&v.make_valid(shape)),
        true,
    );
}

#[component]
pub fn Heatmap() -> impl IntoView {
    let ctx = use_ctx();
    let canvas = NodeRef::<html::Canvas>::new();
    let overlay = NodeRef::<html::Canvas>::new();
    let hover = RwSignal::new(None::<Hover>);
    let drag = RwSignal::new(None::<Drag>);
    let geom = RwSignal::new(None::<Geom>);
    let scale = RwSignal::new(None::<Scale>);
    // While a view waits on a long read from a remote model, what it is waiting for.
    let loading = RwSignal::new(false);
    let reads = RwSignal::new(Vec::<RemoteRead>::new());
    let data = LocalResource::new(move || {
        let tensor = ctx.url.with(|u| u.tensor.clone());
        let view = ctx.view.get();
        let stat = ctx.url.with(|u| u.stat.unwrap_or_default());
        let mode = ctx.url.with(|u| u.mode.unwrap_or_default());
        let _ = ctx.version.get();
        async move {
            let (tensor, spec) = (tensor?, view?);
            loading.set(true);
            set_timeout(
                move || follow_reads(loading, reads),
                std::time::Duration::from_millis(READS_POLL_MS),
            );
            let got = get_view(ViewRequest {
                tensor,
                spec,
                max_rows: GRID_H,
                max_cols: GRID_W,
                stat,
                mode,
            })
            .await;
            loading.set(false);
            reads.set(Vec::new());
            Some(got)
        }
    });
    let current = move || {
        data.with(|d| {
            d.as_ref()
                .and_then(|d| d.as_ref())
                .and_then(|r| r.as_ref().ok())
                .cloned()
        })
    };

    // Draw the cells, axes and colour bar whenever the data or colour settings change. The
    // canvas carries the draw count and the last draw time (ms) for benchmarks.
    let draws = StoredValue::new(0u64);
    Effect::new(move |_| {
        let url = ctx.url.get();
        let Some(el) = canvas.get() else { return };
        data.with(|d| {
            if let Some(Some(Ok(d))) = d {
                let (cm, mode) = scale_mode(&url, &d.dtype);
                let t0 = draw::now();
                if let Some((g, s)) = draw::cells(&el, d, cm, mode) {
                    let ms = draw::now() - t0;
                    draws.update_value(|n| *n += 1);
                    let _ = el.set_attribute("data-draw-ms", &format!("{ms:.2}"));
                    let _ = el.set_attribute("data-draws", &draws.get_value().to_string());
                    let _ = el.set_attribute("data-tensor", &d.tensor);
                    let _ = el.set_attribute("data-version", &d.version.to_string());
                    geom.set(Some(g));
                    scale.set(Some(s));
                }
            }
        });
    });
    // The overlay: selection and hover crosshair.
    Effect::new(move |_| {
        let (Some(el), Some(g)) = (overlay.get(), geom.get()) else {
            return;
        };
        let view = ctx.view.get();
        let sel = ctx
            .selection
            .get()
            .filter(|s| Some(&s.view) == view.as_ref());
        let h = hover.get();
        if let Some(view) = view {
            draw::overlay(&el, g, &view, sel.as_ref(), h.map(|h| (h.row, h.col)));
        }
    });

    // What a pointer event needs: where the cells are, the view and the tensor.
    let ready = move || {
        Some((
            geom.get_untracked()?,
            ctx.view.get_untracked()?,
            ctx.tensor.get_untracked()?,
        ))
    };
    let pos = |ev: &leptos::ev::MouseEvent| (f64::from(ev.offset_x()), f64::from(ev.offset_y()));
    let on_move = move |ev: leptos::ev::MouseEvent| {
        let (Some(g), Some(view)) = (geom.get_untracked(), ctx.view.get_untracked()) else {
            return;
        };
        let (x, y) = pos(&ev);
        hover.set(cell_at(g, &view, x, y));
    };
    let on_down = move |ev: leptos::ev::MouseEvent| {
        let (Some(g), Some(view)) = (geom.get_untracked(), ctx.view.get_untracked()) else {
            return;
        };
        let (x, y) = pos(&ev);
        if let Some(cell) = cell_at(g, &view, x, y) {
            drag.set(Some(Drag {
                x,
                y,
                cell,
                shift: ev.shift_key(),
            }));
        }
    };
    let on_up = move |ev: leptos::ev::MouseEvent| {
        let Some(start) = drag.get_untracked() else {
            return;
        };
        drag.set(None);
        let Some((g, view, t)) = ready() else {
            return;
        };
        let (x, y) = pos(&ev);
        let end = cell_at(g, &view, x, y).unwrap_or(start.cell);
        let moved = (x - start.x).abs() + (y - start.y).abs() > 3.0;
        let block = current().map(|d| d.block).unwrap_or((1, 1));
        let (rows, cols) = view.cells();
        if !moved || start.shift {
            // Click selects the cell (or pooled block); shift-drag a rectangle.
            let (a, b) = (start.cell, end);
            let r0 = a.row.min(b.row) / block.0 * block.0;
            let c0 = a.col.min(b.col) / block.1 * block.1;
            let r1 = ((a.row.max(b.row) / block.0 + 1) * block.0).min(rows);
            let c1 = ((a.col.max(b.col) / block.1 + 1) * block.1).min(cols);
            ctx.selection.set(Some(CellRect {
                view: view.clone(),
                tensor: t.name.clone(),
                rows: (r0, r1),
                cols: (c0, c1),
            }));
        } else {
            // Drag pans by whole cells.
            let dr = start.cell.row as i64 - end.row as i64;
            let dc = start.cell.col as i64 - end.col as i64;
            show_spans(ctx, &view, &t.shape, |span, axis, size| {
                span.panned(if axis == 'y' { dr } else { dc }, size)
            });
        }
    };
    let on_wheel = move |ev: leptos::ev::WheelEvent| {
        let Some((g, view, t)) = ready() else {
            return;
        };
        let (x, y) = (f64::from(ev.offset_x()), f64::from(ev.offset_y()));
        let Some(cell) = cell_at(g, &view, x, y) else {
            return;
        };
        ev.prevent_default();
        let factor = if ev.delta_y() < 0.0 { 0.5 } else { 2.0 };
        show_spans(ctx, &view, &t.shape, |span, axis, size| {
            span.zoomed(if axis == 'y' { cell.row } else { cell.col }, factor, size)
        });
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        let (Some(view), Some(t)) = (ctx.view.get_untracked(), ctx.tensor.get_untracked()) else {
            return;
        };
        let (rows, cols) = view.cells();
        let sel = ctx.selection.get_untracked().filter(|s| s.view == view);
        let (r, c) = sel.as_ref().map(|s| (s.rows.0, s.cols.0)).unwrap_or((0, 0));
        let (r, c) = match ev.key().as_str() {
            "ArrowUp" => (r.saturating_sub(1), c),
            "ArrowDown" => ((r + 1).min(rows.saturating_sub(1)), c),
            "ArrowLeft" => (r, c.saturating_sub(1)),
            "ArrowRight" => (r, (c + 1).min(cols.saturating_sub(1))),
            "Enter" => {
                ev.prevent_default();
                ctx.focus_edit.update(|n| *n += 1);
                return;
            }
            _ => return,
        };
        ev.prevent_default();
        ctx.selection.set(Some(CellRect {
            view,
            tensor: t.name,
            rows: (r, r + 1),
            cols: (c, c + 1),
        }));
    };

    let status = move || {
        data.with(|d| match d {
            Some(Some(Err(e))) => view! { <span class="error">{message(e)}</span> }.into_any(),
            Some(Some(Ok(d))) => words::status(d).into_any(),
            _ => view! { <span class="muted">"…"</span> }.into_any(),
        })
    };
    let hover_text = move || {
        let h = hover.get()?;
        data.with(|d| {
            d.as_ref()
                .and_then(|d| d.as_ref())
                .and_then(|r| r.as_ref().ok())
                .map(|d| words::describe(d, h))
        })
    };
    // The hovered exact cell of a quantized tensor (its block is shown under the value).
    let hovered_block = Memo::new(move |_| {
        let quantized = ctx.tensor.with(|t| {
            t.as_ref()
                .is_some_and(|t| dtype::parse_name(&t.dtype).is_none())
        });
        let h = hover.get().filter(|_| quantized)?;
        data.with(|d| {
            let d = d.as_ref()?.as_ref()?.as_ref().ok()?;
            (d.block == (1, 1)).then(|| (d.tensor.clone(), d.spec.coords(h.row, h.col)))
        })
    });
    let scale_text = move || scale.get().map(|s| s.describe());
    let clipped = move || scale.get().map(|s| s.clipped.to_string());

    let reading = move || {
        let r = reads.get();
        (!r.is_empty()).then(|| {
            let text: Vec<String> = r
                .iter()
                .map(|r| {
                    format!(
                        "reading {} from its server: {} of {}",
                        r.url.rsplit('/').next().unwrap_or(&r.url),
                        tensor_surgeon_core::units::human_bytes(r.done),
                        tensor_surgeon_core::units::human_bytes(r.total)
                    )
                })
                .collect();
            view! { <div class="muted remote-read" role="status">{text.join("; ")}</div> }
        })
    };

    view! {
        <section class="heatmap">
            <div class="status">{status}</div>
            {reading}
            <div class="canvas-stack" style=format!("width:{WIDTH}px;height:{HEIGHT}px")>
                <canvas node_ref=canvas width=WIDTH height=HEIGHT class="cells"
                    data-plot=move || geom.get().map(|g| format!("{},{},{},{}", g.left, g.top, g.width, g.height))/>
                <canvas node_ref=overlay width=WIDTH height=HEIGHT class="overlay" tabindex="0" aria-label="heatmap"
                    on:mousemove=on_move on:mousedown=on_down on:mouseup=on_up on:wheel=on_wheel on:keydown=on_key
                    on:mouseleave=move |_| { hover.set(None); drag.set(None); }/>
            </div>
            <div class="hover" aria-live="polite">{hover_text}</div>
            <block_hover::BlockHover cell=hovered_block/>
            <div class="muted scale-note" data-clipped=clipped>{scale_text}</div>
        </section>
    }
}

/// How often a waiting view asks what the server is reading.
const READS_POLL_MS: u64 = 300;

/// Asks what long remote reads are under way while a view waits, until it arrives.
fn follow_reads(loading: RwSignal<bool>, reads: RwSignal<Vec<RemoteRead>>) {
    let every = std::time::Duration::from_millis(READS_POLL_MS);
    super::poll::poll(every, (), move |()| async move {
        if !loading.get_untracked() {
            return super::poll::Poll::Done;
        }
        if let Ok(r) = remote_reads().await {
            if loading.get_untracked() {
                reads.set(r);
            }
        }
        super::poll::Poll::Next(())
    });
}

mod block_hover;
#[cfg_attr(feature = "hydrate", path = "heatmap/draw.rs")]
#[cfg_attr(not(feature = "hydrate"), path = "heatmap/no_draw.rs")]
pub(super) mod draw;
mod words;

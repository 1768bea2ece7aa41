//! The heatmap: cells painted into a pixel buffer and blitted once; plotters draws the axes,
//! the colour bar and the hover/selection overlay. Wheel zooms, drag pans, click selects,
//! shift-drag selects a rectangle, arrow keys move the selection, Enter starts editing.

use super::controls::scale_mode;
use super::state::{message, use_ctx};
use crate::api::{get_view, remote_reads};
use leptos::html;
use leptos::prelude::*;
use tensor_surgeon_core::colormap::Scale;
use tensor_surgeon_core::dtype;
use tensor_surgeon_wire::{RemoteRead, ViewData, ViewRequest};

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

#[component]
pub fn Heatmap() -> impl IntoView {
    let ctx = use_ctx();
    let canvas = NodeRef::<html::Canvas>::new();
    let overlay = NodeRef::<html::Canvas>::new();
    let hover = RwSignal::new(None::<Hover>);
    let drag = RwSignal::new(None::<pointer::Drag>);
    let geom = RwSignal::new(None::<Geom>);
    let scale = RwSignal::new(None::<Scale>);
    // While a view waits on a long read from a remote model, what it is waiting for.
    let loading = RwSignal::new(false);
    let reads = RwSignal::new(Vec::<RemoteRead>::new());
    let data = view_data(ctx, loading, reads);

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

    let pointer = pointer::Pointer {
        ctx,
        geom,
        hover,
        drag,
        data,
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
                    on:mousemove=move |ev| pointer.moved(&ev) on:mousedown=move |ev| pointer.down(&ev)
                    on:mouseup=move |ev| pointer.up(&ev) on:wheel=move |ev| pointer.wheel(&ev) on:keydown=move |ev| pointer.key(&ev)
                    on:mouseleave=move |_| { hover.set(None); drag.set(None); }/>
            </div>
            <div class="hover" aria-live="polite">{hover_text}</div>
            <block_hover::BlockHover cell=hovered_block/>
            <div class="muted scale-note" data-clipped=clipped>{scale_text}</div>
        </section>
    }
}

/// The data of the view the URL names, fetched again when it or the session changes; while it
/// waits on a long remote read, `reads` follows what is being read.
fn view_data(
    ctx: super::Ctx,
    loading: RwSignal<bool>,
    reads: RwSignal<Vec<RemoteRead>>,
) -> LocalResource<Option<Result<ViewData, ServerFnError>>> {
    LocalResource::new(move || {
        let tensor = ctx.url.with(|u| u.tensor.clone());
        let view = ctx.view.get();
        let stat = ctx.url.with(|u| u.stat.unwrap_or_default());
        let mode = ctx.url.with(|u| u.mode.unwrap_or_default());
        let proposal = ctx.url.with(|u| u.proposal);
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
                proposal,
            })
            .await;
            loading.set(false);
            reads.set(Vec::new());
            Some(got)
        }
    })
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
mod pointer;
mod words;

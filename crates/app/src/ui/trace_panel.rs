//! Locate by cause: a causal trace of the prompt (ROME) on the edited model. The subject's
//! tokens are corrupted with noise, and each layer's output, MLP output and attention output is
//! restored one (layer, token) at a time; three tokens x layers maps show p(target), coloured
//! from the corrupted p to the clean p, streaming in as layers finish. Hover gives p and the
//! indirect effect; an MLP cell opens that layer's `down_proj`, an attention cell its `o_proj`
//! (the names the trace gives). "open large" lays the maps over the workspace at the window's
//! width, so a 30-layer model's cells are tens of pixels wide and the token labels readable.

use super::event_stream::{close, Stream};
use super::heatmap::{draw, Geom};
use super::state::use_ctx;
use leptos::html;
use leptos::prelude::*;
use tensor_surgeon_core::colormap::{Colormap, Scale};
use tensor_surgeon_core::view::{Span, ViewSpec};
use tensor_surgeon_wire::{CausalTrace, TraceKind, TraceUpdate, ViewData};

/// A trace under way or done: its start, the rows so far (per kind, per layer), progress.
#[derive(Clone, Copy)]
struct TraceState {
    header: RwSignal<Option<CausalTrace>>,
    rows: RwSignal<[Vec<Vec<f64>>; 3]>,
    running: RwSignal<bool>,
    progress: RwSignal<(u64, u64)>,
    error: RwSignal<Option<String>>,
    source: StoredValue<Option<Stream>, LocalStorage>,
}

fn slot(kind: TraceKind) -> usize {
    match kind {
        TraceKind::Residual => 0,
        TraceKind::Mlp => 1,
        TraceKind::Attention => 2,
    }
}

impl TraceState {
    fn new() -> TraceState {
        TraceState {
            header: RwSignal::new(None),
            rows: RwSignal::new(Default::default()),
            running: RwSignal::new(false),
            progress: RwSignal::new((0, 0)),
            error: RwSignal::new(None),
            source: StoredValue::new_local(None),
        }
    }

    fn start(self, query: &[(&'static str, String)]) {
        self.stop();
        self.header.set(None);
        self.rows.set(Default::default());
        self.error.set(None);
        self.progress.set((0, 0));
        self.running.set(true);
        let mut q = leptos_router::params::ParamsMap::new();
        for (k, v) in query {
            q.insert(*k, v.clone());
        }
        let url = format!("/api/trace{}", q.to_query_string());
        let s = Stream::open(
            &url,
            "trace",
            move |u: TraceUpdate| match u {
                TraceUpdate::Started(t) => self.header.set(Some(t)),
                TraceUpdate::Row(r) => {
                    self.progress.set((r.done, r.total));
                    self.rows.update(|rows| rows[slot(r.kind)].push(r.p));
                }
            },
            move |failure| {
                self.error.set(failure);
                self.running.set(false);
                self.source.set_value(None);
            },
        );
        self.source.set_value(s);
    }

    fn stop(self) {
        close(self.source);
        self.running.set(false);
    }
}

#[component]
pub fn TracePanel(
    prompt: RwSignal<String>,
    subject: RwSignal<String>,
    /// The fact editor's layer: a click on an MLP cell sets it.
    fact_layer: RwSignal<String>,
) -> impl IntoView {
    let target = RwSignal::new(String::new());
    let samples = RwSignal::new("10".to_string());
    let trace = TraceState::new();
    // The maps open large over the workspace (a 30-layer map in the dock has cells a few
    // pixels wide): the canvases then take the window's width and a third of its height each.
    let large = RwSignal::new(None::<(u32, u32)>);
    let toggle_large = move |_| {
        if large.get_untracked().is_some() {
            large.set(None);
            return;
        }
        let w = window()
            .inner_width()
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(1600.0);
        let h = window()
            .inner_height()
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(1000.0);
        large.set(Some((
            ((w - 96.0).max(480.0)) as u32,
            (((h - 260.0) / 3.0).max(160.0)) as u32,
        )));
    };
    let start = move || {
        trace.start(&[
            ("prompt", prompt.get_untracked()),
            ("subject", subject.get_untracked()),
            ("target", target.get_untracked()),
            ("samples", samples.get_untracked().trim().to_string()),
        ])
    };
    let summary = move || {
        let t = trace.header.get()?;
        let (done, total) = trace.progress.get();
        Some(format!(
            "p({:?}): clean {:.4}, subject corrupted {:.4} (noise {:.3}, {} samples); {done} of {total} rows",
            t.target.token, t.clean, t.corrupted, t.noise, t.samples
        ))
    };
    view! {
        <div class="trace-panel" class:large=move || large.get().is_some()>
            <h4>"Causal trace"</h4>
            <div class="run-fields">
                <label class="grow">"subject "<input class="trace-subject" placeholder="text of the prompt, e.g. France"
                    prop:value=subject on:input=move |ev| subject.set(event_target_value(&ev))/></label>
                <label>"target "<input class="trace-target" size=8 placeholder="top-1"
                    prop:value=target on:input=move |ev| target.set(event_target_value(&ev))/></label>
                <label>"samples "<input class="trace-samples" size=3
                    prop:value=samples on:input=move |ev| samples.set(event_target_value(&ev))/></label>
            </div>
            <div class="run-actions">
                <button class="trace-button" on:click=move |_| start() disabled=move || trace.running.get()>"trace"</button>
                <button class="trace-stop" on:click=move |_| trace.stop() disabled=move || !trace.running.get()>"stop the trace"</button>
                <button class="trace-large" on:click=toggle_large disabled=move || trace.header.get().is_none()
                    aria-pressed=move || large.get().is_some().to_string()>
                    {move || if large.get().is_some() { "back to the dock" } else { "open large" }}
                </button>
            </div>
            {move || trace.error.get().map(|e| view! { <p class="error trace-error">{e}</p> })}
            <p class="muted trace-summary" data-running=move || trace.running.get().to_string()>{summary}</p>
            <TraceMap kind=TraceKind::Residual trace fact_layer large/>
            <TraceMap kind=TraceKind::Mlp trace fact_layer large/>
            <TraceMap kind=TraceKind::Attention trace fact_layer large/>
        </div>
    }
}

/// One kind's map as a heatmap view: tokens down, the layers done so far across.
fn as_view(t: &CausalTrace, rows: &[Vec<f64>]) -> ViewData {
    let (tokens, layers) = (t.tokens.len() as u64, rows.len() as u64);
    let values: Vec<f32> = (0..t.tokens.len())
        .flat_map(|tok| rows.iter().map(move |row| row[tok] as f32))
        .collect();
    ViewData {
        tensor: "causal trace".into(),
        dtype: "F32".into(),
        shape: vec![tokens, layers],
        // No dims to name: the map's title says what its axes are.
        spec: ViewSpec {
            y_dim: None,
            x_dim: None,
            index: vec![0, 0],
            y: Span::full(tokens),
            x: Span::full(layers),
        },
        rows: tokens,
        cols: layers,
        block: (1, 1),
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        stat: Default::default(),
        pooled: Vec::new(),
        mode: Default::default(),
        base_bytes: Vec::new(),
        version: 0,
        y_labels: t.tokens.iter().map(|t| t.token.clone()).collect(),
        x_labels: Vec::new(),
    }
}

/// The maps' canvas size in the dock.
const DOCKED: (u32, u32) = (432, 240);

#[component]
fn TraceMap(
    kind: TraceKind,
    trace: TraceState,
    fact_layer: RwSignal<String>,
    /// The canvas size when the maps are open large.
    large: RwSignal<Option<(u32, u32)>>,
) -> impl IntoView {
    let size = move || large.get().unwrap_or(DOCKED);
    let ctx = use_ctx();
    let canvas = NodeRef::<html::Canvas>::new();
    let geom = RwSignal::new(None::<Geom>);
    let hover = RwSignal::new(None::<(usize, usize)>);
    let shown =
        move || trace.header.get().is_some() && trace.rows.with(|r| !r[slot(kind)].is_empty());
    Effect::new(move |_| {
        let (Some(el), Some(t)) = (canvas.get(), trace.header.get()) else {
            return;
        };
        // Drawn at the canvas's size: set it before drawing (the attributes follow too).
        let (w, h) = size();
        el.set_width(w);
        el.set_height(h);
        let drawn = trace.rows.with(|rows| {
            let rows = &rows[slot(kind)];
            if rows.is_empty() {
                return None;
            }
            let (lo, hi) = (t.corrupted, t.clean);
            let scale_of = move |v: &[f64]| Scale::between(Colormap::Viridis, lo, hi, v);
            draw::cells_scaled(&el, &as_view(&t, rows), &scale_of)
        });
        geom.set(drawn.map(|(g, _)| g));
    });
    // The (token, layer) under a canvas point.
    let cell_at = move |ev: &leptos::ev::MouseEvent| -> Option<(usize, usize)> {
        let g = geom.get_untracked()?;
        let tokens = trace
            .header
            .with_untracked(|t| t.as_ref().map(|t| t.tokens.len()))?;
        let layers = trace.rows.with_untracked(|r| r[slot(kind)].len());
        let fx = (f64::from(ev.offset_x()) - g.left) / g.width;
        let fy = (f64::from(ev.offset_y()) - g.top) / g.height;
        ((0.0..1.0).contains(&fx) && (0.0..1.0).contains(&fy))
            .then_some(((fy * tokens as f64) as usize, (fx * layers as f64) as usize))
    };
    let hover_text = move || {
        let (tok, layer) = hover.get()?;
        let t = trace.header.get()?;
        let p = trace.rows.with(|r| {
            r[slot(kind)]
                .get(layer)
                .and_then(|row| row.get(tok).copied())
        })?;
        let open = match kind {
            TraceKind::Mlp => " (click: open its down_proj, edit a fact there)",
            TraceKind::Attention => " (click: open its o_proj)",
            TraceKind::Residual => "",
        };
        Some(format!(
            "layer {layer}, token {tok} {:?}: p = {p:.4}, indirect effect {:+.4}{open}",
            t.tokens.get(tok)?.token,
            p - t.corrupted
        ))
    };
    let on_click = move |ev: leptos::ev::MouseEvent| {
        if let (TraceKind::Mlp, Some((_, layer))) = (kind, cell_at(&ev)) {
            fact_layer.set(layer.to_string());
        }
        // The trace names the matrix each cell points at (the model's own names).
        let name = cell_at(&ev).and_then(|(_, layer)| {
            trace
                .header
                .with_untracked(|t| t.as_ref()?.tensor_of(kind, layer).map(str::to_string))
        });
        if let Some(name) = name {
            // The opened matrix shows in the workspace the large maps cover.
            large.set(None);
            let url = ctx.url.get_untracked().open(&name);
            ctx.go(&url, false);
        }
    };
    view! {
        <div class=format!("trace-map {}", kind.name()) style:display=move || if shown() { "block" } else { "none" }
            data-layers=move || trace.rows.with(|r| r[slot(kind)].len()).to_string()>
            <h5>{format!("{} restored: token (down) x layer (across)", match kind {
                TraceKind::Residual => "layer output (residual stream)",
                TraceKind::Mlp => "MLP output (window of layers)",
                TraceKind::Attention => "attention output (window of layers)",
            })}</h5>
            <canvas node_ref=canvas width=move || size().0 height=move || size().1 class="trace-canvas"
                on:mousemove=move |ev| hover.set(cell_at(&ev)) on:mouseleave=move |_| hover.set(None) on:click=on_click/>
            <p class="muted trace-hover">{move || hover_text().unwrap_or_default()}</p>
        </div>
    }
}

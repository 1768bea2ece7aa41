//! The projection view: PCA, t-SNE or UMAP of the current plane's rows (or columns) in 2-D or
//! 3-D, drawn as a scatter into a pixel buffer (tens of thousands of points redraw in a
//! frame). t-SNE and UMAP run on the server and redraw live until they end or are stopped.
//! Colour by norm, a coordinate, or k-means cluster; hover names the point (and its token);
//! click opens that row in the heatmap and lists its nearest tokens; shift-drag draws a lasso
//! whose points are listed and can go to the region panel as a row set; dragging a 3-D
//! scatter rotates it.

mod form;
mod live;
mod pointer;
mod selection;

use super::charts::{self, plot_attr};
use super::heatmap::Geom;
use super::state::{use_ctx, CellRect};
use form::{Controls, ProjectForm};
use leptos::html;
use leptos::prelude::*;
use live::LiveLayout;
use pointer::ScatterPointer;
use selection::{describe, NearestPoint, SelectionList};
use tensor_surgeon_core::colormap::{Colormap, Scale, ScaleMode};
use tensor_surgeon_core::scatter::{self, Camera};
use tensor_surgeon_core::view::{self, Span};
use tensor_surgeon_wire::{Method, ProjectRequest, Projection};

const WIDTH: u32 = 432;
const HEIGHT: u32 = 420;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum ColorBy {
    Norm,
    Component(usize),
    Cluster,
}

fn colors(p: &Projection, by: ColorBy, k: usize, picked: &[usize]) -> Vec<[u8; 4]> {
    let dims = p.dims.max(1) as usize;
    let mut out: Vec<[u8; 4]> = match by {
        ColorBy::Cluster => tensor_surgeon_core::cluster::kmeans(&p.points, dims, k)
            .into_iter()
            .map(|l| {
                let c = colorous::CATEGORY10[l as usize % 10];
                [c.r, c.g, c.b, 255]
            })
            .collect(),
        _ => {
            let values: Vec<f64> = match by {
                ColorBy::Component(c) => p
                    .points
                    .chunks(dims)
                    .map(|x| f64::from(x[c.min(dims - 1)]))
                    .collect(),
                _ => p.norms.iter().map(|&v| f64::from(v)).collect(),
            };
            let scale = Scale::fit(Colormap::Viridis, ScaleMode::MinMax, values.iter().copied());
            values.iter().map(|&v| scale.color(v)).collect()
        }
    };
    out.resize(p.points.len() / dims, [120, 120, 120, 255]);
    for &i in picked {
        if let Some(c) = out.get_mut(i) {
            *c = [240, 60, 60, 255];
        }
    }
    out
}

/// The summary line of a projection: its points, and for PCA each component's variance.
fn summary(t: &str, p: &Projection) -> String {
    if p.method != Method::Pca {
        return format!("{t}: {} points · {}", p.n, p.method.label());
    }
    let parts: Vec<String> = p
        .explained_variance
        .iter()
        .zip(&p.explained_ratio)
        .enumerate()
        .map(|(i, (v, r))| {
            format!(
                "PC{}: variance {} ({:.2}%)",
                i + 1,
                tensor_surgeon_core::units::significant(*v, 4),
                r * 100.0
            )
        })
        .collect();
    format!("{t}: {} points · {}", p.n, parts.join(" · "))
}

/// The axis titles of a projection.
fn titles(p: &Projection) -> Vec<String> {
    if p.method == Method::Pca {
        p.explained_ratio
            .iter()
            .enumerate()
            .map(|(i, r)| format!("PC{} ({:.1}%)", i + 1, r * 100.0))
            .collect()
    } else {
        (1..=p.dims as usize)
            .map(|i| format!("{} {i}", p.method.label()))
            .collect()
    }
}

/// A running or ended layout's state: phase, step, loss, frames, a progress bar.
fn status_line(runner: LiveLayout, method: RwSignal<Method>) -> impl IntoView {
    move || {
        runner.status.get().map(|s| {
            let name = if method.get_untracked() == Method::Tsne { "KL" } else { "loss" };
            let loss = s.loss.map(|l| format!(" · {name} {l:.4}")).unwrap_or_default();
            let steps = if s.total > 0 {
                format!(" · step {} of {}", s.iterations, s.total)
            } else {
                String::new()
            };
            let state = if s.stopped { "stopped".to_string() } else { s.phase.clone() };
            view! {
                <div class="project-status" data-running=s.running.to_string()>
                    {format!("{state}{steps}{loss} · frame {}", runner.frames.get())}
                    {(s.total > 0 && s.running).then(|| view! { <progress max=s.total.to_string() value=s.iterations.to_string()></progress> })}
                </div>
            }
        })
    }
}

/// Opens point `i` of `proj` in the heatmap (its row, or column) and selects it; a token
/// row also lists its nearest tokens.
fn open_point(
    ctx: super::Ctx,
    proj: Memo<Option<(String, Projection)>>,
    columns: RwSignal<bool>,
    clicked: RwSignal<Option<(String, u64)>>,
    i: usize,
) {
    let (Some((tensor, p)), Some(t), Some(v)) = (
        proj.get_untracked(),
        ctx.tensor.get_untracked(),
        ctx.view.get_untracked(),
    ) else {
        return;
    };
    if t.name != tensor {
        return;
    }
    let idx = p.index[i];
    if !p.labels.is_empty() && !columns.get_untracked() {
        clicked.set(Some((tensor.clone(), idx)));
    }
    let one = Span {
        start: idx,
        stop: idx + 1,
        step: 1,
    };
    let mut nv = view::plane(&v, &t.shape);
    if columns.get_untracked() {
        nv.x = one;
    } else {
        nv.y = one;
    }
    let nv = nv.make_valid(&t.shape);
    let (r, c) = nv.cells();
    ctx.go(&ctx.url.get_untracked().with_view(&nv), false);
    ctx.selection.set(Some(CellRect {
        view: nv,
        tensor: t.name,
        rows: (0, r),
        cols: (0, c),
    }));
}

#[component]
pub fn ScatterPanel() -> impl IntoView {
    let ctx = use_ctx();
    let canvas = NodeRef::<html::Canvas>::new();
    let c = Controls::new();
    let camera = RwSignal::new(Camera {
        yaw: 0.6,
        pitch: 0.35,
    });
    let runner = LiveLayout::new();
    let hover = RwSignal::new(None::<usize>);
    let picked = RwSignal::new(Vec::<usize>::new());
    let clicked = RwSignal::new(None::<(String, u64)>);
    let geom = RwSignal::new(None::<Geom>);
    let lasso = RwSignal::new(Vec::<[f64; 2]>::new());
    let draws = RwSignal::new(0u64);

    let run = Callback::new(move |()| {
        let (Some(t), Some(v)) = (ctx.tensor.get_untracked(), ctx.view.get_untracked()) else {
            return;
        };
        let params = match c.fields.params() {
            Ok(p) => p,
            Err(e) => return c.error.set(Some(e)),
        };
        c.error.set(None);
        picked.set(Vec::new());
        hover.set(None);
        runner.run(ProjectRequest {
            tensor: t.name.clone(),
            spec: view::plane(&v, &t.shape),
            columns: c.columns.get_untracked(),
            dims: c.dims.get_untracked(),
            normalize: c.normalize.get_untracked(),
            method: c.method.get_untracked(),
            params,
        });
    });
    let proj = Memo::new(move |_| {
        runner
            .result
            .with(|r| r.as_ref().and_then(|r| r.as_ref().ok()).cloned())
            .filter(|(_, p)| !p.points.is_empty())
    });
    let screen = Memo::new(move |_| {
        let cam = camera.get();
        proj.with(|p| {
            p.as_ref()
                .map(|(_, p)| scatter::layout(&p.points, p.dims as usize, cam))
                .unwrap_or_default()
        })
    });
    let point_colors = Memo::new(move |_| {
        let (by, k) = (c.color_by.get(), c.k.get());
        picked.with(|sel| {
            proj.with(|p| {
                p.as_ref()
                    .map(|(_, p)| colors(p, by, k, sel))
                    .unwrap_or_default()
            })
        })
    });
    Effect::new(move |_| {
        let Some(el) = canvas.get() else { return };
        let mark = hover.get();
        proj.with(|p| {
            let Some((_, p)) = p else { return };
            let d = p.dims as usize;
            let bounds = (d == 2).then(|| scatter::bounds(&p.points, d));
            screen.with(|s| {
                point_colors
                    .with(|c| geom.set(charts::scatter(&el, s, c, mark, bounds, &titles(p))))
            });
            draws.update(|n| *n += 1);
        });
    });
    let open_point = Callback::new(move |i: usize| open_point(ctx, proj, c.columns, clicked, i));
    let pointer = ScatterPointer {
        geom,
        drag: RwSignal::new(None),
        lasso,
        hover,
        camera,
        picked,
        screen,
        proj,
        open_point,
    };
    let hover_text = move || {
        let i = hover.get()?;
        proj.with(|p| {
            p.as_ref()
                .map(|(_, p)| describe(p, i, c.columns.get_untracked()))
        })
    };
    let lasso_points = move || {
        lasso.with(|l| {
            l.iter()
                .map(|p| format!("{:.0},{:.0}", p[0], p[1]))
                .collect::<Vec<_>>()
                .join(" ")
        })
    };
    let can_run = Signal::derive(move || {
        ctx.tensor
            .with(|t| t.as_ref().is_some_and(|t| t.shape.len() >= 2))
    });
    let attr = move |f: fn(&Projection) -> Option<String>| {
        move || proj.with(|p| p.as_ref().and_then(|(_, p)| f(p)))
    };

    view! {
        <section class="scatter-panel">
            <ProjectForm c runner run can_run/>
            {move || c.error.get().map(|e| view! { <p class="error">{e}</p> })}
            {status_line(runner, c.method)}
            {move || runner.result.with(|r| match r { Some(Err(e)) => Some(view! { <p class="error">{e.clone()}</p> }), _ => None })}
            <div class="muted project-summary">{move || proj.with(|p| p.as_ref().map(|(t, p)| summary(t, p)))}</div>
            <div class="scatter-wrap">
                <canvas node_ref=canvas width=WIDTH height=HEIGHT class="scatter"
                    data-plot=move || plot_attr(geom.get())
                    data-n=attr(|p| Some(p.n.to_string()))
                    data-dims=attr(|p| Some(p.dims.to_string()))
                    data-method=attr(|p| Some(p.method.label().to_string()))
                    data-map=attr(|p| (p.dims == 2).then(|| {
                        let b = scatter::bounds(&p.points, 2);
                        format!("{},{},{},{}", b.0, b.1, b.2, b.3)
                    }))
                    data-draws=move || draws.get().to_string()
                    data-frames=move || runner.frames.get().to_string()
                    data-camera=move || camera.with(|c| format!("{:.2},{:.2}", c.yaw, c.pitch))
                    on:mousedown=move |ev| pointer.down(&ev) on:mousemove=move |ev| pointer.moved(&ev)
                    on:mouseup=move |ev| pointer.up(&ev) on:mouseleave=move |_| pointer.left()/>
                <svg class="lasso" width=WIDTH height=HEIGHT aria-hidden="true">
                    <polygon points=lasso_points/>
                </svg>
            </div>
            <div class="hover scatter-hover">{hover_text}</div>
            <div class="muted">"hover: point · click: open its row · shift-drag: lasso · drag (3-D): rotate"</div>
            <SelectionList proj=proj picked=picked columns=c.columns.read_only() open_point=open_point/>
            <NearestPoint clicked=clicked/>
        </section>
    }
}

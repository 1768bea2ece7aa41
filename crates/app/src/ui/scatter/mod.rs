//! The projection view: PCA, t-SNE or UMAP of the current plane's rows (or columns) in 2-D or
//! 3-D, drawn as a scatter into a pixel buffer (tens of thousands of points redraw in a
//! frame). t-SNE and UMAP run on the server and redraw live until they end or are stopped.
//! Colour by norm, a coordinate, or k-means cluster; hover names the point (and its token);
//! click opens that row in the heatmap and lists its nearest tokens; shift-drag draws a lasso
//! whose points are listed and can go to the region panel as a row set; dragging a 3-D
//! scatter rotates it.

mod live;
mod selection;

use super::charts::{self, plot_attr};
use super::heatmap::Geom;
use super::state::{use_ctx, CellRect};
use leptos::html;
use leptos::prelude::*;
use live::LiveLayout;
use selection::{describe, NearestPoint, SelectionList};
use tensor_surgeon_core::colormap::{Colormap, Scale, ScaleMode};
use tensor_surgeon_core::scatter::{self, Camera};
use tensor_surgeon_core::view::{self, Span};
use tensor_surgeon_wire::{Init, LayoutParams, Method, ProjectRequest, Projection};

const WIDTH: u32 = 432;
const HEIGHT: u32 = 420;

#[derive(Clone, Copy, Debug, PartialEq)]
enum ColorBy {
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

/// The panel's parameter fields, as text (empty: the default).
#[derive(Clone, Copy)]
struct Fields {
    perplexity: RwSignal<String>,
    iterations: RwSignal<String>,
    neighbors: RwSignal<String>,
    min_dist: RwSignal<String>,
    seed: RwSignal<String>,
    parallel: RwSignal<bool>,
}

impl Fields {
    fn new() -> Fields {
        Fields {
            perplexity: RwSignal::new(String::new()),
            iterations: RwSignal::new(String::new()),
            neighbors: RwSignal::new(String::new()),
            min_dist: RwSignal::new(String::new()),
            seed: RwSignal::new(String::new()),
            parallel: RwSignal::new(false),
        }
    }

    fn params(self) -> Result<LayoutParams, String> {
        fn field<T: std::str::FromStr>(
            s: RwSignal<String>,
            what: &str,
        ) -> Result<Option<T>, String> {
            let t = s.get_untracked();
            let t = t.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse()
                .map(Some)
                .map_err(|_| format!("{what}: {t:?} is not a number"))
        }
        let d = LayoutParams::default();
        Ok(LayoutParams {
            perplexity: field(self.perplexity, "perplexity")?.unwrap_or(d.perplexity),
            iterations: field(self.iterations, "iterations")?,
            n_neighbors: field(self.neighbors, "neighbours")?.unwrap_or(d.n_neighbors),
            min_dist: field(self.min_dist, "min_dist")?.unwrap_or(d.min_dist),
            seed: field(self.seed, "seed")?.unwrap_or(d.seed),
            init: Init::Auto,
            parallel: self.parallel.get_untracked(),
            ..d
        })
    }
}

/// A labelled number field bound to a text signal.
fn number_field(
    label: &'static str,
    class: &'static str,
    value: RwSignal<String>,
    placeholder: &'static str,
) -> impl IntoView {
    view! {
        <label>{label}" "<input type="text" inputmode="decimal" class=class size="5" placeholder=placeholder
            prop:value=move || value.get() on:change=move |ev| value.set(event_target_value(&ev))/></label>
    }
}

#[component]
pub fn ScatterPanel() -> impl IntoView {
    let ctx = use_ctx();
    let canvas = NodeRef::<html::Canvas>::new();
    let (columns, set_columns) = signal(false);
    let (dims, set_dims) = signal(2u32);
    let (normalize, set_normalize) = signal(false);
    let (method, set_method) = signal(Method::Pca);
    let fields = Fields::new();
    let (color_by, set_color_by) = signal(ColorBy::Norm);
    let (k, set_k) = signal(6usize);
    let (form_error, set_form_error) = signal(None::<String>);
    let camera = RwSignal::new(Camera {
        yaw: 0.6,
        pitch: 0.35,
    });
    let runner = LiveLayout::new();
    let hover = RwSignal::new(None::<usize>);
    let picked = RwSignal::new(Vec::<usize>::new());
    let clicked = RwSignal::new(None::<(String, u64)>);
    let geom = RwSignal::new(None::<Geom>);
    // (x, y, shift, camera at the press)
    let drag = RwSignal::new(None::<(f64, f64, bool, Camera)>);
    // The lasso being drawn, in canvas pixels.
    let lasso = RwSignal::new(Vec::<[f64; 2]>::new());
    let draws = RwSignal::new(0u64);

    let run = move |_| {
        let (Some(t), Some(v)) = (ctx.tensor.get_untracked(), ctx.view.get_untracked()) else {
            return;
        };
        let params = match fields.params() {
            Ok(p) => p,
            Err(e) => {
                set_form_error.set(Some(e));
                return;
            }
        };
        set_form_error.set(None);
        picked.set(Vec::new());
        hover.set(None);
        runner.run(ProjectRequest {
            tensor: t.name.clone(),
            spec: view::plane(&v, &t.shape),
            columns: columns.get_untracked(),
            dims: dims.get_untracked(),
            normalize: normalize.get_untracked(),
            method: method.get_untracked(),
            params,
        });
    };
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
        let (by, k) = (color_by.get(), k.get());
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
            let titles: Vec<String> = if p.method == Method::Pca {
                p.explained_ratio
                    .iter()
                    .enumerate()
                    .map(|(i, r)| format!("PC{} ({:.1}%)", i + 1, r * 100.0))
                    .collect()
            } else {
                (1..=d)
                    .map(|i| format!("{} {i}", p.method.label()))
                    .collect()
            };
            screen.with(|s| {
                point_colors.with(|c| {
                    geom.set(charts::scatter(&el, s, c, mark, bounds, &titles));
                })
            });
            draws.update(|n| *n += 1);
        });
    });

    let local = move |x: f64, y: f64| -> Option<[f32; 2]> {
        let g = geom.get_untracked()?;
        Some([
            ((x - g.left) / g.width) as f32,
            ((y - g.top) / g.height) as f32,
        ])
    };
    let reach = move || {
        geom.get_untracked()
            .map_or(0.01, |g| (6.0 / g.width) as f32)
    };
    let open_point = Callback::new(move |i: usize| {
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
    });
    let is3 = move || proj.with_untracked(|p| p.as_ref().is_some_and(|(_, p)| p.dims == 3));
    let on_down = move |ev: leptos::ev::MouseEvent| {
        let (x, y) = (f64::from(ev.offset_x()), f64::from(ev.offset_y()));
        drag.set(Some((x, y, ev.shift_key(), camera.get_untracked())));
        if ev.shift_key() {
            lasso.set(vec![[x, y]]);
        }
    };
    let on_move = move |ev: leptos::ev::MouseEvent| {
        let (x, y) = (f64::from(ev.offset_x()), f64::from(ev.offset_y()));
        if let Some((x0, y0, shift, cam)) = drag.get_untracked() {
            if !shift && is3() {
                camera.set(Camera {
                    yaw: cam.yaw + (x - x0) * 0.01,
                    pitch: (cam.pitch + (y - y0) * 0.01).clamp(-1.5, 1.5),
                });
                return;
            }
            if shift {
                lasso.update(|l| {
                    if l.last()
                        .is_none_or(|p| (p[0] - x).abs() + (p[1] - y).abs() >= 2.0)
                    {
                        l.push([x, y]);
                    }
                });
                return;
            }
        }
        hover.set(
            local(x, y)
                .and_then(|p| screen.with_untracked(|s| scatter::pick(s, p[0], p[1], reach()))),
        );
    };
    let on_up = move |ev: leptos::ev::MouseEvent| {
        let Some((x0, y0, shift, _)) = drag.get_untracked() else {
            return;
        };
        drag.set(None);
        let (x, y) = (f64::from(ev.offset_x()), f64::from(ev.offset_y()));
        let path = lasso.get_untracked();
        lasso.set(Vec::new());
        // A lasso ends where it began: it moved if any point of its path is away.
        let moved = path
            .iter()
            .chain(std::iter::once(&[x, y]))
            .any(|p| (p[0] - x0).abs() + (p[1] - y0).abs() > 3.0);
        if shift && moved {
            let polygon: Vec<[f32; 2]> = path
                .iter()
                .chain(std::iter::once(&[x, y]))
                .filter_map(|p| local(p[0], p[1]))
                .collect();
            picked.set(screen.with_untracked(|s| scatter::inside_polygon(s, &polygon)));
        } else if !moved {
            if let Some(i) = local(x, y)
                .and_then(|p| screen.with_untracked(|s| scatter::pick(s, p[0], p[1], reach())))
            {
                open_point.run(i);
            }
        }
    };

    let hover_text = move || {
        hover.get().and_then(|i| {
            proj.with(|p| {
                p.as_ref()
                    .map(|(_, p)| describe(p, i, columns.get_untracked()))
            })
        })
    };
    let summary = move || {
        proj.with(|p| {
            p.as_ref().map(|(t, p)| {
                if p.method == Method::Pca {
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
                } else {
                    format!("{t}: {} points · {}", p.n, p.method.label())
                }
            })
        })
    };
    let status = move || {
        runner.status.get().map(|s| {
            let loss = s
                .loss
                .map(|l| format!(" · {} {:.4}", if method.get_untracked() == Method::Tsne { "KL" } else { "loss" }, l))
                .unwrap_or_default();
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
    };
    let nonlinear = move || method.get() != Method::Pca;
    let lasso_points = move || {
        lasso.with(|l| {
            l.iter()
                .map(|p| format!("{:.0},{:.0}", p[0], p[1]))
                .collect::<Vec<_>>()
                .join(" ")
        })
    };

    view! {
        <section class="scatter-panel">
            <div class="row">
                <h3>"Projection"</h3>
                <select class="project-method" aria-label="method" on:change=move |ev| set_method.set(match event_target_value(&ev).as_str() {
                    "tsne" => Method::Tsne, "umap" => Method::Umap, _ => Method::Pca })>
                    <option value="pca" selected=true>"PCA"</option>
                    <option value="tsne">"t-SNE"</option>
                    <option value="umap">"UMAP"</option>
                </select>
                <select class="project-axis" aria-label="project rows or columns" on:change=move |ev| set_columns.set(event_target_value(&ev) == "cols")>
                    <option value="rows" selected=true>"rows"</option>
                    <option value="cols">"columns"</option>
                </select>
                <select class="project-dims" aria-label="dimensions" on:change=move |ev| set_dims.set(if event_target_value(&ev) == "3" { 3 } else { 2 })>
                    <option value="2" selected=true>"2-D"</option>
                    <option value="3">"3-D"</option>
                </select>
                <label><input type="checkbox" class="project-normalize" on:change=move |ev| set_normalize.set(event_target_checked(&ev))/>" unit-norm"</label>
            </div>
            <div class="row" hidden=move || !nonlinear()>
                <span hidden=move || method.get() != Method::Tsne>{number_field("perplexity", "project-perplexity", fields.perplexity, "30")}</span>
                <span hidden=move || method.get() != Method::Umap>{number_field("neighbours", "project-neighbors", fields.neighbors, "15")}</span>
                <span hidden=move || method.get() != Method::Umap>{number_field("min_dist", "project-min-dist", fields.min_dist, "0.1")}</span>
                <label hidden=move || method.get() != Method::Tsne title="3-D t-SNE on every core: sooner, but the same seed may not give the same layout (2-D always uses every core and stays reproducible)">
                    <input type="checkbox" class="project-parallel" on:change=move |ev| fields.parallel.set(event_target_checked(&ev))/>" parallel (3-D)"</label>
                {number_field("steps", "project-iterations", fields.iterations, "auto")}
                {number_field("seed", "project-seed", fields.seed, "0")}
            </div>
            <div class="row">
                <button class="project-run" on:click=run disabled=move || runner.busy.get() || ctx.tensor.with(|t| t.as_ref().is_none_or(|t| t.shape.len() < 2))>"project"</button>
                <button class="project-stop" on:click=move |_| runner.stop() hidden=move || !runner.status.with(|s| s.as_ref().is_some_and(|s| s.running))>"stop"</button>
                <label>"colour "<select class="project-color" aria-label="colour points by" on:change=move |ev| set_color_by.set(match event_target_value(&ev).as_str() {
                    "pc1" => ColorBy::Component(0), "pc2" => ColorBy::Component(1), "pc3" => ColorBy::Component(2),
                    "cluster" => ColorBy::Cluster, _ => ColorBy::Norm })>
                    <option value="norm" selected=true>"row norm"</option>
                    <option value="pc1">"axis 1"</option>
                    <option value="pc2">"axis 2"</option>
                    <option value="pc3">"axis 3"</option>
                    <option value="cluster">"k-means cluster"</option>
                </select></label>
                <label>"k "<input type="number" class="project-k" min="1" max="50" prop:value=move || k.get().to_string()
                    on:change=move |ev| { if let Ok(n) = event_target_value(&ev).trim().parse::<usize>() { set_k.set(n.clamp(1, 50)) } }/></label>
            </div>
            {move || form_error.get().map(|e| view! { <p class="error">{e}</p> })}
            {status}
            {move || runner.result.with(|r| match r { Some(Err(e)) => Some(view! { <p class="error">{e.clone()}</p> }), _ => None })}
            <div class="muted project-summary">{summary}</div>
            <div class="scatter-wrap">
                <canvas node_ref=canvas width=WIDTH height=HEIGHT class="scatter"
                    data-plot=move || plot_attr(geom.get())
                    data-n=move || proj.with(|p| p.as_ref().map(|(_, p)| p.n.to_string()))
                    data-dims=move || proj.with(|p| p.as_ref().map(|(_, p)| p.dims.to_string()))
                    data-method=move || proj.with(|p| p.as_ref().map(|(_, p)| p.method.label()))
                    data-map=move || proj.with(|p| p.as_ref().filter(|(_, p)| p.dims == 2).map(|(_, p)| {
                        let b = scatter::bounds(&p.points, 2);
                        format!("{},{},{},{}", b.0, b.1, b.2, b.3)
                    }))
                    data-draws=move || draws.get().to_string()
                    data-frames=move || runner.frames.get().to_string()
                    data-camera=move || camera.with(|c| format!("{:.2},{:.2}", c.yaw, c.pitch))
                    on:mousedown=on_down on:mousemove=on_move on:mouseup=on_up
                    on:mouseleave=move |_| { hover.set(None); drag.set(None); lasso.set(Vec::new()); }/>
                <svg class="lasso" width=WIDTH height=HEIGHT aria-hidden="true">
                    <polygon points=lasso_points/>
                </svg>
            </div>
            <div class="hover scatter-hover">{hover_text}</div>
            <div class="muted">"hover: point · click: open its row · shift-drag: lasso · drag (3-D): rotate"</div>
            <SelectionList proj=proj picked=picked columns=columns open_point=open_point/>
            <NearestPoint clicked=clicked/>
        </section>
    }
}

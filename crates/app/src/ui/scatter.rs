//! The projection view: PCA of the current plane's rows (or columns) in 2-D or 3-D, drawn as
//! a scatter. Colour by norm, a component, or k-means cluster; hover names the point (and its
//! token); click opens that row in the heatmap; shift-drag selects a rectangle of points and
//! lists them; dragging a 3-D scatter rotates it.

use super::charts::{self, plot_attr};
use super::heatmap::Geom;
use super::state::{message, poll_progress, use_ctx, CellRect};
use crate::api::{get_project_progress, get_projection};
use leptos::html;
use leptos::prelude::*;
use tensor_surgeon_core::colormap::{Colormap, Scale, ScaleMode};
use tensor_surgeon_core::scatter::{self, Camera};
use tensor_surgeon_core::view::{self, Span};
use tensor_surgeon_wire::{ProjectRequest, Projection, TaskProgress};

const WIDTH: u32 = 432;
const HEIGHT: u32 = 420;
/// Points listed from a rectangle selection.
const LIST_LIMIT: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq)]
enum ColorBy {
    Norm,
    Component(usize),
    Cluster,
}

fn colors(p: &Projection, by: ColorBy, k: usize) -> Vec<[u8; 4]> {
    let dims = p.dims as usize;
    let values: Vec<f64> = match by {
        ColorBy::Norm => p.norms.iter().map(|&v| f64::from(v)).collect(),
        ColorBy::Component(c) => p
            .points
            .chunks(dims)
            .map(|x| f64::from(x[c.min(dims - 1)]))
            .collect(),
        ColorBy::Cluster => {
            return tensor_surgeon_core::cluster::kmeans(&p.points, dims, k)
                .into_iter()
                .map(|l| {
                    let c = colorous::CATEGORY10[l as usize % 10];
                    [c.r, c.g, c.b, 255]
                })
                .collect();
        }
    };
    let scale = Scale::fit(Colormap::Viridis, ScaleMode::MinMax, values.iter().copied());
    values.iter().map(|&v| scale.color(v)).collect()
}

#[component]
pub fn ScatterPanel() -> impl IntoView {
    let ctx = use_ctx();
    let canvas = NodeRef::<html::Canvas>::new();
    let (columns, set_columns) = signal(false);
    let (dims, set_dims) = signal(2u32);
    let (normalize, set_normalize) = signal(false);
    let (color_by, set_color_by) = signal(ColorBy::Norm);
    let (k, set_k) = signal(6usize);
    let camera = RwSignal::new(Camera {
        yaw: 0.6,
        pitch: 0.35,
    });
    let result = RwSignal::new(None::<Result<(String, Projection), String>>);
    let (running, set_running) = signal(false);
    let (progress, set_progress) = signal(None::<TaskProgress>);
    let hover = RwSignal::new(None::<usize>);
    let picked = RwSignal::new(Vec::<usize>::new());
    let geom = RwSignal::new(None::<Geom>);
    let drag = RwSignal::new(None::<(f64, f64, bool, Camera)>);
    let draws = RwSignal::new(0u64);

    let run = move |_| {
        let (Some(t), Some(v)) = (ctx.tensor.get_untracked(), ctx.view.get_untracked()) else {
            return;
        };
        let req = ProjectRequest {
            tensor: t.name.clone(),
            spec: view::plane(&v, &t.shape),
            columns: columns.get_untracked(),
            dims: dims.get_untracked(),
            normalize: normalize.get_untracked(),
        };
        set_running.set(true);
        picked.set(Vec::new());
        hover.set(None);
        poll_progress(running, set_progress, get_project_progress);
        leptos::task::spawn_local(async move {
            let r = get_projection(req).await;
            set_running.set(false);
            result.set(Some(r.map(|p| (t.name, p)).map_err(|e| message(&e))));
        });
    };
    let proj =
        Memo::new(move |_| result.with(|r| r.as_ref().and_then(|r| r.as_ref().ok()).cloned()));
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
        proj.with(|p| {
            p.as_ref()
                .map(|(_, p)| colors(p, by, k))
                .unwrap_or_default()
        })
    });
    Effect::new(move |_| {
        let Some(el) = canvas.get() else { return };
        let mark = hover.get();
        proj.with(|p| {
            let Some((_, p)) = p else { return };
            let d = p.dims as usize;
            let bounds = (d == 2).then(|| scatter::bounds(&p.points, d));
            let titles: Vec<String> = p
                .explained_ratio
                .iter()
                .enumerate()
                .map(|(i, r)| format!("PC{} ({:.1}%)", i + 1, r * 100.0))
                .collect();
            screen.with(|s| {
                point_colors.with(|c| {
                    geom.set(charts::scatter(&el, s, c, mark, bounds, &titles));
                })
            });
            draws.update(|n| *n += 1);
        });
    });

    let local = move |ev: &leptos::ev::MouseEvent| -> Option<[f32; 2]> {
        let g = geom.get_untracked()?;
        Some([
            ((f64::from(ev.offset_x()) - g.left) / g.width) as f32,
            ((f64::from(ev.offset_y()) - g.top) / g.height) as f32,
        ])
    };
    let reach = move || {
        geom.get_untracked()
            .map_or(0.01, |g| (6.0 / g.width) as f32)
    };
    let open_point = move |i: usize| {
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
        let one = Span {
            start: idx,
            stop: idx + 1,
            step: 1,
        };
        let mut nv = view::plane(&v, &t.shape);
        let cols = columns.get_untracked();
        if cols {
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
    };
    let on_down = move |ev: leptos::ev::MouseEvent| {
        drag.set(Some((
            f64::from(ev.offset_x()),
            f64::from(ev.offset_y()),
            ev.shift_key(),
            camera.get_untracked(),
        )));
    };
    let on_move = move |ev: leptos::ev::MouseEvent| {
        if let Some((x, y, shift, cam)) = drag.get_untracked() {
            let is3 = proj.with_untracked(|p| p.as_ref().is_some_and(|(_, p)| p.dims == 3));
            if !shift && is3 {
                let (dx, dy) = (f64::from(ev.offset_x()) - x, f64::from(ev.offset_y()) - y);
                camera.set(Camera {
                    yaw: cam.yaw + dx * 0.01,
                    pitch: (cam.pitch + dy * 0.01).clamp(-1.5, 1.5),
                });
                return;
            }
        }
        hover.set(
            local(&ev)
                .and_then(|p| screen.with_untracked(|s| scatter::pick(s, p[0], p[1], reach()))),
        );
    };
    let on_up = move |ev: leptos::ev::MouseEvent| {
        let Some((x, y, shift, _)) = drag.get_untracked() else {
            return;
        };
        drag.set(None);
        let moved =
            (f64::from(ev.offset_x()) - x).abs() + (f64::from(ev.offset_y()) - y).abs() > 3.0;
        if shift && moved {
            let (Some(g), Some(b)) = (geom.get_untracked(), local(&ev)) else {
                return;
            };
            let a = [
                ((x - g.left) / g.width) as f32,
                ((y - g.top) / g.height) as f32,
            ];
            picked.set(screen.with_untracked(|s| scatter::inside(s, a, b)));
        } else if !moved {
            if let Some(i) = local(&ev)
                .and_then(|p| screen.with_untracked(|s| scatter::pick(s, p[0], p[1], reach())))
            {
                open_point(i);
            }
        }
    };

    let describe = move |i: usize| -> String {
        proj.with(|p| {
            let Some((_, p)) = p else {
                return String::new();
            };
            let d = p.dims as usize;
            let what = if columns.get_untracked() {
                "column"
            } else {
                "row"
            };
            let token = p
                .labels
                .get(i)
                .filter(|l| !l.is_empty())
                .map(|l| format!(" {l:?}"))
                .unwrap_or_default();
            let coords: Vec<String> = p.points[i * d..(i + 1) * d]
                .iter()
                .map(|v| tensor_surgeon_core::units::significant(f64::from(*v), 4))
                .collect();
            format!(
                "{what} {}{token}  norm {}  ({})",
                p.index[i],
                tensor_surgeon_core::units::significant(f64::from(p.norms[i]), 4),
                coords.join(", ")
            )
        })
    };
    let hover_text = move || hover.get().map(describe);
    let summary = move || {
        proj.with(|p| {
            p.as_ref().map(|(t, p)| {
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
            })
        })
    };
    let list = move || {
        let sel = picked.get();
        (!sel.is_empty()).then(|| {
            let shown: Vec<usize> = sel.iter().copied().take(LIST_LIMIT).collect();
            view! {
                <div class="scatter-selection">
                    <div class="muted">{format!("{} points selected{}", sel.len(), if sel.len() > LIST_LIMIT { format!(" (first {LIST_LIMIT} listed)") } else { String::new() })}</div>
                    <ul>{shown.into_iter().map(|i| view! { <li><a href="#" on:click=move |ev| { ev.prevent_default(); open_point(i); }>{describe(i)}</a></li> }).collect_view()}</ul>
                </div>
            }
        })
    };
    let dims_note = move || proj.with(|p| p.as_ref().map(|(_, p)| p.dims.to_string()));

    view! {
        <section class="scatter-panel">
            <div class="row">
                <h3>"Projection (PCA)"</h3>
                <select class="project-axis" aria-label="project rows or columns" on:change=move |ev| set_columns.set(event_target_value(&ev) == "cols")>
                    <option value="rows" selected=true>"rows"</option>
                    <option value="cols">"columns"</option>
                </select>
                <select class="project-dims" aria-label="dimensions" on:change=move |ev| set_dims.set(if event_target_value(&ev) == "3" { 3 } else { 2 })>
                    <option value="2" selected=true>"2-D"</option>
                    <option value="3">"3-D"</option>
                </select>
                <label><input type="checkbox" class="project-normalize" on:change=move |ev| set_normalize.set(event_target_checked(&ev))/>" unit-norm rows"</label>
                <button class="project-run" on:click=run disabled=move || running.get() || ctx.tensor.with(|t| t.as_ref().is_none_or(|t| t.shape.len() < 2))>"project"</button>
                <label>"colour "<select class="project-color" on:change=move |ev| set_color_by.set(match event_target_value(&ev).as_str() {
                    "pc1" => ColorBy::Component(0), "pc2" => ColorBy::Component(1), "pc3" => ColorBy::Component(2),
                    "cluster" => ColorBy::Cluster, _ => ColorBy::Norm })>
                    <option value="norm" selected=true>"row norm"</option>
                    <option value="pc1">"PC1"</option>
                    <option value="pc2">"PC2"</option>
                    <option value="pc3">"PC3"</option>
                    <option value="cluster">"k-means cluster"</option>
                </select></label>
                <label>"k "<input type="number" class="project-k" min="1" max="50" prop:value=move || k.get().to_string()
                    on:change=move |ev| { if let Ok(n) = event_target_value(&ev).trim().parse::<usize>() { set_k.set(n.clamp(1, 50)) } }/></label>
            </div>
            {move || progress.get().filter(|p| p.running && p.total > 0).map(|p| view! {
                <div class="project-progress"><progress max=p.total.to_string() value=p.done.to_string()></progress>" projecting…"</div>
            })}
            {move || result.with(|r| match r { Some(Err(e)) => Some(view! { <p class="error">{e.clone()}</p> }), _ => None })}
            <div class="muted project-summary">{summary}</div>
            <canvas node_ref=canvas width=WIDTH height=HEIGHT class="scatter"
                data-plot=move || plot_attr(geom.get())
                data-n=move || proj.with(|p| p.as_ref().map(|(_, p)| p.n.to_string()))
                data-dims=dims_note
                data-map=move || proj.with(|p| p.as_ref().filter(|(_, p)| p.dims == 2).map(|(_, p)| {
                    let b = scatter::bounds(&p.points, 2);
                    format!("{},{},{},{}", b.0, b.1, b.2, b.3)
                }))
                data-draws=move || draws.get().to_string()
                data-camera=move || camera.with(|c| format!("{:.2},{:.2}", c.yaw, c.pitch))
                on:mousedown=on_down on:mousemove=on_move on:mouseup=on_up
                on:mouseleave=move |_| { hover.set(None); drag.set(None); }/>
            <div class="hover scatter-hover">{hover_text}</div>
            <div class="muted">"hover: point · click: open its row · shift-drag: select · drag (3-D): rotate"</div>
            {list}
        </section>
    }
}

//! Row and column profiles of the current 2-D plane (L2 norm, mean or max |x| per line),
//! drawn as line charts under the heatmap. Clicking a point shows that row (or column)
//! exactly in the heatmap and selects its cell.

use super::charts::{self, plot_attr, slot_at};
use super::heatmap::{Geom, GRID_H, GRID_W};
use super::state::{message, use_ctx, CellRect};
use crate::api::get_profile;
use leptos::html;
use leptos::prelude::*;
use tensor_surgeon_core::view::{self, Profile, Quantity};
use tensor_surgeon_wire::ProfileRequest;

const WIDTH: u32 = 432;
const HEIGHT: u32 = 160;
/// Rows (or columns) shown around a line jumped to.
const JUMP_WINDOW: u64 = 64;

/// The index of the largest magnitude within `reach` of `i` (NaN lines count as largest).
fn strongest_near(values: &[f32], i: usize, reach: usize) -> usize {
    let lo = i.saturating_sub(reach);
    let hi = (i + reach + 1).min(values.len());
    let key = |v: f32| if v.is_nan() { f32::INFINITY } else { v.abs() };
    (lo..hi)
        .max_by(|&a, &b| key(values[a]).total_cmp(&key(values[b])).then(b.cmp(&a)))
        .unwrap_or(i)
}

/// One profile chart: rows (`along_y`) or columns.
#[component]
fn ProfileChart(
    profile: Signal<Option<Profile>>,
    quantity: ReadSignal<Quantity>,
    along_y: bool,
) -> impl IntoView {
    let ctx = use_ctx();
    let canvas = NodeRef::<html::Canvas>::new();
    let geom = RwSignal::new(None::<Geom>);
    let hover = RwSignal::new(None::<usize>);
    let values = move || {
        profile.with(|p| {
            p.as_ref().map(|p| {
                let lines = if along_y { &p.rows } else { &p.cols };
                lines.get(quantity.get()).to_vec()
            })
        })
    };
    let peak = Memo::new(move |_| {
        values().and_then(|v| {
            v.iter()
                .enumerate()
                .filter(|(_, x)| x.is_finite())
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .map(|(i, _)| i)
        })
    });
    // The line of the selected cell, marked on the chart.
    let marked = move || {
        let sel = ctx.selection.get()?;
        let v = ctx.view.get()?;
        (sel.view == v).then(|| {
            if along_y {
                v.y.index(sel.rows.0) as usize
            } else {
                v.x.index(sel.cols.0) as usize
            }
        })
    };
    Effect::new(move |_| {
        let (Some(el), Some(vals)) = (canvas.get(), values()) else {
            return;
        };
        let q = quantity.get();
        let axis = if along_y { "row" } else { "column" };
        geom.set(charts::line(&el, &vals, axis, q.label(), marked()));
    });
    let on_click = move |ev: leptos::ev::MouseEvent| {
        let (Some(g), Some(n), Some(v), Some(t)) = (
            geom.get_untracked(),
            values().map(|v| v.len()),
            ctx.view.get_untracked(),
            ctx.tensor.get_untracked(),
        ) else {
            return;
        };
        let Some(i) = slot_at(g, n, f64::from(ev.offset_x())) else {
            return;
        };
        // A pixel holds several lines when there are many: take the strongest nearby one.
        let i = values().map_or(i, |v| {
            strongest_near(&v, i, (n as f64 / g.width * 3.0).ceil() as usize)
        });
        let window = if along_y { GRID_H } else { GRID_W }.min(JUMP_WINDOW);
        let (nv, pos) = view::jump_to(&v, &t.shape, along_y, i as u64, window);
        // Keep the other coordinate of the current selection when there is one.
        let other = ctx
            .selection
            .get_untracked()
            .filter(|s| s.view == v)
            .map(|s| if along_y { s.cols.0 } else { s.rows.0 })
            .unwrap_or(0);
        let (r, c) = if along_y { (pos, other) } else { (other, pos) };
        let (rows, cols) = nv.cells();
        let (r, c) = (r.min(rows.saturating_sub(1)), c.min(cols.saturating_sub(1)));
        ctx.go(&ctx.url.get_untracked().with_view(&nv), false);
        ctx.selection.set(Some(CellRect {
            view: nv,
            tensor: t.name,
            rows: (r, r + 1),
            cols: (c, c + 1),
        }));
    };
    let hover_text = move || {
        let i = hover.get()?;
        let v = values()?;
        let x = v.get(i)?;
        let axis = if along_y { "row" } else { "column" };
        Some(format!(
            "{axis} {i}: {} = {}",
            quantity.get().label(),
            tensor_surgeon_core::dtype::pretty_f64(f64::from(*x))
        ))
    };
    view! {
        <div class="profile-chart">
            <canvas node_ref=canvas width=WIDTH height=HEIGHT
                class=if along_y { "profile rows" } else { "profile cols" }
                data-plot=move || plot_attr(geom.get())
                data-n=move || values().map(|v| v.len().to_string())
                data-peak=move || peak.get().map(|p| p.to_string())
                on:click=on_click
                on:mousemove=move |ev| {
                    let n = values().map_or(0, |v| v.len());
                    hover.set(geom.get_untracked().and_then(|g| slot_at(g, n, f64::from(ev.offset_x()))));
                }
                on:mouseleave=move |_| hover.set(None)/>
            <div class="hover">{hover_text}</div>
        </div>
    }
}

/// Both profiles with a quantity switch.
#[component]
pub fn Profiles() -> impl IntoView {
    let ctx = use_ctx();
    let (quantity, set_quantity) = signal(Quantity::L2);
    let (open, set_open) = signal(true);
    // The plane changes with dims and fixed indices, not with zoom or pan.
    let plane = Memo::new(move |_| {
        let t = ctx.tensor.get()?;
        let v = ctx.view.get()?;
        (t.shape.len() >= 2).then(|| (t.name.clone(), view::plane(&v, &t.shape)))
    });
    let data = LocalResource::new(move || {
        let plane = plane.get();
        let _ = ctx.version.get();
        let open = open.get();
        async move {
            let (tensor, spec) = plane.filter(|_| open)?;
            Some(get_profile(ProfileRequest { tensor, spec }).await)
        }
    });
    let profile = Signal::derive(move || {
        data.with(|d| {
            d.as_ref()
                .and_then(|d| d.as_ref())
                .and_then(|r| r.as_ref().ok())
                .cloned()
        })
    });
    let error = move || {
        data.with(|d| match d {
            Some(Some(Err(e))) => Some(message(e)),
            _ => None,
        })
    };
    view! {
        <section class="profiles">
            <div class="row">
                <h3>"Row / column profiles"</h3>
                <label><input type="checkbox" prop:checked=open
                    on:change=move |ev| set_open.set(event_target_checked(&ev))/>" show"</label>
                <select class="profile-quantity" aria-label="profile quantity" on:change=move |ev| {
                    if let Some(q) = Quantity::parse(&event_target_value(&ev)) { set_quantity.set(q) }
                }>
                    {Quantity::ALL.iter().map(|q| view! {
                        <option value=q.name() selected=*q == Quantity::L2>{q.label()}</option>
                    }).collect_view()}
                </select>
                <span class="muted">"over the whole plane; click a point to show that line"</span>
            </div>
            {move || error().map(|e| view! { <p class="error">{e}</p> })}
            {move || (open.get() && ctx.tensor.with(|t| t.as_ref().is_some_and(|t| t.shape.len() >= 2))).then(|| view! {
                <ProfileChart profile quantity along_y=true/>
                <ProfileChart profile quantity along_y=false/>
            })}
        </section>
    }
}

//! View controls: y and x dims, an index for every other dim, ranges, transpose, and the
//! colour settings. Every change goes to the URL; the view is derived from it.

use super::state::use_ctx;
use crate::urlstate::UrlState;
use leptos::prelude::*;
use tensor_surgeon_core::colormap::{Colormap, ScaleMode};
use tensor_surgeon_core::view::{PoolStat, Span, ViewMode, ViewSpec};

fn update(ctx: super::Ctx, replace: bool, f: impl FnOnce(&mut ViewSpec, &mut UrlState)) {
    let Some(mut view) = ctx.view.get_untracked() else {
        return;
    };
    let mut url = ctx.url.get_untracked();
    f(&mut view, &mut url);
    let shape = ctx
        .tensor
        .get_untracked()
        .map(|t| t.shape)
        .unwrap_or_default();
    let view = view.make_valid(&shape);
    ctx.go(&url.with_view(&view), replace);
}

fn num(ev: &leptos::ev::Event) -> Option<u64> {
    event_target_value(ev).trim().parse().ok()
}

#[component]
fn SpanInputs(label: &'static str, axis: char) -> impl IntoView {
    let ctx = use_ctx();
    let span = move || ctx.view.get().map(|v| if axis == 'y' { v.y } else { v.x });
    let set = move |which: u8, value: Option<u64>| {
        let Some(value) = value else { return };
        update(ctx, false, |v, _| {
            let s: &mut Span = if axis == 'y' { &mut v.y } else { &mut v.x };
            match which {
                0 => s.start = value,
                1 => s.stop = value,
                _ => s.step = value.max(1),
            }
        });
    };
    view! {
        <span class="span-inputs">
            {label}
            <input type="number" min="0" aria-label=format!("{axis} start") prop:value=move || span().map(|s| s.start.to_string()).unwrap_or_default() on:change=move |ev| set(0, num(&ev))/>
            ":"
            <input type="number" min="1" aria-label=format!("{axis} stop") prop:value=move || span().map(|s| s.stop.to_string()).unwrap_or_default() on:change=move |ev| set(1, num(&ev))/>
            ":"
            <input type="number" min="1" aria-label=format!("{axis} step") prop:value=move || span().map(|s| s.step.to_string()).unwrap_or_default() on:change=move |ev| set(2, num(&ev))/>
        </span>
    }
}

#[component]
pub fn ViewControls() -> impl IntoView {
    let ctx = use_ctx();
    let shape = move || ctx.tensor.get().map(|t| t.shape).unwrap_or_default();
    let dim_options = move |selected: Option<u32>| {
        shape()
            .iter()
            .enumerate()
            .map(|(d, n)| view! { <option value=d.to_string() selected=selected == Some(d as u32)>{format!("dim {d} ({n})")}</option> })
            .collect_view()
    };
    let set_dim = move |axis: char, ev: leptos::ev::Event| {
        let Ok(d) = event_target_value(&ev).parse::<u32>() else {
            return;
        };
        update(ctx, false, |v, _| {
            let (this, other) = if axis == 'y' {
                (&mut v.y_dim, &mut v.x_dim)
            } else {
                (&mut v.x_dim, &mut v.y_dim)
            };
            if *other == Some(d) {
                *other = *this;
            }
            *this = Some(d);
            v.y = Span::full(u64::MAX);
            v.x = Span::full(u64::MAX);
        });
    };
    let fixed_dims = move || {
        let view = ctx.view.get()?;
        let shape = shape();
        Some(
            (0..shape.len())
                .filter(|&d| Some(d as u32) != view.y_dim && Some(d as u32) != view.x_dim)
                .map(|d| {
                    let size = shape[d];
                    let value = view.index[d];
                    let set = move |ev: leptos::ev::Event, replace: bool| {
                        if let Some(i) = num(&ev) {
                            update(ctx, replace, |v, _| v.index[d] = i);
                        }
                    };
                    view! {
                        <label class="fixed-dim">
                            {format!("dim {d}")}
                            <input type="range" min="0" max=(size.saturating_sub(1)).to_string() prop:value=value.to_string() aria-label=format!("dim {d} index slider")
                                on:input=move |ev| set(ev, true) />
                            <input type="number" min="0" max=(size.saturating_sub(1)).to_string() prop:value=value.to_string() aria-label=format!("dim {d} index")
                                on:change=move |ev| set(ev, false) />
                            <span class="muted">{format!("/ {size}")}</span>
                        </label>
                    }
                })
                .collect_view(),
        )
    };
    let transpose = move |_| {
        update(ctx, false, |v, _| {
            std::mem::swap(&mut v.y_dim, &mut v.x_dim);
            std::mem::swap(&mut v.y, &mut v.x);
        })
    };
    let reset = move |_| {
        let url = ctx.url.get_untracked();
        if let Some(t) = &url.tensor {
            ctx.go(&url.open(t), false);
        }
    };
    let set_url = move |f: Box<dyn FnOnce(&mut UrlState)>| {
        let mut url = ctx.url.get_untracked();
        f(&mut url);
        ctx.go(&url, false);
    };
    let cmap = move || ctx.url.get().colormap.unwrap_or_default();
    let scale = move || {
        ctx.url
            .get()
            .scale
            .map(tensor_surgeon_core::colormap::scale_mode_name)
            .unwrap_or_else(|| "auto".into())
    };
    let stat = move || ctx.url.get().stat.unwrap_or_default();
    let show = move || ctx.url.get().mode.unwrap_or_default();
    let previewed = move || ctx.url.with(|u| u.proposal);
    view! {
        <section class="controls">
            {move || match ctx.tensor.get() {
                None => view! { <p class="muted">"Pick a tensor on the left."</p> }.into_any(),
                Some(t) => {
                    let two_d = t.shape.len() >= 2;
                    view! {
                        <div class="row">
                            <strong class="tensor-name">{t.name.clone()}</strong>
                            <span class="muted">{format!(" {} {}", t.dtype, tensor_surgeon_core::units::shape_text(&t.shape))}</span>
                        </div>
                        <div class="row">
                            {two_d.then(|| view! {
                                <label>"y " <select aria-label="y dim" on:change=move |ev| set_dim('y', ev)>{move || dim_options(ctx.view.get().and_then(|v| v.y_dim))}</select></label>
                                <label>"x " <select aria-label="x dim" on:change=move |ev| set_dim('x', ev)>{move || dim_options(ctx.view.get().and_then(|v| v.x_dim))}</select></label>
                                <button on:click=transpose title="swap the y and x dims">"transpose"</button>
                                <SpanInputs label="y " axis='y'/>
                            })}
                            {(!t.shape.is_empty()).then(|| view! { <SpanInputs label="x " axis='x'/> })}
                            <button on:click=reset>"reset view"</button>
                        </div>
                        <div class="row">{fixed_dims}</div>
                    }.into_any()
                }
            }}
            <div class="row">
                <label>"colormap "
                    <select aria-label="colormap" on:change=move |ev| { let v = event_target_value(&ev); set_url(Box::new(move |u| u.colormap = Colormap::parse(&v))) }>
                        {Colormap::ALL.into_iter().map(|c| view! { <option value=c.name() selected=move || cmap() == c>{c.name()}</option> }).collect_view()}
                    </select>
                </label>
                <label>"scale "
                    <select aria-label="scale" on:change=move |ev| { let v = event_target_value(&ev); set_url(Box::new(move |u| u.scale = tensor_surgeon_core::colormap::parse_scale_mode(&v))) }>
                        <option value="auto" selected=move || scale() == "auto" title="robust when a few outliers would wash the view out, else ±max|x|">"auto"</option>
                        <option value="robust" selected=move || scale() == "robust" title="± the 99.9th percentile of |x|; values beyond drawn saturated">"robust (p99.9 |x|)"</option>
                        <option value="sym" selected=move || scale() == "sym">"±max|x|"</option>
                        <option value="symlog" selected=move || scale() == "symlog" title="±max|x|, logarithmic beyond the median |x|">"symmetric log"</option>
                        <option value="minmax" selected=move || scale() == "minmax">"min–max"</option>
                        <option value="p1" selected=move || scale() == "p1">"clip 1%"</option>
                        <option value="p0.1" selected=move || scale() == "p0.1">"clip 0.1%"</option>
                    </select>
                </label>
                <span class="toggle" role="group" aria-label="show">
                    {ViewMode::ALL.into_iter().map(|m| view! {
                        <button class:active=move || show() == m aria-pressed=move || (show() == m).to_string()
                            title=match m { ViewMode::After => "the model with every edit", ViewMode::Before => "the base model, as on disk", ViewMode::Delta => "after - before, on its own scale centred at zero" }
                            on:click=move |_| set_url(Box::new(move |u| u.mode = (m != ViewMode::After).then_some(m)))>{m.name()}</button>
                    }).collect_view()}
                </span>
                {move || previewed().map(|id| view! {
                    <span class="preview-note" title="after: the session with the proposal; before: the session as it is">
                        {format!("previewing proposal #{id} (not applied) ")}
                        <button class="end-preview" on:click=move |_| set_url(Box::new(|u| u.proposal = None))>"end preview"</button>
                    </span>
                })}
                <label>"pooling "
                    <select aria-label="pooling" on:change=move |ev| { let v = event_target_value(&ev); set_url(Box::new(move |u| u.stat = PoolStat::parse(&v))) }>
                        {PoolStat::ALL.into_iter().map(|p| view! { <option value=p.name() selected=move || stat() == p>{p.name()}</option> }).collect_view()}
                    </select>
                </label>
            </div>
        </section>
    }
}

/// The scale mode in effect (default: auto, robust when outliers would wash the view out,
/// for signed data; min–max for unsigned).
pub fn scale_mode(url: &UrlState, dtype: &str) -> (Colormap, ScaleMode) {
    if url.mode == Some(ViewMode::Delta) {
        // Deltas are signed whatever the dtype: diverging, centred at zero.
        return (Colormap::Diverging, ScaleMode::Symmetric);
    }
    let unsigned = dtype.starts_with('U') || dtype == "BOOL" || dtype == "F8_E8M0";
    let cm = url.colormap.unwrap_or(if unsigned {
        Colormap::Viridis
    } else {
        Colormap::Diverging
    });
    let sc = url.scale.unwrap_or(if unsigned {
        ScaleMode::MinMax
    } else {
        ScaleMode::Auto
    });
    (cm, sc)
}

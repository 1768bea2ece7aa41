//! Locate from activations: for a prompt, one layer's MLP activations (the input of
//! `down_proj`) as a tokens x neurons heatmap (drawn like the weights), the neurons most active
//! at the last token, and the logit lens (every layer's residual stream read through the final
//! norm and the unembedding). A neuron opens its `down_proj` column (or its `up_proj` /
//! `gate_proj` row) selected, ready for an edit; a logit-lens token opens its unembedding row.

use super::heatmap::{draw, Geom};
use super::state::{asked_resource, message, open_line, use_ctx};
use crate::api::get_activations;
use leptos::html;
use leptos::prelude::*;
use tensor_surgeon_core::colormap::{Colormap, ScaleMode};
use tensor_surgeon_core::view::{Span, ViewSpec};
use tensor_surgeon_wire::{Activations, ActivationsRequest, ViewData};

/// Neurons and logit-lens tokens listed.
const TOP: u32 = 10;

/// Which capture the heatmap shows.
#[derive(Clone, Copy, PartialEq)]
enum Shown {
    /// The MLP activations (the input of `down_proj`): tokens x neurons.
    Mlp,
    /// The attention block's output (`o_proj`'s): tokens x hidden dims.
    Attention,
}

impl Shown {
    fn matrix(self, a: &Activations) -> &tensor_surgeon_wire::Matrix {
        match self {
            Shown::Mlp => &a.mlp,
            Shown::Attention => &a.attention,
        }
    }

    /// The weight line column `c` of the heatmap came from: a neuron's `down_proj` column, or
    /// the `o_proj` row that writes hidden dim `c`.
    fn source(self, a: &Activations, c: u32) -> (String, u64, bool) {
        match self {
            Shown::Mlp => (a.down_proj.clone(), u64::from(c), true),
            Shown::Attention => (
                a.down_proj
                    .replace("mlp.down_proj", "self_attn.o_proj")
                    .replace("ffn_down", "attn_output"),
                u64::from(c),
                false,
            ),
        }
    }
}

/// The activations as a heatmap view (F32 cells, token rows labelled).
fn as_view(a: &Activations, shown: Shown) -> ViewData {
    let m = shown.matrix(a);
    let (rows, cols) = (u64::from(m.rows), u64::from(m.cols));
    ViewData {
        tensor: format!("layer {} activations", a.layer),
        dtype: "F32".into(),
        shape: vec![rows, cols],
        spec: ViewSpec {
            y_dim: Some(0),
            x_dim: Some(1),
            index: vec![0, 0],
            y: Span::full(rows),
            x: Span::full(cols),
        },
        rows,
        cols,
        block: (1, 1),
        bytes: m.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        stat: Default::default(),
        pooled: Vec::new(),
        mode: Default::default(),
        base_bytes: Vec::new(),
        version: 0,
        y_labels: a.tokens.iter().map(|t| t.token.clone()).collect(),
        x_labels: Vec::new(),
    }
}

#[component]
pub fn ActivationsPanel(prompt: RwSignal<String>, layers: u32) -> impl IntoView {
    let ctx = use_ctx();
    let (layer, set_layer) = signal((layers / 2).to_string());
    let (error, set_error) = signal(None::<String>);
    let asked = RwSignal::new(None::<ActivationsRequest>);
    let canvas = NodeRef::<html::Canvas>::new();
    let geom = RwSignal::new(None::<Geom>);
    let shown = RwSignal::new(Shown::Mlp);
    let hover = RwSignal::new(None::<(usize, u32)>);
    let result = asked_resource(ctx, asked, get_activations);
    let capture = move |_| match layer.get_untracked().trim().parse::<u32>() {
        Ok(l) => {
            set_error.set(None);
            asked.set(Some(ActivationsRequest {
                prompt: prompt.get_untracked(),
                layer: l,
                top: TOP,
            }));
        }
        Err(_) => set_error.set(Some(format!(
            "layer must be a number in 0..{}",
            layers.saturating_sub(1)
        ))),
    };
    let current = move || {
        result.with(|r| match r {
            Some(Some(Ok(a))) => Some(a.clone()),
            _ => None,
        })
    };
    Effect::new(move |_| {
        let (Some(el), Some(a)) = (canvas.get(), current()) else {
            return;
        };
        let data = as_view(&a, shown.get());
        geom.set(
            draw::cells(&el, &data, Colormap::Diverging, ScaleMode::Percentile(0.5))
                .map(|(g, _)| g),
        );
    });
    // The (token, neuron) under a canvas point.
    let cell_at = move |x: f64, y: f64| -> Option<(usize, u32, Activations)> {
        let g = geom.get_untracked()?;
        let a = current()?;
        let fx = (x - g.left) / g.width;
        let fy = (y - g.top) / g.height;
        if !(0.0..1.0).contains(&fx) || !(0.0..1.0).contains(&fy) {
            return None;
        }
        let m = shown.get_untracked().matrix(&a);
        let row = (fy * f64::from(m.rows)) as usize;
        let col = (fx * f64::from(m.cols)) as u32;
        Some((row, col, a))
    };
    let on_move = move |ev: leptos::ev::MouseEvent| {
        hover.set(
            cell_at(f64::from(ev.offset_x()), f64::from(ev.offset_y())).map(|(r, c, _)| (r, c)),
        );
    };
    // The hovered cell's text follows the shown capture and the data.
    let hover_text = move || {
        let (r, c) = hover.get()?;
        let a = current()?;
        let s = shown.get();
        let m = s.matrix(&a);
        let v = m.values.get(r * m.cols as usize + c as usize)?;
        let token = &a.tokens.get(r)?.token;
        Some(match s {
            Shown::Mlp => format!("token {r} {token:?}, neuron {c}: {v:.5} (click: open its down_proj column)"),
            Shown::Attention => format!("token {r} {token:?}, hidden dim {c}: {v:.5} (click: open the o_proj row that writes it)"),
        })
    };
    let on_click = move |ev: leptos::ev::MouseEvent| {
        if let Some((_, c, a)) = cell_at(f64::from(ev.offset_x()), f64::from(ev.offset_y())) {
            let (tensor, line, columns) = shown.get_untracked().source(&a, c);
            open_line(ctx, &tensor, line, columns);
        }
    };
    let details = move || {
        result.with(|r| match r {
            Some(Some(Ok(a))) => Some(view! { <Details a=a.clone()/> }.into_any()),
            Some(Some(Err(e))) => Some(view! { <p class="error">{message(e)}</p> }.into_any()),
            _ => None,
        })
    };
    view! {
        <div class="activations-panel">
            <h4>"Activations"</h4>
            <div class="run-form">
                <label>{format!("layer (0..{}) ", layers.saturating_sub(1))}
                    <input class="activation-layer" size=3 prop:value=layer on:change=move |ev| set_layer.set(event_target_value(&ev))/></label>
                <button class="capture-button" on:click=capture>"capture the prompt's activations"</button>
                <select class="activation-kind" aria-label="activations shown"
                    on:change=move |ev| shown.set(if event_target_value(&ev) == "attention" { Shown::Attention } else { Shown::Mlp })>
                    <option value="mlp">"MLP activations (down_proj input)"</option>
                    <option value="attention">"attention output (o_proj)"</option>
                </select>
            </div>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            <canvas node_ref=canvas width=432 height=260 class="activation-map"
                style:display=move || if current().is_some() { "block" } else { "none" }
                on:mousemove=on_move on:mouseleave=move |_| hover.set(None) on:click=on_click/>
            <p class="muted activation-hover">{move || hover_text().unwrap_or_default()}</p>
            {details}
        </div>
    }
}

/// The top neurons and the logit lens, each linked to the weights it points at.
#[component]
fn Details(a: Activations) -> impl IntoView {
    let ctx = use_ctx();
    let last = a.tokens.last().map(|t| t.token.clone()).unwrap_or_default();
    let (down, up, gate, unembed) = (
        a.down_proj.clone(),
        a.up_proj.clone(),
        a.gate_proj.clone(),
        a.unembedding.clone(),
    );
    view! {
        <div class="activation-details">
            <table class="top-neurons">
                <caption>{format!("layer {}: most active neurons at the last token {:?}", a.layer, last)}</caption>
                <tbody>
                    {a.top_neurons.iter().map(|n| {
                        let (d, u, g) = (down.clone(), up.clone(), gate.clone());
                        let k = n.neuron;
                        view! {
                            <tr class="neuron" data-neuron=k.to_string()>
                                <td><a href="#" class="open-down" on:click=move |ev| { ev.prevent_default(); open_line(ctx, &d, u64::from(k), true); }>{format!("neuron {k}")}</a></td>
                                <td class="num">{format!("{:+.4}", n.value)}</td>
                                <td><a href="#" class="open-up" on:click=move |ev| { ev.prevent_default(); open_line(ctx, &u, u64::from(k), false); }>"up_proj row"</a></td>
                                <td><a href="#" class="open-gate" on:click=move |ev| { ev.prevent_default(); open_line(ctx, &g, u64::from(k), false); }>"gate_proj row"</a></td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            <table class="logit-lens">
                <caption>"logit lens: each layer's top next tokens (last position)"</caption>
                <tbody>
                    {a.logit_lens.iter().map(|l| {
                        let unembed = unembed.clone();
                        view! {
                            <tr data-layer=l.layer.to_string()>
                                <th>{l.layer.to_string()}</th>
                                {l.top.iter().take(5).map(|t| {
                                    let (u, id) = (unembed.clone(), t.id);
                                    view! { <td><a href="#" class="lens-token" data-id=id.to_string() on:click=move |ev| { ev.prevent_default(); open_line(ctx, &u, u64::from(id), false); }>
                                        {format!("{:?} {:.3}", t.token, t.prob)}</a></td> }
                                }).collect_view()}
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

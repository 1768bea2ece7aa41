//! LoRA adapters in the Patch tab: load one (a name in the patches folder or a path on the
//! server) as a layer and see where it acts (its modules, and a bar per layer of how much it
//! changes that layer's matrices; a module opens its delta view); export low-rank entries (a
//! saved patch's or the session's) or extract a difference as an adapter.

use super::charts::{self, plot_attr, Bar};
use super::heatmap::Geom;
use super::state::{mutate, use_ctx};
use crate::api::{export_adapter, extract_adapter, load_adapter};
use leptos::html;
use leptos::prelude::*;
use tensor_surgeon_core::view::ViewMode;
use tensor_surgeon_wire::{AdapterModuleRow, ExportReport, ExtractReport};

#[component]
pub fn AdapterPanel() -> impl IntoView {
    let ctx = use_ctx();
    let (error, set_error) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    let (path, set_path) = signal(String::new());
    let (modules, set_modules) = signal(Vec::<AdapterModuleRow>::new());
    let (conflicts, set_conflicts) = signal(Vec::<String>::new());
    let (source, set_source) = signal(String::new());
    let (format, set_format) = signal("peft".to_string());
    let (save_as, set_save_as) = signal("adapter".to_string());
    let (other, set_other) = signal(String::new());
    let (rank, set_rank) = signal("4".to_string());
    let (written, set_written) = signal(None::<String>);
    let (exported, set_exported) = signal(None::<ExportReport>);
    let (extracted, set_extracted) = signal(None::<ExtractReport>);
    let on_load = move |_| {
        let p = path.get_untracked();
        mutate(ctx, Some(set_busy), set_error, load_adapter(p), move |o| {
            set_conflicts.set(o.outcome.conflicts);
            set_modules.set(o.modules);
            None
        });
    };
    let on_export = move |_| {
        let (s, f, n) = (
            source.get_untracked(),
            format.get_untracked(),
            save_as.get_untracked(),
        );
        mutate(
            ctx,
            Some(set_busy),
            set_error,
            export_adapter(s, f, n),
            move |r| {
                set_written.set(Some(r.files.join(", ")));
                set_exported.set(Some(r));
                None
            },
        );
    };
    let on_extract = move |_| {
        let (o, f, n) = (
            other.get_untracked(),
            format.get_untracked(),
            save_as.get_untracked(),
        );
        let r = rank.get_untracked().trim().parse::<u32>().ok();
        mutate(
            ctx,
            Some(set_busy),
            set_error,
            extract_adapter(o, r, None, f, n),
            move |r| {
                set_written.set(Some(r.files.join(", ")));
                set_extracted.set(Some(r));
                None
            },
        );
    };
    let open_delta = move |tensor: String| {
        let mut url = ctx.url.get_untracked().open(&tensor);
        url.mode = Some(ViewMode::Delta);
        ctx.go(&url, false);
    };
    view! {
        <section class="adapter-panel">
            <h3>"Adapters"</h3>
            <div class="row">
                <label>"adapter " <input aria-label="adapter path" placeholder="a PEFT folder or a GGUF adapter (name in the patches folder, or a path)"
                    prop:value=path on:input=move |ev| set_path.set(event_target_value(&ev))/></label>
                <button class="load-adapter" on:click=on_load disabled=busy>"load adapter"</button>
            </div>
            {move || {
                let c = conflicts.get();
                (!c.is_empty()).then(|| view! { <p class="error">{format!("{} conflict(s): the adapter was not loaded; first: {}", c.len(), c[0])}</p> })
            }}
            {move || (!modules.get().is_empty()).then(|| view! { <Modules rows=modules open_delta=Callback::new(open_delta)/> })}
            <div class="row">
                <label>"export " <input aria-label="export source" size=14 placeholder="saved patch (empty: the session)" prop:value=source on:input=move |ev| set_source.set(event_target_value(&ev))/></label>
                <label>"as " <select aria-label="adapter format" on:change=move |ev| set_format.set(event_target_value(&ev))>
                    <option value="peft" selected=true>"PEFT"</option>
                    <option value="gguf">"GGUF (llama.cpp)"</option>
                </select></label>
                <input aria-label="adapter name" size=12 prop:value=save_as on:input=move |ev| set_save_as.set(event_target_value(&ev))/>
                <button class="export-adapter" on:click=on_export disabled=busy>"export"</button>
            </div>
            <div class="row">
                <label>"extract the difference to " <input aria-label="extract from" size=14 placeholder="model, patch or adapter (empty: the session)" prop:value=other on:input=move |ev| set_other.set(event_target_value(&ev))/></label>
                <label>"rank " <input aria-label="extract rank" size=3 prop:value=rank on:input=move |ev| set_rank.set(event_target_value(&ev))/></label>
                <button class="extract-adapter" on:click=on_extract disabled=busy>"extract"</button>
            </div>
            {move || written.get().map(|w| view! { <p class="adapter-written">{format!("wrote {w}")}</p> })}
            {move || exported.get().map(|r| view! {
                <p class="muted">{format!("{} module(s){}", r.modules.len(), if r.skipped.is_empty() { String::new() } else { format!("; skipped {} tensor(s) changed byte by byte", r.skipped.len()) })}</p>
            })}
            {move || extracted.get().map(|r| view! {
                <table class="extracted">
                    <thead><tr><th>"tensor"</th><th>"rank"</th><th>"relative error"</th><th>"dropped energy"</th></tr></thead>
                    <tbody>{r.modules.into_iter().map(|m| view! {
                        <tr><td>{m.tensor}</td><td>{m.rank}</td><td>{format!("{:.6}", m.relative_error)}</td><td>{format!("{:.3e}", m.dropped_energy)}</td></tr>
                    }).collect_view()}</tbody>
                </table>
            })}
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </section>
    }
}

/// An adapter's modules and a bar per layer of how much it changes that layer.
#[component]
fn Modules(rows: ReadSignal<Vec<AdapterModuleRow>>, open_delta: Callback<String>) -> impl IntoView {
    let canvas = NodeRef::<html::Canvas>::new();
    let geom = RwSignal::new(None::<Geom>);
    Effect::new(move |_| {
        let Some(el) = canvas.get() else { return };
        rows.with(|rows| {
            let bars: Vec<Bar> = tensor_surgeon_wire::per_layer(rows)
                .into_iter()
                .map(|(layer, value)| Bar {
                    label: layer.map_or_else(|| "–".to_string(), |l| l.to_string()),
                    value,
                    flagged: false,
                })
                .collect();
            geom.set(charts::bars(&el, &bars, None, "‖BA‖ / ‖W‖"));
        });
    });
    view! {
        <canvas node_ref=canvas width=560 height=180 class="adapter-layers" data-plot=move || plot_attr(geom.get())/>
        <div class="compare-wrap" tabindex="0" role="region" aria-label="adapter modules"><table class="adapter-modules">
            <thead><tr><th>"tensor"</th><th>"in the adapter"</th><th>"rank"</th><th>"scale"</th><th>"‖BA‖"</th><th>"‖BA‖/‖W‖"</th></tr></thead>
            <tbody>{move || rows.get().into_iter().map(|m| {
                let t = m.tensor.clone();
                view! {
                    <tr class="clickable" on:click=move |_| open_delta.run(t.clone())>
                        <td>{m.tensor.clone()}</td><td>{m.named.clone()}</td><td>{m.rank}</td>
                        <td>{format!("{:.4}", m.scale)}</td><td>{format!("{:.4e}", m.norm)}</td><td>{format!("{:.4e}", m.relative_norm)}</td>
                    </tr>
                }
            }).collect_view()}</tbody>
        </table></div>
    }
}

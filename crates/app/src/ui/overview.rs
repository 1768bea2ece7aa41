//! The first screen: what the model is (its `config.json`), where its parameters are (by
//! dtype and by kind of tensor), and the layer map — one row per layer, one cell per kind,
//! coloured by a statistic from the scan, flagged tensors outlined. A cell opens its tensor.

use super::scan_panel::follow_scan;
use super::state::{href, message, use_ctx};
use crate::api::start_scan;
use leptos::prelude::*;
use std::collections::HashMap;
use tensor_surgeon_core::colormap::Colormap;
use tensor_surgeon_core::overview::{normalise_columns, params_by_kind, short_kind, LayerMap};
use tensor_surgeon_core::stats::scan::ScanRow;
use tensor_surgeon_core::units::{human_bytes, significant};
use tensor_surgeon_wire::ScanStatus;

/// Models up to this size are scanned as soon as the overview opens; larger ones on request.
const AUTO_SCAN_BYTES: u64 = 4 << 30;

/// A parameter count in words people use (`134.5 M`).
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

#[component]
pub fn Overview() -> impl IntoView {
    let ctx = use_ctx();
    let m = ctx.model.get_value();
    let total: u64 = m.params.iter().map(|p| p.1).sum();
    let bytes: u64 = m.files.iter().map(|f| f.1).sum();
    let kinds = params_by_kind(
        m.tensors
            .iter()
            .map(|t| (t.name.as_str(), t.shape.iter().product::<u64>())),
    );
    let arch = m.architecture.clone();
    let headline = {
        let get = |k: &str| {
            arch.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        match (get("architectures"), get("model_type")) {
            (Some(a), Some(t)) => format!("{a} ({t})"),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => "no config.json: architecture unknown".into(),
        }
    };
    let share = move |n: u64| format!("width:{:.0}px", 120.0 * n as f64 / total.max(1) as f64);
    view! {
        <section class="overview" aria-label="model overview">
            <h2>{headline}</h2>
            <p class="muted">{format!("{} parameters · {} · {} tensors in {} file(s)", count(total), human_bytes(bytes), m.tensors.len(), m.files.len())}</p>
            <div class="overview-facts">
                <table class="kv arch"><caption>"config.json"</caption><tbody>
                    {arch.iter().map(|(k, v)| view! { <tr><td>{k.clone()}</td><td>{v.clone()}</td></tr> }).collect_view()}
                </tbody></table>
                <table class="kv params"><caption>"Parameters by dtype"</caption><tbody>
                    {m.params.iter().map(|(d, n)| view! { <tr><td>{d.clone()}</td><td>{count(*n)}</td><td><span class="share" style=share(*n)></span></td></tr> }).collect_view()}
                </tbody></table>
                <table class="kv kinds"><caption>"Parameters by kind"</caption><tbody>
                    {kinds.iter().take(10).map(|(k, n)| view! { <tr><td title=k.clone()>{short_kind(k).to_string()}</td><td>{count(*n)}</td><td><span class="share" style=share(*n)></span></td></tr> }).collect_view()}
                </tbody></table>
            </div>
            <LayerMapPanel bytes/>
        </section>
    }
}

/// One cell of the layer map: its tensor's statistic as a colour, outlined when flagged, a
/// link that opens the tensor.
fn map_cell(
    name: &str,
    row: Option<&ScanRow>,
    shade: Option<f64>,
    value: Option<f64>,
    maxabs: bool,
) -> AnyView {
    let ctx = use_ctx();
    let flagged = row.is_some_and(|r| !r.flags.is_empty());
    let style = shade.map(|t| {
        let [red, g, b, _] = Colormap::Viridis.at(t);
        format!("background: rgb({red},{g},{b})")
    });
    let value = value
        .map(|v| significant(v, 4))
        .unwrap_or_else(|| "…".into());
    let label = format!(
        "{name}: {} {value}{}",
        if maxabs { "max |x|" } else { "std" },
        if flagged { " (flagged)" } else { "" }
    );
    let link = href(&ctx.url.with_untracked(|u| u.open(name)));
    view! {
        <span role="gridcell"><a class="map-cell" class:flagged=flagged href=link style=style
            title=label.clone() aria-label=label data-tensor=name.to_string()></a></span>
    }
    .into_any()
}

/// The layer map: one row per layer, one cell per kind of tensor, coloured by a statistic of
/// the scan (run at once for models up to [`AUTO_SCAN_BYTES`], on request above).
#[component]
fn LayerMapPanel(bytes: u64) -> impl IntoView {
    let ctx = use_ctx();
    let map = ctx
        .model
        .with_value(|m| LayerMap::of(m.tensors.iter().map(|t| t.name.as_str())));
    let (status, set_status) = signal(None::<ScanStatus>);
    let (rows, set_rows) = signal(Vec::<ScanRow>::new());
    let (error, set_error) = signal(None::<String>);
    let (stat, set_stat) = signal("std".to_string());
    let scan = move || {
        leptos::task::spawn_local(async move {
            match start_scan().await {
                Ok(_) => follow_scan(set_status, set_rows, set_error),
                Err(e) => set_error.set(Some(message(&e))),
            }
        });
    };
    Effect::new(move |_| {
        let _ = ctx.version.get();
        if bytes <= AUTO_SCAN_BYTES {
            scan();
        }
    });
    let by_name = Memo::new(move |_| {
        rows.with(|r| {
            r.iter()
                .map(|r| (r.tensor.clone(), r.clone()))
                .collect::<HashMap<String, ScanRow>>()
        })
    });
    let map_cells = {
        let map = map.clone();
        move || {
            let maxabs = stat.get() == "maxabs";
            by_name.with(|rows| {
                let values: Vec<Vec<Option<f64>>> = map
                    .cells
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|c| {
                                let s = &rows.get(c.as_ref()?)?.summary;
                                if maxabs { s.max_abs } else { s.std }
                            })
                            .collect()
                    })
                    .collect();
                let shade = normalise_columns(&values);
                map.layers
                    .iter()
                    .enumerate()
                    .map(|(r, layer)| {
                        let cells = map.cells[r]
                            .iter()
                            .enumerate()
                            .map(|(c, name)| match name {
                                None => view! { <span class="map-cell empty" role="gridcell"></span> }.into_any(),
                                Some(name) => map_cell(name, rows.get(name), shade[r][c], values[r][c], maxabs),
                            })
                            .collect_view();
                        view! { <div class="map-row" role="row"><span class="map-layer" role="rowheader">{layer.to_string()}</span>{cells}</div> }
                    })
                    .collect_view()
            })
        }
    };
    let progress = move || {
        status.get().map(|s| {
            if s.running {
                format!(
                    "scanning: {} of {} tensors",
                    s.tensors_done, s.tensors_total
                )
            } else if s.complete {
                let flagged = rows.with(|r| r.iter().filter(|r| !r.flags.is_empty()).count());
                format!(
                    "scanned {} tensors; {flagged} flagged (outlined)",
                    s.tensors_total
                )
            } else {
                String::new()
            }
        })
    };
    let kind_headers = map
        .kinds
        .iter()
        .map(|k| view! { <span class="map-kind" role="columnheader" title=k.clone()>{short_kind(k).to_string()}</span> })
        .collect_view();
    view! {
        {(!map.is_empty()).then(|| view! {
            <div class="map-head">
                <h3>"Layers"</h3>
                <label>"colour by "
                    <select aria-label="colour the layer map by" on:change=move |ev| set_stat.set(event_target_value(&ev))>
                        <option value="std" selected=move || stat.get() == "std">"std"</option>
                        <option value="maxabs" selected=move || stat.get() == "maxabs">"max |x|"</option>
                    </select>
                </label>
                <span class="muted">"each column on its own scale (kinds differ by orders of magnitude); click a cell to open it"</span>
                {(bytes > AUTO_SCAN_BYTES).then(|| view! { <button on:click=move |_| scan()>"scan to colour the map"</button> })}
                <span class="muted map-progress" aria-live="polite">{progress}</span>
            </div>
            <div class="layer-map" role="grid" aria-label="layer map">
                <div class="map-row" role="row"><span class="map-layer" role="columnheader">"layer"</span>{kind_headers}</div>
                {map_cells}
            </div>
        })}
        {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
    }
}

//! The model summary: files, parameters per dtype, `__metadata__` (escaped: untrusted).

use super::state::use_ctx;
use leptos::prelude::*;
use tensor_surgeon_core::units::human_bytes;

/// One line under the title: the model path and size.
#[component]
pub fn ModelLine() -> impl IntoView {
    let ctx = use_ctx();
    let m = ctx.model.get_value();
    let bytes: u64 = m.files.iter().map(|f| f.1).sum();
    view! {
        <span class="model-path" title=m.path.clone()>{m.path.clone()}</span>
        <span class="muted">{format!(" · {} tensors · {} in {} file(s)", m.tensors.len(), human_bytes(bytes), m.files.len())}</span>
        {m.read_only.then_some(view! { <span class="badge">"read-only"</span> })}
    }
}

/// Files, parameters per dtype, metadata and warnings.
#[component]
pub fn ModelSummaryPanel() -> impl IntoView {
    let ctx = use_ctx();
    let m = ctx.model.get_value();
    view! {
        <details class="summary">
            <summary>"Model"</summary>
            <h4>"Files"</h4>
            <ul>{m.files.iter().map(|(f, b)| view! { <li>{f.clone()} " " <span class="muted">{human_bytes(*b)}</span></li> }).collect_view()}</ul>
            <h4>"Parameters"</h4>
            <table class="kv"><tbody>{m.params.iter().map(|(d, n)| view! { <tr><td>{d.clone()}</td><td>{n.to_string()}</td></tr> }).collect_view()}</tbody></table>
            <h4>"Metadata"</h4>
            <table class="kv metadata"><tbody>{m.metadata.iter().map(|(k, v)| view! { <tr><td>{k.clone()}</td><td>{v.clone()}</td></tr> }).collect_view()}</tbody></table>
            <ul class="warnings">{m.warnings.iter().map(|w| view! { <li>{w.clone()}</li> }).collect_view()}</ul>
        </details>
    }
}

//! The edit panel: set / add / scale / zero / clamp or raw hex on the selection. A bad value
//! is shown inline and changes nothing; a done edit shows its step (for a quantized tensor,
//! the value its block holds and what else moved).

use super::state::{submit, use_ctx};
use crate::api::edit;
use leptos::html;
use leptos::prelude::*;
use tensor_surgeon_core::edit::Op;
use tensor_surgeon_wire::EditRequest;

/// The operation the inputs describe; a bad number is an error shown inline.
fn build_op(kind: &str, value: &str, value2: &str) -> Result<Op, String> {
    Op::parse(kind, value, value2).map_err(|e| e.to_string())
}

#[component]
pub fn EditPanel() -> impl IntoView {
    let ctx = use_ctx();
    let (kind, set_kind) = signal("set".to_string());
    let (value, set_value) = signal(String::new());
    let (value2, set_value2) = signal(String::new());
    let (saturate, set_saturate) = signal(false);
    let (error, set_error) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    // What the last edit from this panel did (its step: for a quantized tensor, the value
    // its block holds and what moved).
    let (outcome, set_outcome) = signal(None::<String>);
    let input = NodeRef::<html::Input>::new();
    let apply_button = NodeRef::<html::Button>::new();
    // Enter on the heatmap: the value box, or the apply button when the op takes no value.
    Effect::new(move |prev: Option<u64>| {
        let n = ctx.focus_edit.get();
        if prev.is_some() {
            let focused = if kind.get_untracked() == "zero" {
                apply_button.get().map(|b| b.focus())
            } else {
                input.get().map(|i| i.focus())
            };
            let _ = focused;
        }
        n
    });
    let read_only = move || ctx.model.with_value(|m| m.read_only);
    let target = move || ctx.selection_in_view();
    let apply = move || {
        let Some(sel) = target() else {
            set_error.set(Some("select a cell or a rectangle first".into()));
            return;
        };
        let op = match build_op(
            &kind.get_untracked(),
            &value.get_untracked(),
            &value2.get_untracked(),
        ) {
            Ok(op) => op,
            Err(e) => {
                set_error.set(Some(e));
                return;
            }
        };
        let req = EditRequest {
            tensor: sel.tensor.clone(),
            spec: sel.view.rect_spec(sel.rows, sel.cols).to_string(),
            op,
            saturate: saturate.get_untracked(),
            round: saturate.get_untracked(),
        };
        set_outcome.set(None);
        let steps_before = ctx
            .session
            .get_untracked()
            .and_then(Result::ok)
            .map(|s| s.steps.len());
        let request = async move {
            let answer = edit(req).await;
            if let Ok(s) = &answer {
                // An edit that changed nothing made no step.
                let made = steps_before != Some(s.steps.len());
                set_outcome.set(s.steps.last().filter(|_| made).cloned());
            }
            answer
        };
        submit(ctx, Some(set_busy), set_error, request);
    };
    let placeholder = move || match kind.get().as_str() {
        "set" | "add" => "value (1.5, -inf, nan)",
        "scale" => "factor",
        "clamp" => "min",
        "hex" => "hex bytes, e.g. 0000803f",
        _ => "",
    };
    view! {
        <section class="edit-panel">
            <h3>"Edit"</h3>
            <p class="muted target">{move || match target() {
                Some(s) => format!("{}[{}]", s.tensor, s.view.rect_spec(s.rows, s.cols)),
                None => "nothing selected".into(),
            }}</p>
            <form on:submit=move |ev| { ev.prevent_default(); apply(); }>
                <select aria-label="operation" on:change=move |ev| set_kind.set(event_target_value(&ev))>
                    {Op::NAMES.into_iter().map(|k| view! { <option value=k selected=move || kind.get() == k>{k}</option> }).collect_view()}
                </select>
                <input node_ref=input aria-label="edit value" placeholder=placeholder prop:value=value
                    disabled=move || kind.get() == "zero"
                    on:input=move |ev| set_value.set(event_target_value(&ev))/>
                {move || (kind.get() == "clamp").then(|| view! {
                    <input aria-label="clamp max" placeholder="max" prop:value=value2 on:input=move |ev| set_value2.set(event_target_value(&ev))/>
                })}
                <label title="clamp values the dtype cannot hold into its range (and round for integers)">
                    <input type="checkbox" prop:checked=saturate on:change=move |ev| set_saturate.set(event_target_checked(&ev))/>
                    "saturate"
                </label>
                <button type="submit" node_ref=apply_button disabled=move || busy.get() || read_only()>"apply"</button>
            </form>
            {move || read_only().then(|| view! { <p class="muted">"read-only: edits are disabled"</p> })}
            {move || error.get().map(|e| view! { <p class="error edit-error">{e}</p> })}
            {move || outcome.get().map(|o| view! { <p class="muted edit-outcome">{o}</p> })}
        </section>
    }
}

//! Control vectors in the Run tab: read one from paired prompts (saved in the patches folder),
//! and set the ones the edited side runs with and their strength; every run, probe,
//! continuation and trace after that sees them.

use super::ablation_panel::lines;
use super::state::message;
use crate::api::{control_vector, steer};
use leptos::prelude::*;
use tensor_surgeon_wire::{ControlVectorRequest, ControlVectorUse, SteeringRequest};

#[component]
pub fn SteerPanel() -> impl IntoView {
    let (positive, set_positive) = signal(String::new());
    let (negative, set_negative) = signal(String::new());
    let (method, set_method) = signal("pca".to_string());
    let (save_as, set_save_as) = signal("steer.gguf".to_string());
    let (path, set_path) = signal(String::new());
    let (strength, set_strength) = signal("4".to_string());
    let (status, set_status) = signal(None::<String>);
    let (error, set_error) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    let on_compute = move |_| {
        let req = ControlVectorRequest {
            positive: lines(&positive.get_untracked()),
            negative: lines(&negative.get_untracked()),
            method: method.get_untracked(),
            layers: None,
            save_as: save_as.get_untracked(),
        };
        set_busy.set(true);
        leptos::task::spawn_local(async move {
            let r = control_vector(req).await;
            set_busy.set(false);
            match r {
                Ok(r) => {
                    let agree = r.layers.iter().map(|l| l.agreement).sum::<f64>()
                        / r.layers.len().max(1) as f64;
                    set_status.set(Some(format!(
                        "saved {} ({} layers; pairs ordered rightly: {:.0}% on average)",
                        r.file,
                        r.layers.len(),
                        100.0 * agree
                    )));
                    set_path.set(r.file);
                    set_error.set(None);
                }
                Err(e) => set_error.set(Some(message(&e))),
            }
        });
    };
    let apply = move |vectors: Vec<ControlVectorUse>| {
        leptos::task::spawn_local(async move {
            match steer(SteeringRequest { vectors }).await {
                Ok(layers) if layers.is_empty() => {
                    set_status.set(Some("no control vector: runs see the weights only".into()));
                    set_error.set(None);
                }
                Ok(layers) => {
                    set_status.set(Some(format!(
                        "the edited side runs with the control vector on layers {}–{}",
                        layers.first().copied().unwrap_or(0),
                        layers.last().copied().unwrap_or(0)
                    )));
                    set_error.set(None);
                }
                Err(e) => set_error.set(Some(message(&e))),
            }
        });
    };
    let on_apply = move |_| match strength.get_untracked().trim().parse::<f32>() {
        Ok(s) => apply(vec![ControlVectorUse {
            path: path.get_untracked(),
            strength: s,
        }]),
        Err(_) => set_error.set(Some("the strength is a number".into())),
    };
    view! {
        <details class="steer-panel">
            <summary>"Control vector"</summary>
            <div class="row">
                <textarea class="steer-positive" rows=3 aria-label="positive prompts" placeholder="prompts that show the behaviour, one per line"
                    prop:value=positive on:input=move |ev| set_positive.set(event_target_value(&ev))></textarea>
                <textarea class="steer-negative" rows=3 aria-label="negative prompts" placeholder="their counterparts, one per line, in the same order"
                    prop:value=negative on:input=move |ev| set_negative.set(event_target_value(&ev))></textarea>
            </div>
            <div class="row">
                <select aria-label="control vector method" on:change=move |ev| set_method.set(event_target_value(&ev))>
                    <option value="pca" selected=true>"first principal component"</option>
                    <option value="mean">"mean difference"</option>
                </select>
                <input aria-label="control vector name" size=12 prop:value=save_as on:input=move |ev| set_save_as.set(event_target_value(&ev))/>
                <button class="steer-compute" on:click=on_compute disabled=busy>{move || if busy.get() { "reading…" } else { "read" }}</button>
            </div>
            <div class="row">
                <label>"vector " <input class="steer-path" aria-label="control vector file" size=16 placeholder="name in the patches folder, or a path"
                    prop:value=path on:input=move |ev| set_path.set(event_target_value(&ev))/></label>
                <label>"strength " <input class="steer-strength" aria-label="strength" size=4 prop:value=strength on:input=move |ev| set_strength.set(event_target_value(&ev))/></label>
                <button class="steer-apply" on:click=on_apply>"apply"</button>
                <button class="steer-clear" on:click=move |_| apply(Vec::new())>"clear"</button>
            </div>
            {move || status.get().map(|s| view! { <p class="steer-status muted">{s}</p> })}
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </details>
    }
}

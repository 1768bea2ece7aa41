//! Edit by cause: directional ablation from two prompt lists (the behaviour's direction is the
//! mean difference of the residual stream), projected out of every matrix that writes to the
//! residual stream. The result is saved as a patch of low-rank entries with its report
//! (behaviour and KL before and after, continuations, a search's trials); loading it as a layer
//! puts it in the session, where it can be turned off again.

use super::state::{mutate, use_ctx};
use crate::api::{ablate_to_patch, load_saved};
use leptos::prelude::*;
use tensor_surgeon_wire::{AblationReport, AblationRequest, AblationSaved};

/// Non-empty lines.
pub(super) fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A comma-separated list; a quoted item keeps its spaces (`" Sorry"`).
fn items(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(
            |t| match t.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                Some(inner) => inner.to_string(),
                None => t.to_string(),
            },
        )
        .collect()
}

#[component]
pub fn AblationPanel() -> impl IntoView {
    let ctx = use_ctx();
    let field = |v: &str| RwSignal::new(v.to_string());
    let (from, to, markers, tokens) = (field(""), field(""), field(""), field(""));
    let (layer, strength, save_as) = (field(""), field("1"), field("ablation.json"));
    let (embedding, search) = (RwSignal::new(false), RwSignal::new(false));
    let (busy, set_busy) = signal(false);
    let (error, set_error) = signal(None::<String>);
    let outcome = RwSignal::new(None::<AblationSaved>);
    let loaded = RwSignal::new(false);
    let compute = move || {
        let number = |what: &str, text: String| -> Result<Option<f64>, String> {
            match text.trim() {
                "" => Ok(None),
                t => t
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|_| format!("{what} {t:?} is not a number")),
            }
        };
        let (layer, strength) = match (
            number("layer", layer.get_untracked()),
            number("strength", strength.get_untracked()),
        ) {
            (Ok(l), Ok(s)) => (l.map(|l| l as u32), s.unwrap_or(1.0)),
            (Err(e), _) | (_, Err(e)) => return set_error.set(Some(e)),
        };
        let request = AblationRequest {
            from: lines(&from.get_untracked()),
            to: lines(&to.get_untracked()),
            layer,
            strength,
            embedding: embedding.get_untracked(),
            markers: items(&markers.get_untracked()),
            tokens: items(&tokens.get_untracked()),
            generate: 16,
        };
        outcome.set(None);
        loaded.set(false);
        let request = ablate_to_patch(request, search.get_untracked(), save_as.get_untracked());
        mutate(ctx, Some(set_busy), set_error, request, move |a| {
            outcome.set(Some(a));
            None
        });
    };
    let load = move |name: String| {
        mutate(
            ctx,
            Some(set_busy),
            set_error,
            load_saved(name),
            move |_| {
                loaded.set(true);
                None
            },
        );
    };
    let input = |signal: RwSignal<String>| move |ev| signal.set(event_target_value(&ev));
    view! {
        <div class="ablation-panel">
            <h4>"Directional ablation"</h4>
            <div class="ablation-lists">
                <label class="grow">"prompts with the behaviour (one a line; every other one is held out to measure it)"
                    <textarea class="ablate-from" rows=4 prop:value=from on:input=input(from)></textarea></label>
                <label class="grow">"prompts without it (the KL is measured on them)"
                    <textarea class="ablate-to" rows=4 prop:value=to on:input=input(to)></textarea></label>
            </div>
            <div class="run-fields">
                <label class="grow">"markers "<input class="ablate-markers" placeholder="sorry, cannot" prop:value=markers on:input=input(markers)/></label>
                <label class="grow">"tokens "<input class="ablate-tokens" placeholder="\" Sorry\", #42" prop:value=tokens on:input=input(tokens)/></label>
                <label>"layer "<input class="ablate-layer" size=3 placeholder="middle" prop:value=layer on:input=input(layer)/></label>
                <label>"strength "<input class="ablate-strength" size=3 prop:value=strength on:input=input(strength)/></label>
            </div>
            <div class="run-actions">
                <label><input type="checkbox" class="ablate-embedding" prop:checked=embedding
                    on:change=move |ev| embedding.set(event_target_checked(&ev))/>" the embedding too"</label>
                <label><input type="checkbox" class="ablate-search" prop:checked=search
                    on:change=move |ev| search.set(event_target_checked(&ev))/>" search layer and strength"</label>
                <label>"save as "<input class="ablate-save-as" size=16 prop:value=save_as on:input=input(save_as)/></label>
                <button class="ablate-button" on:click=move |_| compute() disabled=move || busy.get()>"compute the ablation"</button>
                <span class="muted">{move || busy.get().then_some("computing… (a minute or more)")}</span>
            </div>
            {move || error.get().map(|e| view! { <p class="error ablate-error">{e}</p> })}
            {move || outcome.get().map(|a| view! { <AblationOutcome a loaded load/> })}
        </div>
    }
}

/// What an ablation did, and the patch it was saved as.
#[component]
fn AblationOutcome(
    a: AblationSaved,
    loaded: RwSignal<bool>,
    load: impl Fn(String) + Copy + 'static,
) -> impl IntoView {
    let r: AblationReport = a.report;
    let measure = |name: &str, m: &Option<tensor_surgeon_wire::BaseEdited>| {
        m.as_ref()
            .map(|m| format!("{name} {:.3} -> {:.3}", m.base, m.edited))
    };
    let behaviour: Vec<String> = [
        measure("marker rate %", &r.marker_rate),
        measure("p(tokens)", &r.token_prob),
    ]
    .into_iter()
    .flatten()
    .collect();
    let saved = a.saved.clone();
    view! {
        <div class="ablation-outcome" data-saved=a.saved.clone()>
            <p class="ablate-summary">{format!(
                "layer {}, strength {}: {} on {} held-out prompt(s); KL on the others {:.4} nats; {} matrices, {} bytes of factors ({:.1} s)",
                r.layer, r.strength, behaviour.join(", "), r.held_out, r.kl, r.entries, r.factor_bytes, r.seconds)}</p>
            {(!r.tried.is_empty()).then(|| view! {
                <table class="ablate-tried">
                    <thead><tr><th>"layer"</th><th>"strength"</th><th>"behaviour"</th><th>"KL"</th></tr></thead>
                    <tbody>{r.tried.iter().map(|t| view! {
                        <tr><td>{t.layer}</td><td>{t.strength}</td><td>{format!("{:.3}", t.behaviour)}</td><td>{format!("{:.4}", t.kl)}</td></tr>
                    }).collect_view()}</tbody>
                </table>
            })}
            <ul class="ablate-continuations">{r.continuations.iter().map(|c| view! {
                <li>{c.prompt.clone()}" base: "<code>{c.base.clone()}</code>" ablated: "<code class="edited">{c.edited.clone()}</code></li>
            }).collect_view()}</ul>
            <p>{format!("saved as {} in the patches folder ", a.saved)}
                <button class="ablate-load" on:click=move |_| load(saved.clone()) disabled=move || loaded.get()>"load it as a layer"</button>
                {move || loaded.get().then_some(" loaded: turn it off or on in the Patch tab")}</p>
        </div>
    }
}

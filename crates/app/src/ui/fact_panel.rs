//! Edit by cause: a fact edit (ROME) of the prompt's answer about a subject, computed on the
//! edited model and kept as a pending proposal with its evaluation: ROME's scores, each
//! probe's probabilities base and with the edit, the KL on unrelated prompts, a continuation.
//! The layer comes from a click on the causal trace's MLP map, or is typed.

use super::state::{mutate, use_ctx};
use crate::api::propose_fact;
use leptos::prelude::*;
use tensor_surgeon_wire::{FactEditReport, FactProposal, FactRequest};

#[component]
pub fn FactPanel(
    prompt: RwSignal<String>,
    subject: RwSignal<String>,
    layer: RwSignal<String>,
) -> impl IntoView {
    let ctx = use_ctx();
    let target = RwSignal::new(String::new());
    let (busy, set_busy) = signal(false);
    let (error, set_error) = signal(None::<String>);
    let outcome = RwSignal::new(None::<FactProposal>);
    let compute = move || {
        let request = FactRequest {
            subject: subject.get_untracked(),
            prompt: prompt.get_untracked(),
            target: target.get_untracked(),
            paraphrases: Vec::new(),
            neighbors: Vec::new(),
        };
        let layer = match layer.get_untracked().trim() {
            "" => None,
            l => match l.parse::<u32>() {
                Ok(l) => Some(l),
                Err(_) => return set_error.set(Some(format!("layer {l:?} is not a number"))),
            },
        };
        outcome.set(None);
        mutate(
            ctx,
            Some(set_busy),
            set_error,
            propose_fact(request, layer),
            move |f| {
                outcome.set(Some(f));
                None
            },
        );
    };
    view! {
        <div class="fact-panel">
            <h4>"Fact editor (ROME)"</h4>
            <div class="run-fields">
                <label class="grow">"new target "<input class="fact-target" placeholder="\" Rome\" or #ID"
                    prop:value=target on:input=move |ev| target.set(event_target_value(&ev))/></label>
                <label>"layer "<input class="fact-layer" size=3 placeholder="auto"
                    prop:value=layer on:input=move |ev| layer.set(event_target_value(&ev))/></label>
            </div>
            <div class="run-actions">
                <button class="fact-button" on:click=move |_| compute() disabled=move || busy.get()>"compute the edit"</button>
                <span class="muted">{move || if busy.get() { "computing… (tens of seconds)" } else { "the subject is the trace's" }}</span>
            </div>
            {move || error.get().map(|e| view! { <p class="error fact-error">{e}</p> })}
            {move || outcome.get().map(|f| view! { <FactOutcome f/> })}
        </div>
    }
}

/// A computed edit: its proposal and its evaluation.
#[component]
fn FactOutcome(f: FactProposal) -> impl IntoView {
    let r: FactEditReport = f.report;
    let target: String = r.target.iter().map(|t| t.token.as_str()).collect();
    let s = &r.scores;
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}%"));
    let ctx = use_ctx();
    let status = if f.applied {
        "applied"
    } else {
        "pending: accept or reject it in the Patch tab"
    };
    let (id, tensor) = (f.proposal.id, r.tensor.clone());
    view! {
        <div class="fact-outcome" data-proposal=f.proposal.id.to_string()>
            <p>{format!("{:?} -> {target:?} (was {:?}): layer {} ({}), proposal #{} {status}",
                r.prompt, r.old.token, r.layer, r.tensor, f.proposal.id)}</p>
            {(!f.applied).then(|| view! {
                <button class="preview" title="the tensor's delta view with the proposal on the session, before accepting it"
                    on:click=move |_| super::patch_panel::preview_proposal(ctx, &tensor, id)>"delta view"</button>
            })}
            <p class="fact-scores">{format!("efficacy {:.0}%, paraphrase {}, neighbourhood {}, unrelated KL {:.4}",
                s.efficacy, pct(s.paraphrase), pct(s.neighborhood), s.unrelated_kl)}</p>
            <table class="fact-probes">
                <thead><tr><th>"prompt"</th><th>"p(new) base"</th><th>"edited"</th><th>"old"</th><th>"p(old) base"</th><th>"edited"</th></tr></thead>
                <tbody>{r.probes.iter().map(|p| view! {
                    <tr class=format!("{:?}", p.group).to_lowercase()>
                        <td>{p.prompt.clone()}</td>
                        <td>{format!("{:.3}", p.base_new.exp())}</td><td class="edited-new">{format!("{:.3}", p.edited_new.exp())}</td>
                        <td>{format!("{:?}", p.old.token)}</td>
                        <td>{format!("{:.3}", p.base_old.exp())}</td><td>{format!("{:.3}", p.edited_old.exp())}</td>
                    </tr>
                }).collect_view()}</tbody>
            </table>
            <p class="fact-generation">"base: "<code>{r.generation.base.clone()}</code>" edited: "<code class="edited">{r.generation.edited.clone()}</code></p>
        </div>
    }
}

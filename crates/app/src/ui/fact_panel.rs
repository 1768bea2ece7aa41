//! Edit by cause: a fact edit (ROME) of the prompt's answer about a subject, computed on the
//! edited model and kept as a pending proposal with its evaluation: ROME's scores, each
//! probe's probabilities base and with the edit, the KL on unrelated prompts, a continuation.
//! The layer comes from a click on the causal trace's MLP map, or is typed.

use super::state::{mutate, use_ctx};
use crate::api::propose_fact;
use leptos::prelude::*;
use tensor_surgeon_wire::{FactEditReport, FactProposal, FactRequest, ProbeGroup};

#[component]
pub fn FactPanel(
    prompt: RwSignal<String>,
    subject: RwSignal<String>,
    layer: RwSignal<String>,
) -> impl IntoView {
    let ctx = use_ctx();
    let target = RwSignal::new(String::new());
    let paraphrases = RwSignal::new(String::new());
    let neighbors = RwSignal::new(String::new());
    let clamp = RwSignal::new(String::new());
    let kl_weight = RwSignal::new(String::new());
    let (busy, set_busy) = signal(false);
    let (error, set_error) = signal(None::<String>);
    let outcome = RwSignal::new(None::<FactProposal>);
    let compute = move || {
        let lines = |text: RwSignal<String>| -> Vec<String> {
            text.get_untracked()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        };
        let request = FactRequest {
            subject: subject.get_untracked(),
            prompt: prompt.get_untracked(),
            target: target.get_untracked(),
            paraphrases: lines(paraphrases),
            neighbors: lines(neighbors),
        };
        let number = |what: &str, text: RwSignal<String>| -> Result<Option<f64>, String> {
            match text.get_untracked().trim() {
                "" => Ok(None),
                t => t
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|_| format!("{what} {t:?} is not a number")),
            }
        };
        let knobs = (|| {
            let layer = match layer.get_untracked().trim() {
                "" => None,
                l => Some(
                    l.parse::<u32>()
                        .map_err(|_| format!("layer {l:?} is not a number"))?,
                ),
            };
            Ok::<_, String>((
                layer,
                number("clamp", clamp)?,
                number("KL weight", kl_weight)?,
            ))
        })();
        let (layer, clamp, kl_weight) = match knobs {
            Ok(k) => k,
            Err(e) => return set_error.set(Some(e)),
        };
        outcome.set(None);
        mutate(
            ctx,
            Some(set_busy),
            set_error,
            propose_fact(request, layer, clamp, kl_weight),
            move |f| {
                outcome.set(Some(f));
                None
            },
        );
    };
    let text_input = |class: &'static str, value: RwSignal<String>, placeholder: &'static str| {
        view! {
            <textarea class=class rows=2 placeholder=placeholder prop:value=value
                on:input=move |ev| value.set(event_target_value(&ev))></textarea>
        }
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
            <details class="fact-more">
                <summary>"probes and strength"</summary>
                <label>"paraphrases (one a line: the edit should reach them)"
                    {text_input("fact-paraphrases", paraphrases, "The Eiffel Tower stands in the city of")}</label>
                <label>"neighbours (one a line: other subjects whose answer must stay)"
                    {text_input("fact-neighbors", neighbors, "The Louvre is located in the city of")}</label>
                <div class="run-fields">
                    <label title="the optimised change of the MLP output is kept under this many times the output's norm: lower spills less over to neighbours, and may not write the fact">
                        "clamp "<input class="fact-clamp" size=5 placeholder=DEFAULT_CLAMP
                        prop:value=clamp on:input=move |ev| clamp.set(event_target_value(&ev))/></label>
                    <label title="how much the optimisation weighs keeping the subject's other predictions: higher is more specific">
                        "KL weight "<input class="fact-kl" size=5 placeholder=DEFAULT_KL
                        prop:value=kl_weight on:input=move |ev| kl_weight.set(event_target_value(&ev))/></label>
                </div>
            </details>
            <div class="run-actions">
                <button class="fact-button" on:click=move |_| compute() disabled=move || busy.get()>"compute the edit"</button>
                <span class="muted">{move || if busy.get() { "computing… (tens of seconds)" } else { "the subject is the trace's" }}</span>
            </div>
            {move || error.get().map(|e| view! { <p class="error fact-error">{e}</p> })}
            {move || outcome.get().map(|f| view! { <FactOutcome f/> })}
        </div>
    }
}

/// The defaults the strength fields show (the fact editor's, `edit::FactOptions`).
const DEFAULT_CLAMP: &str = "4";
const DEFAULT_KL: &str = "0.0625";

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
    let neighbours = r.probes.iter().filter(|p| p.group == ProbeGroup::Neighbor);
    let spilled = neighbours
        .clone()
        .filter(|p| p.edited_new > p.edited_old)
        .count();
    let neighbours = neighbours.count();
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
            {(spilled > 0).then(|| view! {
                <p class="fact-spill pending">{format!(
                    "the edit spills over: {spilled} of {neighbours} neighbours now prefer {target:?} (rows marked below); \
                     a lower clamp or a higher KL weight makes it more specific, an earlier layer often does too")}</p>
            })}
            <table class="fact-probes">
                <thead><tr><th>"prompt"</th><th>"p(new) base"</th><th>"edited"</th><th>"old"</th><th>"p(old) base"</th><th>"edited"</th></tr></thead>
                <tbody>{r.probes.iter().map(|p| (p, p.group == ProbeGroup::Neighbor && p.edited_new > p.edited_old)).map(|(p, spill)| view! {
                    <tr class=format!("{:?}", p.group).to_lowercase() class:spilled=spill>
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

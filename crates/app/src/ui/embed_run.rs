//! Running an encoder: a few sentences in, the cosine-similarity matrices of the base and the
//! edited model out, with the change of every pair; re-run after every change to the session.

use super::state::{asked_resource, message, use_ctx};
use crate::api::run_embed;
use leptos::prelude::*;
use tensor_surgeon_wire::EmbedSide;

/// An encoder: sentences in, cosine-similarity matrices of the base and edited model out.
#[component]
pub fn EmbedRun() -> impl IntoView {
    let ctx = use_ctx();
    let text = RwSignal::new(
        "A man is eating food.\nA man is eating a piece of bread.\nThe girl is carrying a baby."
            .to_string(),
    );
    let asked = RwSignal::new(None::<Vec<String>>);
    let result = asked_resource(ctx, asked, run_embed);
    let run = move |_| {
        let lines: Vec<String> = text
            .get_untracked()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        asked.set(Some(lines));
    };
    let outcome = move || {
        result.with(|r| match r {
            Some(Some(Ok(o))) => {
                let n = o.base.similarity.len();
                let edited = o.edited.clone();
                Some(view! {
                    <div class="run-sides">
                        <SimilarityTable name="base" side=o.base.clone() reference=None/>
                        {match edited {
                            Some(e) => view! { <SimilarityTable name="edited" side=e reference=Some(o.base.clone())/> }.into_any(),
                            None => view! { <p class="muted">{format!("no edits: the edited model is the base ({n} sentences)")}</p> }.into_any(),
                        }}
                    </div>
                }.into_any())
            }
            Some(Some(Err(e))) => Some(view! { <p class="error">{message(e)}</p> }.into_any()),
            _ => None,
        })
    };
    view! {
        <div class="run-form">
            <textarea class="run-sentences" rows=4 aria-label="sentences, one per line"
                prop:value=move || text.get() on:input=move |ev| text.set(event_target_value(&ev))></textarea>
            <button class="run-button" on:click=run>"embed"</button>
        </div>
        {outcome}
    }
}

/// A cosine matrix; with a reference, each cell also shows its change.
#[component]
fn SimilarityTable(
    name: &'static str,
    side: EmbedSide,
    reference: Option<EmbedSide>,
) -> impl IntoView {
    view! {
        <div class=format!("run-side {name}")>
            <h4>{name}</h4>
            <table class="similarity"><tbody>
                {side.similarity.iter().enumerate().map(|(i, row)| view! {
                    <tr>{row.iter().enumerate().map(|(j, v)| {
                        let delta = reference.as_ref().map(|r| v - r.similarity[i][j]);
                        view! { <td class="num">{match delta {
                            Some(d) => format!("{v:.4} ({d:+.4})"),
                            None => format!("{v:.4}"),
                        }}</td> }
                    }).collect_view()}</tr>
                }).collect_view()}
            </tbody></table>
        </div>
    }
}

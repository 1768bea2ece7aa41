//! Run: the model on a prompt, base and edited side by side (edits included, no bake): the top
//! next tokens as bars, a target token's probability and log-odds, the KL between the two
//! distributions, and greedy continuations streamed as they are produced (with a stop). An
//! encoder embeds sentences instead: cosine matrices, base vs edited. Everything re-runs after
//! every edit, undo or layer toggle (an encoder gets `embed_run`).

use super::ablation_panel::AblationPanel;
use super::activations_panel::ActivationsPanel;
use super::event_stream::{close, Stream};
use super::fact_panel::FactPanel;
use super::probes_panel::ProbesPanel;
use super::state::{asked_resource, message, use_ctx};
use super::trace_panel::TracePanel;
use crate::api::{get_run_info, run_prompt};
use leptos::prelude::*;
use tensor_surgeon_wire::{GenerationEvent, NextTokens, RunInfo, RunRequest, TokenProb};

/// The prompt a newcomer sees first.
const FIRST_PROMPT: &str = "The capital of France is";

#[component]
pub fn RunPanel() -> impl IntoView {
    // Read once: whether and how the model runs does not change with edits (re-rendering the
    // panel would drop the prompt, the probes and the results).
    let info = LocalResource::new(get_run_info);
    let body = move || {
        info.with(|i| match i {
            Some(Ok(RunInfo { reason: Some(r), .. })) => Some(
                view! { <p class="muted run-unsupported">{format!("The model cannot run here: {r}")}</p> }
                    .into_any(),
            ),
            Some(Ok(info)) if info.family.as_deref() == Some("bert") => {
                Some(view! { <super::embed_run::EmbedRun/> }.into_any())
            }
            Some(Ok(info)) => {
                let info = info.clone();
                Some(view! { <PromptRun info/> }.into_any())
            }
            Some(Err(e)) => Some(view! { <p class="error">{message(e)}</p> }.into_any()),
            None => None,
        })
    };
    view! {
        <section class="run-panel">
            <h3>"Run the model"</h3>
            {body}
        </section>
    }
}

/// A causal LM: prompt, top-k side by side, target, continuation; then probes and activations.
#[component]
fn PromptRun(info: RunInfo) -> impl IntoView {
    let ctx = use_ctx();
    let prompt = RwSignal::new(FIRST_PROMPT.to_string());
    // The trace's subject and the fact editor's layer, shared by the two panels.
    let trace_subject = RwSignal::new(String::new());
    let fact_layer = RwSignal::new(String::new());
    let (top_k, set_top_k) = signal("10".to_string());
    let (target, set_target) = signal(String::new());
    let (tokens, set_tokens) = signal("16".to_string());
    let (error, set_error) = signal(None::<String>);
    let asked = RwSignal::new(None::<RunRequest>);
    let result = asked_resource(ctx, asked, run_prompt);
    let run = move || {
        let Ok(k) = top_k.get_untracked().trim().parse::<u32>() else {
            set_error.set(Some("top-k must be a whole number".into()));
            return;
        };
        set_error.set(None);
        let t = target.get_untracked();
        asked.set(Some(RunRequest {
            prompt: prompt.get_untracked(),
            top_k: k,
            target: (!t.is_empty()).then_some(t),
            generate: 0,
        }));
    };
    let generation = Generation::new();
    let start_generation = move || match tokens.get_untracked().trim().parse::<u32>() {
        Ok(n) => {
            set_error.set(None);
            generation.start(&prompt.get_untracked(), n);
        }
        Err(_) => set_error.set(Some("tokens must be a whole number".into())),
    };
    let outcome = move || {
        result.with(|r| match r {
            Some(Some(Ok(o))) => {
                let edited = o.edited.clone();
                let tokens: Vec<String> = o.prompt_tokens.iter().map(|t| format!("{:?}", t.token)).collect();
                Some(view! {
                    <div class="run-outcome" data-kl=o.kl.to_string()>
                        <p class="muted prompt-tokens">{format!("{} prompt tokens: {}", tokens.len(), tokens.join(" "))}</p>
                        <div class="run-sides">
                            <Side name="base" next=o.base.clone()/>
                            {match edited {
                                Some(e) => view! { <Side name="edited" next=e/> }.into_any(),
                                None => view! { <div class="run-side edited same"><h4>"edited"</h4><p class="muted">"no edits: the edited model is the base"</p></div> }.into_any(),
                            }}
                        </div>
                        <TargetLine base=o.base.clone() edited=o.edited.clone()/>
                        <p class="kl">{format!("KL(base \u{2016} edited) = {:.6} nats", o.kl)}</p>
                    </div>
                }.into_any())
            }
            Some(Some(Err(e))) => Some(view! { <p class="error">{message(e)}</p> }.into_any()),
            _ => None,
        })
    };
    view! {
        <div class="run-form">
            <textarea class="run-prompt" rows=2 aria-label="prompt"
                prop:value=move || prompt.get()
                on:input=move |ev| prompt.set(event_target_value(&ev))
                on:keydown=move |ev| if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) { run() }></textarea>
            <div class="run-fields">
                <label>"top-k "<input class="run-topk" size=3 prop:value=top_k on:change=move |ev| set_top_k.set(event_target_value(&ev))/></label>
                <label class="grow">"target token "<input class="run-target-token" size=10 placeholder="\" Paris\" or #ID" prop:value=target on:change=move |ev| set_target.set(event_target_value(&ev))/></label>
            </div>
            <div class="run-actions">
                <button class="run-button" on:click=move |_| run()>"run prompt"</button>
                <label>"tokens "<input class="run-tokens" size=3 prop:value=tokens on:change=move |ev| set_tokens.set(event_target_value(&ev))/></label>
                <button class="generate-button" on:click=move |_| start_generation() disabled=move || generation.running.get()>"generate"</button>
                <button class="stop-button" on:click=move |_| generation.stop() disabled=move || !generation.running.get()>"stop"</button>
            </div>
        </div>
        <super::steer_panel::SteerPanel/>
        {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        {outcome}
        {move || generation.view()}
        <TracePanel prompt subject=trace_subject fact_layer/>
        <FactPanel prompt subject=trace_subject layer=fact_layer/>
        <AblationPanel/>
        <ProbesPanel prompt/>
        <ActivationsPanel prompt layers=info.layers/>
    }
}

/// One side's top tokens as bars.
#[component]
fn Side(name: &'static str, next: NextTokens) -> impl IntoView {
    let top1 = next
        .top
        .first()
        .map(|t| t.token.clone())
        .unwrap_or_default();
    view! {
        <div class=format!("run-side {name}") data-top1=top1>
            <h4>{name}</h4>
            <table class="run-top"><tbody>
                {next.top.iter().map(bar_row).collect_view()}
            </tbody></table>
        </div>
    }
}

fn bar_row(t: &TokenProb) -> impl IntoView {
    let width = format!("{:.1}%", (t.prob * 100.0).clamp(0.0, 100.0));
    view! {
        <tr data-id=t.id.to_string()>
            <td class="tok">{format!("{:?}", t.token)}</td>
            <td class="bar-cell"><div class="bar" style:width=width></div></td>
            <td class="num">{format!("{:.4}", t.prob)}</td>
        </tr>
    }
}

/// The target token's probability and log-odds on both sides, and their change.
#[component]
fn TargetLine(base: NextTokens, edited: Option<NextTokens>) -> impl IntoView {
    let b = base.target?;
    let e = edited.and_then(|e| e.target).unwrap_or_else(|| b.clone());
    Some(view! {
        <p class="run-target" data-base=b.prob.to_string() data-edited=e.prob.to_string()>
            {format!(
                "p({:?}): base {:.4} \u{2192} edited {:.4} (\u{0394}p {:+.4}); log-odds {:.3} \u{2192} {:.3} (\u{0394} {:+.3})",
                b.token, b.prob, e.prob, e.prob - b.prob, b.log_odds, e.log_odds, e.log_odds - b.log_odds
            )}
        </p>
    })
}

/// Greedy continuations streamed from `GET /api/generate` (server-sent events).
#[derive(Clone, Copy)]
struct Generation {
    running: RwSignal<bool>,
    base: RwSignal<String>,
    edited: RwSignal<Option<String>>,
    count: RwSignal<u32>,
    error: RwSignal<Option<String>>,
    source: StoredValue<Option<Stream>, LocalStorage>,
}

impl Generation {
    fn new() -> Generation {
        Generation {
            running: RwSignal::new(false),
            base: RwSignal::new(String::new()),
            edited: RwSignal::new(None),
            count: RwSignal::new(0),
            error: RwSignal::new(None),
            source: StoredValue::new_local(None),
        }
    }

    fn start(self, prompt: &str, tokens: u32) {
        self.stop();
        self.base.set(String::new());
        self.edited.set(None);
        self.count.set(0);
        self.error.set(None);
        self.running.set(true);
        let mut query = leptos_router::params::ParamsMap::new();
        query.insert("prompt", prompt.to_string());
        query.insert("tokens", tokens.to_string());
        let url = format!("/api/generate{}", query.to_query_string());
        let s = Stream::open(
            &url,
            "token",
            move |event: GenerationEvent| {
                let text = event.token;
                if event.side == "base" {
                    self.base.update(|b| b.push_str(&text));
                } else {
                    self.edited
                        .update(|e| e.get_or_insert_with(String::new).push_str(&text));
                }
                self.count.update(|c| *c += 1);
            },
            move |failure| {
                self.error.set(failure);
                self.running.set(false);
                self.source.set_value(None);
            },
        );
        self.source.set_value(s);
    }

    fn stop(self) {
        close(self.source);
        self.running.set(false);
    }

    fn view(self) -> impl IntoView {
        let shown = self.running.get() || self.count.get() > 0 || self.error.get().is_some();
        shown.then(|| {
            view! {
                <div class="continuations" data-count=self.count.get().to_string() data-running=self.running.get().to_string()>
                    <div class="continuation base"><h4>"base"</h4><pre>{self.base.get()}</pre></div>
                    <div class="continuation edited"><h4>"edited"</h4><pre>{self.edited.get().unwrap_or_else(|| "(no edits: same as the base)".into())}</pre></div>
                    {self.error.get().map(|e| view! { <p class="error">{e}</p> })}
                </div>
            }
        })
    }
}

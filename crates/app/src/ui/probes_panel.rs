//! Probes: prompts with the next token an edit should make likely (expect) or unlikely (avoid),
//! and unrelated prompts it should leave alone. The table shows, for base and edited, the
//! target's probability (efficacy) and the KL between the next-token distributions (locality),
//! and re-runs after every edit, undo or layer toggle. Probes are saved beside the patches,
//! alone or with the session patch under the same name.

use super::state::{message, poll_progress, use_ctx};
use crate::api::{
    get_probe_progress, list_probes, load_probes, run_probes, save_patch, save_probes,
};
use leptos::prelude::*;
use tensor_surgeon_wire::{Probe, ProbeKind, ProbeRow, ProbeSet, TaskProgress};

fn kind_name(k: ProbeKind) -> &'static str {
    match k {
        ProbeKind::Expect => "expect",
        ProbeKind::Avoid => "avoid",
        ProbeKind::Unrelated => "unrelated",
    }
}

fn parse_kind(s: &str) -> ProbeKind {
    match s {
        "avoid" => ProbeKind::Avoid,
        "unrelated" => ProbeKind::Unrelated,
        _ => ProbeKind::Expect,
    }
}

#[component]
pub fn ProbesPanel(prompt: RwSignal<String>) -> impl IntoView {
    let ctx = use_ctx();
    let probes = RwSignal::new(Vec::<Probe>::new());
    let (new_target, set_new_target) = signal(String::new());
    let (new_kind, set_new_kind) = signal("expect".to_string());
    let (name, set_name) = signal("probes".to_string());
    let (note, set_note) = signal(None::<String>);
    let (running, set_running) = signal(false);
    let (progress, set_progress) = signal(None::<TaskProgress>);
    let saved_version = RwSignal::new(0u64);
    let saved = LocalResource::new(move || {
        let _ = saved_version.get();
        list_probes()
    });
    let table = LocalResource::new(move || {
        let list = probes.get();
        let _ = ctx.version.get();
        async move {
            if list.is_empty() {
                return None;
            }
            set_running.set(true);
            poll_progress(running, set_progress, get_probe_progress);
            let r = run_probes(ProbeSet {
                version: 1,
                probes: list,
            })
            .await;
            set_running.set(false);
            Some(r)
        }
    });
    let add = move |_| {
        let p = prompt.get_untracked();
        if p.trim().is_empty() {
            set_note.set(Some(
                "write the probe's prompt in the prompt box first".into(),
            ));
            return;
        }
        probes.update(|l| {
            l.push(Probe {
                prompt: p,
                target: new_target.get_untracked(),
                kind: parse_kind(&new_kind.get_untracked()),
            })
        });
        set_note.set(None);
    };
    let set = move || ProbeSet {
        version: 1,
        probes: probes.get_untracked(),
    };
    let save = move |with_patch: bool| {
        let (n, s) = (name.get_untracked(), set());
        leptos::task::spawn_local(async move {
            let patch = if with_patch {
                save_patch(n.clone(), String::new()).await.map(Some)
            } else {
                Ok(None)
            };
            let outcome = match patch {
                Ok(p) => save_probes(n, s).await.map(|q| match p {
                    Some(p) => format!("saved {p} and {q}"),
                    None => format!("saved {q}"),
                }),
                Err(e) => Err(e),
            };
            set_note.set(Some(outcome.unwrap_or_else(|e| message(&e))));
            saved_version.update(|v| *v += 1);
        });
    };
    let load = move |file: String| {
        leptos::task::spawn_local(async move {
            match load_probes(file.clone()).await {
                Ok(s) => {
                    probes.set(s.probes);
                    set_name.set(file.trim_end_matches(".probes.json").to_string());
                    set_note.set(None);
                }
                Err(e) => set_note.set(Some(message(&e))),
            }
        });
    };
    let rows_view = move || {
        let list = probes.get();
        let results: Option<Result<Vec<ProbeRow>, String>> = table.with(|t| match t {
            Some(Some(Ok(t))) => Some(Ok(t.rows.clone())),
            Some(Some(Err(e))) => Some(Err(message(e))),
            _ => None,
        });
        let error = results.as_ref().and_then(|r| r.as_ref().err().cloned());
        let rows = results.and_then(Result::ok).unwrap_or_default();
        view! {
            <table class="probe-table">
                <thead><tr><th>"kind"</th><th>"prompt"</th><th>"target"</th><th>"p base"</th><th>"p edited"</th><th>"\u{0394}p"</th><th>"KL"</th><th>"top base"</th><th>"top edited"</th><th></th></tr></thead>
                <tbody>
                    {list.iter().enumerate().map(|(i, p)| {
                        let r = rows.get(i).filter(|r| r.prompt == p.prompt && r.target == p.target).cloned();
                        probe_row(i, p, r, probes)
                    }).collect_view()}
                </tbody>
            </table>
            {error.map(|e| view! { <p class="error">{e}</p> })}
        }
    };
    let progress_view = move || {
        running.get().then(|| {
            let p = progress.get();
            let text = match p {
                Some(p) if p.total > 0 => format!("running probes\u{2026} {}/{}", p.done, p.total),
                _ => "running probes\u{2026}".into(),
            };
            view! { <p class="muted probe-progress">{text}</p> }
        })
    };
    let saved_view = move || {
        saved.with(|s| match s {
            Some(Ok(list)) if !list.is_empty() => Some(view! {
                <span class="saved-probes">" saved: "
                    {list.iter().map(|f| {
                        let f2 = f.clone();
                        view! { <button class="load-probes" on:click=move |_| load(f2.clone())>{f.clone()}</button> }
                    }).collect_view()}
                </span>
            }),
            _ => None,
        })
    };
    view! {
        <div class="probes-panel">
            <h4>"Probes"</h4>
            <p class="muted">"efficacy: the target's probability, base vs edited; locality: the KL between next-token distributions on unrelated prompts"</p>
            <div class="probe-form">
                <label>"target "<input class="probe-target" size=10 placeholder="\" Paris\"" prop:value=new_target on:change=move |ev| set_new_target.set(event_target_value(&ev))/></label>
                <select class="probe-kind" aria-label="probe kind" on:change=move |ev| set_new_kind.set(event_target_value(&ev)) prop:value=new_kind>
                    <option value="expect">"expect"</option>
                    <option value="avoid">"avoid"</option>
                    <option value="unrelated">"unrelated"</option>
                </select>
                <button class="add-probe" on:click=add>"add the prompt as a probe"</button>
            </div>
            {progress_view}
            {rows_view}
            <div class="probe-save">
                <input class="probes-name" size=12 prop:value=name on:change=move |ev| set_name.set(event_target_value(&ev)) aria-label="probe file name"/>
                <button class="save-probes" on:click=move |_| save(false)>"save probes"</button>
                <button class="save-patch-probes" on:click=move |_| save(true)>"save patch with probes"</button>
                {saved_view}
            </div>
            {move || note.get().map(|n| view! { <p class="muted probe-note">{n}</p> })}
        </div>
    }
}

/// One probe's row: what it asks, and (once run) its probabilities base and edited, the
/// change, the locality KL and both sides' top token; a button removes it.
fn probe_row(
    i: usize,
    p: &Probe,
    r: Option<ProbeRow>,
    probes: RwSignal<Vec<Probe>>,
) -> impl IntoView {
    let f = |v: Option<f32>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    let (b, e) = (
        r.as_ref().and_then(|r| r.base_prob),
        r.as_ref().and_then(|r| r.edited_prob),
    );
    let delta = b
        .zip(e)
        .map(|(b, e)| format!("{:+.4}", e - b))
        .unwrap_or_default();
    view! {
        <tr class="probe-row" data-kind=kind_name(p.kind)
            data-base=b.map(|v| v.to_string()).unwrap_or_default()
            data-edited=e.map(|v| v.to_string()).unwrap_or_default()
            data-kl=r.as_ref().map(|r| r.kl.to_string()).unwrap_or_default()>
            <td>{kind_name(p.kind)}</td>
            <td>{p.prompt.clone()}</td>
            <td>{format!("{:?}", p.target)}</td>
            <td class="num">{f(b)}</td>
            <td class="num">{f(e)}</td>
            <td class="num">{delta}</td>
            <td class="num">{r.as_ref().map(|r| format!("{:.5}", r.kl)).unwrap_or_default()}</td>
            <td>{r.as_ref().map(|r| format!("{:?}", r.base_top)).unwrap_or_default()}</td>
            <td>{r.as_ref().map(|r| format!("{:?}", r.edited_top)).unwrap_or_default()}</td>
            <td><button class="remove" title="remove this probe" on:click=move |_| probes.update(|l| { if i < l.len() { l.remove(i); } })>"\u{00d7}"</button></td>
        </tr>
    }
}

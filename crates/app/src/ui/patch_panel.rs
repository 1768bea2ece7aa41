//! The patch panel: the session's changed elements, save (download and a copy in the patches
//! folder), load (verified; conflicts listed), and bake with progress. Undo / redo live in the
//! header ([`HistoryButtons`]), in reach from every tab.

use super::poll::{poll, Poll};
use super::state::{message, submit, use_ctx};
use crate::api::{
    drop_entries, get_bake_status, load_patch, redo, resolve_proposal, save_patch, session_changed,
    start_bake, undo,
};
use leptos::prelude::*;
use std::time::Duration;
use tensor_surgeon_wire::{BakeStatus, DropRequest, LowRankRow, Proposal, SessionView};

/// Entries shown per page of the table.
const PAGE: usize = 50;

#[component]
pub fn PatchPanel() -> impl IntoView {
    let ctx = use_ctx();
    let (error, set_error) = signal(None::<String>);
    let (saved, set_saved) = signal(None::<String>);
    let (name, set_name) = signal("session.patch.json".to_string());
    let (note, set_note) = signal(String::new());
    let (conflicts, set_conflicts) = signal(Vec::<String>::new());
    // Entries picked in the table, and a tensor picked whole.
    let picked = RwSignal::new(Vec::<(String, Vec<u64>)>::new());
    let (pick_tensor, set_pick_tensor) = signal(String::new());

    // The entries table, a page at a time.
    let page = RwSignal::new(0usize);
    // Agents edit over /mcp: a long poll on the session version shows their proposals live
    // (the whole session is fetched only when it changed).
    let watch = move |seen: Option<u64>| async move {
        match session_changed(seen.unwrap_or(u64::MAX)).await {
            Ok(v) => {
                if seen.is_some_and(|s| s != v) {
                    ctx.changed();
                }
                Poll::Next(Some(v))
            }
            // The server went away or restarted: try again in a second.
            Err(_) => Poll::After(Duration::from_secs(1), seen),
        }
    };
    Effect::new(move |_| poll(Duration::ZERO, None, watch));
    let on_save = move |_| {
        let (n, t) = (name.get_untracked(), note.get_untracked());
        leptos::task::spawn_local(async move {
            match save_patch(n, t).await {
                Ok(path) => {
                    set_saved.set(Some(path));
                    set_error.set(None);
                }
                Err(e) => set_error.set(Some(message(&e))),
            }
        });
    };
    let on_load = move |ev: leptos::ev::Event| {
        #[cfg(feature = "hydrate")]
        {
            use super::state::mutate;
            use wasm_bindgen::JsCast;
            let Some(input) = ev
                .target()
                .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
            else {
                return;
            };
            let Some(file) = input.files().and_then(|f| f.get(0)) else {
                return;
            };
            let name = file.name();
            let request = async move {
                let text = wasm_bindgen_futures::JsFuture::from(file.text())
                    .await
                    .ok()
                    .and_then(|v| v.as_string())
                    .unwrap_or_default();
                load_patch(text, Some(name)).await
            };
            mutate(ctx, None, set_error, request, move |outcome| {
                set_conflicts.set(outcome.conflicts);
                None
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (ev, load_patch, set_conflicts);
    };
    view! {
        <section class="patch-panel">
            <h3>"Patch"</h3>
            <div class="row">
                <input aria-label="patch file name" prop:value=name on:input=move |ev| set_name.set(event_target_value(&ev))/>
                <input aria-label="patch note" placeholder="note" prop:value=note on:input=move |ev| set_note.set(event_target_value(&ev))/>
                <button class="save" on:click=on_save>"save to patches folder"</button>
                <a class="download" href="/api/patch/download" download="session.patch.json">"download"</a>
                <label class="load">"load " <input type="file" accept=".json,application/json" aria-label="load patch" on:change=on_load/></label>
            </div>
            <BakeRow set_error/>
            {move || saved.get().map(|p| view! { <p class="saved">"saved " <code>{p}</code></p> })}
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            {move || {
                let c = conflicts.get();
                (!c.is_empty()).then(|| view! { <div class="conflicts"><p class="error">{format!("{} conflict(s): the patch was not applied", c.len())}</p><ul>{c.into_iter().map(|x| view! { <li>{x}</li> }).collect_view()}</ul></div> })
            }}
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    match ctx.session.await {
                        Err(e) => view! { <p class="error">{message(&e)}</p> }.into_any(),
                        Ok(s) => view! {
                            <Proposals pending=s.pending.clone() set_error/>
                            <LowRankEntries rows=s.low_rank.clone()/>
                            <Entries session=s picked pick_tensor set_pick_tensor page set_error/>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// The bake: a file name, the button, and the bake's progress and the files it wrote.
#[component]
fn BakeRow(set_error: WriteSignal<Option<String>>) -> impl IntoView {
    let (bake_name, set_bake_name) = signal("baked".to_string());
    let (bake, set_bake) = signal(None::<BakeStatus>);
    let poll_bake = move || {
        poll(Duration::from_millis(150), (), move |()| async move {
            match get_bake_status().await {
                Ok(st) => {
                    let running = st.running;
                    set_bake.set(Some(st));
                    if running {
                        Poll::Next(())
                    } else {
                        Poll::Done
                    }
                }
                Err(e) => {
                    set_error.set(Some(message(&e)));
                    Poll::Done
                }
            }
        })
    };
    let on_bake = move |_| {
        let n = bake_name.get_untracked();
        leptos::task::spawn_local(async move {
            match start_bake(n).await {
                Ok(st) => {
                    set_bake.set(Some(st));
                    poll_bake();
                }
                Err(e) => set_error.set(Some(message(&e))),
            }
        });
    };
    let bake_view = move || {
        bake.get().map(|b| {
            let pct = (b.done * 100).checked_div(b.total).unwrap_or(0);
            view! {
                <div class="bake-status">
                    <progress max="100" value=pct.to_string()></progress>
                    {if b.running { format!(" baking… {pct}%") } else { String::new() }}
                    {b.error.clone().map(|e| view! { <span class="error">{e}</span> })}
                    <ul class="baked">{b.written.iter().map(|w| view! { <li><code>{w.clone()}</code></li> }).collect_view()}</ul>
                </div>
            }
        })
    };
    view! {
        <div class="row">
            <input aria-label="bake file name" prop:value=bake_name on:input=move |ev| set_bake_name.set(event_target_value(&ev))/>
            <button class="bake" on:click=on_bake>"bake"</button>
            {bake_view}
        </div>
    }
}

/// Edits proposed by agents, waiting for a person to accept or reject them.
#[component]
fn Proposals(pending: Vec<Proposal>, set_error: WriteSignal<Option<String>>) -> impl IntoView {
    let ctx = use_ctx();
    let on_resolve = move |id: u64, accept: bool| {
        // A preview of the proposal ends with it.
        if ctx.url.with_untracked(|u| u.proposal == Some(id)) {
            let mut url = ctx.url.get_untracked();
            url.proposal = None;
            ctx.go(&url, false);
        }
        submit(ctx, None, set_error, resolve_proposal(id, accept))
    };
    (!pending.is_empty()).then(|| view! {
        <div class="pending">
            <h3>{format!("Proposed by agents ({})", pending.len())}</h3>
            <ul>{pending.iter().map(|p| {
                let id = p.id;
                let tensor = p.request.tensor.clone();
                view! { <li data-proposal=p.id.to_string()>
                    <span class="proposal-label">{p.label.clone()}</span>" "
                    <span class="muted">{format!("({} bytes)", p.bytes)}</span>
                    <button class="preview" title="the tensor's delta view with the proposal on the session, before accepting it"
                        on:click=move |_| preview_proposal(ctx, &tensor, id)>"delta view"</button>
                    <button class="accept" on:click=move |_| on_resolve(id, true)>"accept"</button>
                    <button class="reject" on:click=move |_| on_resolve(id, false)>"reject"</button>
                </li> }
            }).collect_view()}</ul>
        </div>
    })
}

/// Opens `tensor`'s delta view with proposal `id` previewed on the session.
pub(super) fn preview_proposal(ctx: super::state::Ctx, tensor: &str, id: u64) {
    let mut url = ctx.url.get_untracked().open(tensor);
    url.mode = Some(tensor_surgeon_core::view::ViewMode::Delta);
    url.proposal = Some(id);
    ctx.go(&url, false);
}

/// The session's low-rank steps (accepted fact edits), a row each with its rank, each
/// opening its tensor's delta view.
#[component]
fn LowRankEntries(rows: Vec<LowRankRow>) -> impl IntoView {
    let ctx = use_ctx();
    let open_delta = move |tensor: &str| {
        let mut url = ctx.url.get_untracked().open(tensor);
        url.mode = Some(tensor_surgeon_core::view::ViewMode::Delta);
        ctx.go(&url, false);
    };
    (!rows.is_empty()).then(|| {
        view! {
            <table class="low-rank-entries">
                <thead><tr><th>"tensor"</th><th>"low-rank entry"</th><th>"elements"</th><th>"origin"</th><th></th></tr></thead>
                <tbody>
                    {rows.into_iter().map(|r| {
                        let tensor = r.tensor.clone();
                        view! {
                            <tr data-tensor=r.tensor.clone()>
                                <td>{r.tensor.clone()}</td>
                                <td class="rank" title=r.label.clone()>{format!("rank {}", r.rank)}</td>
                                <td>{r.elements}</td>
                                <td class="origin">{r.origin.clone()}</td>
                                <td><button class="open-delta" on:click=move |_| open_delta(&tensor)>"delta view"</button></td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        }
    })
}

/// The session's changed elements, a page at a time, with their selection and the drop /
/// keep actions (on picked entries or a whole tensor's).
#[component]
fn Entries(
    session: SessionView,
    picked: RwSignal<Vec<(String, Vec<u64>)>>,
    pick_tensor: ReadSignal<String>,
    set_pick_tensor: WriteSignal<String>,
    page: RwSignal<usize>,
    set_error: WriteSignal<Option<String>>,
) -> impl IntoView {
    let ctx = use_ctx();
    let s = session;
    let on_drop = move |keep: bool, whole: bool| {
        let request = DropRequest {
            tensors: if whole {
                vec![pick_tensor.get_untracked()]
            } else {
                Vec::new()
            },
            elements: if whole {
                Vec::new()
            } else {
                picked.get_untracked()
            },
            keep,
        };
        picked.set(Vec::new());
        submit(ctx, None, set_error, drop_entries(request));
    };
    view! {
        <p class="muted">{format!("{} changed element(s) in {} step(s)", s.total_elements, s.steps.len())}</p>
        <div class="row entry-actions">
            <button class="drop-selected" on:click=move |_| on_drop(false, false) disabled=move || picked.with(|p| p.is_empty())>"drop selected"</button>
            <button class="keep-selected" on:click=move |_| on_drop(true, false) disabled=move || picked.with(|p| p.is_empty())>"keep only selected"</button>
            <select aria-label="entries of tensor" on:change=move |ev| set_pick_tensor.set(event_target_value(&ev))>
                <option value="">"tensor…"</option>
                {let mut ts: Vec<String> = s.entries.iter().map(|e| e.tensor.clone()).chain(s.low_rank.iter().map(|r| r.tensor.clone())).collect(); ts.sort(); ts.dedup(); ts.into_iter().map(|t| view! { <option value=t.clone()>{t.clone()}</option> }).collect_view()}
            </select>
            <button class="drop-tensor" on:click=move |_| on_drop(false, true) disabled=move || pick_tensor.with(String::is_empty)>"drop tensor's entries"</button>
            <button class="keep-tensor" on:click=move |_| on_drop(true, true) disabled=move || pick_tensor.with(String::is_empty)>"keep only tensor"</button>
        </div>
        {
            let listed = s.entries.len();
            let more = (s.total_elements as usize).saturating_sub(listed);
            let pages = listed.div_ceil(PAGE).max(1);
            view! {
                <div class="pager" aria-label="entry pages">
                    <button class="prev-page" aria-label="previous entries" disabled=move || page.get() == 0 on:click=move |_| page.update(|p| *p = p.saturating_sub(1))>"‹"</button>
                    <span class="page-note">{move || {
                        let p = page.get().min(pages - 1);
                        let (from, to) = (p * PAGE + 1, ((p + 1) * PAGE).min(listed));
                        if listed == 0 { "no entries".to_string() } else { format!("entries {from}–{to} of {listed}") }
                    }}{(more > 0).then(|| format!(" (and {more} more elements, not listed)"))}</span>
                    <button class="next-page" aria-label="next entries" disabled=move || { page.get() + 1 >= pages } on:click=move |_| page.update(|p| *p = (*p + 1).min(pages - 1))>"›"</button>
                </div>
            }
        }
        <table class="entries">
            <thead><tr><th></th><th>"tensor"</th><th>"index"</th><th>"old"</th><th>"new"</th><th>"old hex"</th><th>"new hex"</th><th>"origin"</th></tr></thead>
            <tbody>
                {let entries = s.entries.clone(); move || {
                let p = page.get().min(entries.len().div_ceil(PAGE).max(1) - 1);
                entries.iter().skip(p * PAGE).take(PAGE).map(|e| {
                    let key = (e.tensor.clone(), e.index.clone());
                    let k2 = key.clone();
                    view! {
                    <tr>
                        <td><input type="checkbox" class="pick-entry" aria-label=format!("select {} {:?}", e.tensor, e.index)
                            prop:checked=move || picked.with(|p| p.contains(&k2))
                            on:change=move |_| { let k = key.clone(); picked.update(|p| if let Some(i) = p.iter().position(|x| *x == k) { p.remove(i); } else { p.push(k); }) }/></td>
                        <td>{e.tensor.clone()}</td>
                        <td>{format!("{:?}", e.index)}</td>
                        <td>{e.old_value.clone()}</td>
                        <td class="new-value">{e.new_value.clone()}</td>
                        <td><code>{e.old_hex.clone()}</code></td>
                        <td><code>{e.new_hex.clone()}</code></td>
                        <td class="origin">{e.origin.clone()}</td>
                    </tr>
                }}).collect_view()}}
            </tbody>
        </table>
    }
}

/// Undo and redo, in the header: buttons (with the step count) and Ctrl-Z / Ctrl-Shift-Z
/// outside text fields.
#[component]
pub fn HistoryButtons() -> impl IntoView {
    let ctx = use_ctx();
    let (error, set_error) = signal(None::<String>);
    let on_undo = move || submit(ctx, None, set_error, undo());
    let on_redo = move || submit(ctx, None, set_error, redo());
    let _keys = window_event_listener(leptos::ev::keydown, move |ev| {
        if !(ev.ctrl_key() || ev.meta_key())
            || !ev.key().eq_ignore_ascii_case("z")
            || super::switcher::typing(&ev)
        {
            return;
        }
        ev.prevent_default();
        if ev.shift_key() {
            on_redo();
        } else {
            on_undo();
        }
    });
    view! {
        <span class="history">
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let s = ctx.session.await.ok();
                    let (can_undo, can_redo, steps) = s.as_ref().map(|s| (s.can_undo, s.can_redo, s.steps.len())).unwrap_or_default();
                    view! {
                        <button class="undo" on:click=move |_| on_undo() disabled=!can_undo title="undo the last step (Ctrl-Z)">"undo"</button>
                        <button class="redo" on:click=move |_| on_redo() disabled=!can_redo title="redo (Ctrl-Shift-Z)">"redo"</button>
                        <span class="muted steps">{format!("{steps} step(s)")}</span>
                    }
                })}
            </Transition>
            {move || error.get().map(|e| view! { <span class="error">{e}</span> })}
        </span>
    }
}

//! Patches as layers: load saved patches (several at once) and turn each on or off; combine
//! two saved patches with a conflict view; compare the model with another and browse the
//! per-tensor change table (a row opens the tensor's delta view).

use super::state::{mutate, submit, use_ctx};
use crate::api::{combine_saved, compare_with, load_saved, saved_patches, set_layer};
use leptos::prelude::*;
use tensor_surgeon_core::view::ViewMode;
use tensor_surgeon_wire::{CombineOutcome, CompareOutcome};

#[component]
pub fn LayersPanel() -> impl IntoView {
    let ctx = use_ctx();
    let (error, set_error) = signal(None::<String>);
    let (load_conflicts, set_load_conflicts) = signal(Vec::<String>::new());
    let saved = LocalResource::new(move || {
        ctx.version.get();
        saved_patches()
    });
    let (pick, set_pick) = signal(String::new());
    let (first, set_first) = signal(String::new());
    let (second, set_second) = signal(String::new());
    let (save_as, set_save_as) = signal("combined.patch.json".to_string());
    let (combined, set_combined) = signal(None::<CombineOutcome>);
    let (other, set_other) = signal(String::new());
    let (compared, set_compared) = signal(None::<CompareOutcome>);
    let (busy, set_busy) = signal(false);

    let names = move || saved.get().and_then(|r| r.ok()).unwrap_or_default();
    let options = move |current: ReadSignal<String>| {
        move || {
            let list = names();
            std::iter::once(String::new())
                .chain(list)
                .map(|n| {
                    let label = if n.is_empty() {
                        "choose…".to_string()
                    } else {
                        n.clone()
                    };
                    let sel = current.get() == n;
                    view! { <option value=n.clone() selected=sel>{label}</option> }
                })
                .collect_view()
        }
    };
    let on_load = move |_| {
        let name = pick.get_untracked();
        if name.is_empty() {
            return;
        }
        mutate(ctx, Some(set_busy), set_error, load_saved(name), move |o| {
            set_load_conflicts.set(o.conflicts);
            None
        });
    };
    let on_toggle = move |id: u64, enabled: bool| {
        submit(ctx, Some(set_busy), set_error, set_layer(id, enabled));
    };
    let on_combine = move |_| {
        let (a, b, out) = (
            first.get_untracked(),
            second.get_untracked(),
            save_as.get_untracked(),
        );
        mutate(
            ctx,
            Some(set_busy),
            set_error,
            combine_saved(a, b, out),
            move |o| {
                set_combined.set(Some(o));
                None
            },
        );
    };
    let on_compare = move |_| {
        let path = other.get_untracked();
        mutate(
            ctx,
            Some(set_busy),
            set_error,
            compare_with(path),
            move |o| {
                set_compared.set(Some(o));
                None
            },
        );
    };
    let open_delta = move |tensor: String| {
        let mut url = ctx.url.get_untracked().open(&tensor);
        url.mode = Some(ViewMode::Delta);
        ctx.go(&url, false);
    };

    let layers = move || {
        Suspend::new(async move {
            let layers = ctx.session.await.map(|s| s.layers).unwrap_or_default();
            (!layers.is_empty()).then(|| {
                view! {
                    <ul class="layers">
                        {layers.into_iter().map(|l| {
                            let (id, on) = (l.id, l.enabled);
                            view! {
                                <li class:off=!on data-layer=l.name.clone()>
                                    <label>
                                        <input type="checkbox" class="layer-toggle" aria-label=format!("patch {} on", l.name)
                                            prop:checked=on on:change=move |_| on_toggle(id, !on)/>
                                        <strong>{l.name.clone()}</strong>
                                    </label>
                                    <span class="muted">{format!("{} byte(s) in {} tensor(s){}", l.bytes, l.tensors.len(), if on { "" } else { " · off" })}</span>
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                }
            })
        })
    };

    let combine_view = move || combined.get().map(|o| view! { <Combined o/> });
    let compare_view = move || {
        compared
            .get()
            .map(|o| view! { <Compared o open_delta=Callback::new(open_delta)/> })
    };

    view! {
        <section class="layers-panel">
            <h3>"Patches"</h3>
            <div class="row">
                <label>"saved " <select aria-label="saved patch" on:change=move |ev| set_pick.set(event_target_value(&ev))>{options(pick)}</select></label>
                <button class="load-saved" on:click=on_load>"load"</button>
                <a class="download-inverse" href="/api/patch/download?invert=1" download="session.inverse.patch.json" title="download the patch that turns the edited model back into the base">"inverse patch"</a>
            </div>
            <Transition fallback=|| ()>{layers}</Transition>
            {move || {
                let c = load_conflicts.get();
                (!c.is_empty()).then(|| view! { <div class="conflicts"><p class="error">{format!("{} conflict(s): the patch was not loaded", c.len())}</p><ul>{c.into_iter().map(|x| view! { <li>{x}</li> }).collect_view()}</ul></div> })
            }}
            <div class="row">
                <label>"combine " <select aria-label="first patch" on:change=move |ev| set_first.set(event_target_value(&ev))>{options(first)}</select></label>
                <label>" then " <select aria-label="second patch" on:change=move |ev| set_second.set(event_target_value(&ev))>{options(second)}</select></label>
                <input aria-label="combined file name" prop:value=save_as on:input=move |ev| set_save_as.set(event_target_value(&ev))/>
                <button class="combine" on:click=on_combine>"combine"</button>
            </div>
            {combine_view}
            <div class="row">
                <label>"compare with… " <input aria-label="other model" placeholder="path to another model (file, folder or index)" prop:value=other on:input=move |ev| set_other.set(event_target_value(&ev))/></label>
                <button class="compare-button" on:click=on_compare disabled=busy>{move || if busy.get() { "comparing…" } else { "compare" }}</button>
            </div>
            {compare_view}
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </section>
    }
}

/// A combine's outcome: the saved patch, or every element both patches change.
#[component]
fn Combined(o: CombineOutcome) -> impl IntoView {
    if o.conflicts.is_empty() {
        view! { <p class="combined">{format!("combined: {} entries, saved {}", o.entries, o.saved.unwrap_or_default())}</p> }.into_any()
    } else {
        view! {
            <div class="conflicts combine-conflicts">
                <p class="error">{format!("{} conflicting element(s): nothing was saved", o.conflicts.len())}</p>
                <table>
                    <thead><tr><th>"tensor"</th><th>"index"</th><th>"kind"</th><th>"first"</th><th>"second"</th></tr></thead>
                    <tbody>{o.conflicts.into_iter().take(500).map(|c| view! {
                        <tr><td>{c.tensor}</td><td>{format!("{:?}", c.index)}</td><td>{c.kind}</td><td>{c.first}</td><td>{c.second}</td></tr>
                    }).collect_view()}</tbody>
                </table>
            </div>
        }.into_any()
    }
}

/// The model compared with another: the tensors that changed (a row opens its delta view)
/// and those that could not be compared.
#[component]
fn Compared(o: CompareOutcome, open_delta: Callback<String>) -> impl IntoView {
    let changed: Vec<_> = o.rows.iter().filter(|r| r.changed > 0).cloned().collect();
    view! {
        <div class="compare">
            <p class="muted">{format!("{} of {} tensors changed in {}", changed.len(), o.rows.len(), o.other)}</p>
            <div class="compare-wrap" tabindex="0" role="region" aria-label="compared tensors"><table class="compare-table">
                <thead><tr><th>"tensor"</th><th>"dtype"</th><th>"changed"</th><th>"rel L2"</th><th>"max |delta|"</th></tr></thead>
                <tbody>{changed.into_iter().map(|r| {
                    let t = r.tensor.clone();
                    view! {
                        <tr class="clickable" on:click=move |_| open_delta.run(t.clone())>
                            <td>{r.tensor.clone()}</td><td>{r.dtype.clone()}</td>
                            <td>{format!("{} / {}", r.changed, r.elements)}</td>
                            <td>{format!("{:.4e}", r.rel_l2)}</td><td>{format!("{:.4e}", r.max_abs_delta)}</td>
                        </tr>
                    }
                }).collect_view()}</tbody>
            </table></div>
            <ul>{o.not_compared.into_iter().map(|(n, why)| view! { <li class="muted">{format!("not compared: {n} ({why})")}</li> }).collect_view()}</ul>
        </div>
    }
}

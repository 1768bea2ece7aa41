//! Keyboard first: Ctrl-K (or ⌘K) opens the quick switcher — type scattered letters of a
//! tensor's name (`l3 down`), Enter opens the best match; `?` lists every shortcut; digits
//! pick the dock's tabs; `o` goes back to the overview.

use super::state::use_ctx;
use super::TABS;
use leptos::html;
use leptos::prelude::*;
use tensor_surgeon_core::filter::fuzzy_rank;

/// Matches listed at once.
const SHOWN: usize = 12;

/// Every shortcut, as the help lists it.
pub const SHORTCUTS: [(&str, &str); 10] = [
    ("Ctrl-K / ⌘K", "open a tensor by (fuzzy) name"),
    ("?", "this list"),
    ("o", "the model overview"),
    (
        "1 – 7",
        "the dock's tabs: cell, region, tokens, stats, project, patch, run",
    ),
    (
        "arrows",
        "on the heatmap: move the selected cell (shift: grow it)",
    ),
    ("Enter", "on the heatmap: edit the selected cell"),
    ("wheel", "on the heatmap: zoom around the pointer"),
    (
        "shift-drag",
        "on the heatmap or the scatter: select a rectangle",
    ),
    ("Ctrl-Z / Ctrl-Shift-Z", "undo / redo the last step"),
    ("Esc", "close this, or the switcher"),
];

/// Whether a key press was meant for a text field (shortcuts stay out of its way).
pub(super) fn typing(ev: &leptos::ev::KeyboardEvent) -> bool {
    use leptos::wasm_bindgen::JsCast;
    ev.target()
        .and_then(|t| t.dyn_into::<leptos::web_sys::Element>().ok())
        .is_some_and(|el| matches!(el.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"))
}

#[component]
pub fn Switcher() -> impl IntoView {
    let ctx = use_ctx();
    let open = RwSignal::new(false);
    let help = RwSignal::new(false);
    let query = RwSignal::new(String::new());
    let picked = RwSignal::new(0usize);
    let input = NodeRef::<html::Input>::new();
    let names: Vec<String> = ctx
        .model
        .with_value(|m| m.tensors.iter().map(|t| t.name.clone()).collect());
    let names = StoredValue::new(names);
    let matches = Memo::new(move |_| {
        let q = query.get();
        names.with_value(|n| {
            let refs: Vec<&str> = n.iter().map(String::as_str).collect();
            fuzzy_rank(&refs, &q, SHOWN)
                .into_iter()
                .map(|i| n[i].clone())
                .collect::<Vec<_>>()
        })
    });
    let go_to = move |name: String| {
        let url = ctx.url.get_untracked().open(&name);
        ctx.go(&url, false);
        open.set(false);
    };
    let set_tab = move |tab: &str| {
        let mut url = ctx.url.get_untracked();
        url.tab = Some(tab.to_string());
        ctx.go(&url, true);
    };

    let _keys = window_event_listener(leptos::ev::keydown, move |ev| {
        let key = ev.key();
        if (ev.ctrl_key() || ev.meta_key()) && key.eq_ignore_ascii_case("k") {
            ev.prevent_default();
            query.set(String::new());
            picked.set(0);
            help.set(false);
            open.set(true);
            return;
        }
        if key == "Escape" {
            open.set(false);
            help.set(false);
            return;
        }
        if typing(&ev) || ev.ctrl_key() || ev.meta_key() || ev.alt_key() || open.get_untracked() {
            return;
        }
        match key.as_str() {
            "?" => help.update(|h| *h = !*h),
            "o" => {
                let mut url = ctx.url.get_untracked();
                url.tensor = None;
                url.scan = false;
                ctx.go(&url, false);
            }
            d if d.len() == 1 && d.as_bytes()[0].is_ascii_digit() => {
                if let Some((tab, _)) = (d.as_bytes()[0] - b'0')
                    .checked_sub(1)
                    .and_then(|i| TABS.get(i as usize))
                {
                    set_tab(tab);
                }
            }
            _ => {}
        }
    });
    Effect::new(move |_| {
        if open.get() {
            if let Some(el) = input.get() {
                let _ = el.focus();
            }
        }
    });

    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        let n = matches.with(Vec::len);
        match ev.key().as_str() {
            "ArrowDown" => {
                ev.prevent_default();
                picked.update(|p| *p = (*p + 1).min(n.saturating_sub(1)));
            }
            "ArrowUp" => {
                ev.prevent_default();
                picked.update(|p| *p = p.saturating_sub(1));
            }
            "Enter" => {
                ev.prevent_default();
                if let Some(name) = matches.with(|m| m.get(picked.get_untracked()).cloned()) {
                    go_to(name);
                }
            }
            _ => {}
        }
    };

    view! {
        <button class="quick-open" title="open a tensor by name (Ctrl-K)" on:click=move |_| { query.set(String::new()); open.set(true); }>
            "Open tensor… " <kbd>"Ctrl-K"</kbd>
        </button>
        <button class="help-button" aria-label="keyboard shortcuts (?)" title="keyboard shortcuts (?)" on:click=move |_| help.update(|h| *h = !*h)>"?"</button>
        <Show when=move || open.get()>
            <div class="modal-backdrop" on:click=move |_| open.set(false)></div>
            <div class="modal switcher" role="dialog" aria-modal="true" aria-label="open a tensor">
                <input node_ref=input type="search" class="switcher-input" aria-label="tensor name (fuzzy)"
                    placeholder="tensor name, e.g. l3 down" autocomplete="off"
                    prop:value=move || query.get()
                    on:input=move |ev| { query.set(event_target_value(&ev)); picked.set(0); }
                    on:keydown=on_key/>
                <ul class="switcher-hits" role="listbox" aria-label="matching tensors">
                    {move || matches.get().into_iter().enumerate().map(|(i, name)| {
                        let n = name.clone();
                        view! {
                            <li role="option" aria-selected=move || (picked.get() == i).to_string()
                                class:picked=move || picked.get() == i
                                on:mousemove=move |_| picked.set(i)
                                on:click=move |_| go_to(n.clone())>{name}</li>
                        }
                    }).collect_view()}
                </ul>
                <p class="muted">"↑ ↓ to choose, Enter to open, Esc to close"</p>
            </div>
        </Show>
        <Show when=move || help.get()>
            <div class="modal-backdrop" on:click=move |_| help.set(false)></div>
            <div class="modal shortcuts" role="dialog" aria-modal="true" aria-label="keyboard shortcuts">
                <h2>"Keyboard shortcuts"</h2>
                <table class="kv"><tbody>
                    {SHORTCUTS.iter().map(|(k, what)| view! { <tr><td><kbd>{*k}</kbd></td><td>{*what}</td></tr> }).collect_view()}
                </tbody></table>
                <button on:click=move |_| help.set(false)>"Close"</button>
            </div>
        </Show>
    }
}

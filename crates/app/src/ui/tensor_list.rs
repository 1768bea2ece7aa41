//! The tensor list: filter (substring or regex), groups by name prefix, one link per tensor.

use super::state::{href, use_ctx};
use leptos::prelude::*;
use tensor_surgeon_core::filter::{self, Filter};
use tensor_surgeon_core::units::{human_bytes, shape_text};

#[component]
pub fn TensorList() -> impl IntoView {
    let ctx = use_ctx();
    let (pattern, set_pattern) = signal(String::new());
    let (regex, set_regex) = signal(false);
    let filter = Memo::new(move |_| Filter::new(&pattern.get(), regex.get()).map(|_| ()));
    view! {
        <div class="tensor-list">
            <div class="filter">
                <input
                    type="search"
                    placeholder="filter tensors"
                    aria-label="filter tensors"
                    prop:value=pattern
                    on:input=move |ev| set_pattern.set(event_target_value(&ev))
                />
                <label title="treat the filter as a regular expression">
                    <input type="checkbox" prop:checked=regex on:change=move |ev| set_regex.set(event_target_checked(&ev))/>
                    "regex"
                </label>
            </div>
            {move || filter.get().err().map(|e| view! { <div class="error">{e}</div> })}
            {move || {
                    let model = ctx.model.get_value();
                    let f = Filter::new(&pattern.get(), regex.get()).unwrap_or(Filter::All);
                    let shown: Vec<_> = model.tensors.iter().filter(|t| f.matches(&t.name)).cloned().collect();
                    let groups = filter::groups(shown.iter().map(|t| t.name.as_str()));
                    let current = ctx.url.with(|u| u.tensor.clone());
                    view! {
                        <p class="muted count">{format!("{} of {} tensors", shown.len(), model.tensors.len())}</p>
                        {groups.into_iter().map(|(group, members)| {
                            let title = if group.is_empty() { "(top level)".to_string() } else { group.clone() };
                            view! {
                                <details class="group" open=true>
                                    <summary>{title} <span class="muted">{format!(" {}", members.len())}</span></summary>
                                    <ul>
                                        {members.into_iter().map(|i| {
                                            let t = shown[i].clone();
                                            let short = t.name.strip_prefix(group.as_str()).unwrap_or(&t.name).to_string();
                                            let link = ctx.url.with(|u| href(&u.open(&t.name)));
                                            let active = current.as_deref() == Some(t.name.as_str());
                                            view! {
                                                <li class:active=active>
                                                    <a href=link data-tensor=t.name.clone() title=t.name.clone()>
                                                        <span class="name">{short}</span>
                                                        <span class="meta">{t.dtype.clone()} " " {shape_text(&t.shape)} " " {human_bytes(t.bytes)}</span>
                                                    </a>
                                                </li>
                                            }
                                        }).collect_view()}
                                    </ul>
                                </details>
                            }
                        }).collect_view()}
                    }
                }}
        </div>
    }
}

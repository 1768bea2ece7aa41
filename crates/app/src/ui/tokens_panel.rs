//! Tokens (when the model has a tokenizer): find a token and open its row; the selected row's
//! nearest tokens by cosine similarity (edits included); compare two tokens (cosine, L2
//! distance, and the delta of their rows as a strip).

use super::charts;
use super::state::{message, open_line, use_ctx, Ctx};
use crate::api::{compare_tokens, nearest_tokens, search_tokens};
use leptos::html;
use leptos::prelude::*;

/// Neighbours listed.
const K: usize = 10;

/// Opens `row` of `tensor` (a [vocab, hidden] matrix) in the heatmap and selects its first cell.
fn open_row(ctx: Ctx, tensor: &str, row: u64) {
    open_line(ctx, tensor, row, false);
}

#[component]
pub fn TokensPanel() -> impl IntoView {
    let ctx = use_ctx();
    let vocab_tensor = ctx.model.with_value(|m| m.vocab_tensor.clone());
    let (query, set_query) = signal(String::new());
    let (compare_with, set_compare_with) = signal(None::<u64>);
    let strip = NodeRef::<html::Canvas>::new();
    let hits = LocalResource::new(move || {
        let q = query.get();
        async move {
            if q.trim().is_empty() {
                None
            } else {
                Some(search_tokens(q).await)
            }
        }
    });
    // The selected row of a vocabulary matrix shown with rows on y.
    let selected = Memo::new(move |_| {
        let t = ctx.tensor.get()?;
        let v = ctx.view.get()?;
        let s = ctx.selection.get()?;
        let vocab = ctx.model.with_value(|m| m.vocab_size)?;
        let rows = t.shape.first().copied()?;
        (t.shape.len() == 2
            && v.y_dim == Some(0)
            && s.view == v
            && rows >= vocab
            && rows < vocab + 1024)
            .then(|| (t.name.clone(), v.y.index(s.rows.0)))
    });
    let near = LocalResource::new(move || {
        let sel = selected.get();
        let _ = ctx.version.get();
        async move {
            let (t, r) = sel?;
            Some(nearest_tokens(t, r, K).await)
        }
    });
    let comparison = LocalResource::new(move || {
        let sel = selected.get();
        let other = compare_with.get();
        let _ = ctx.version.get();
        async move {
            let ((t, a), b) = (sel?, other?);
            Some(compare_tokens(t, a, b).await)
        }
    });
    Effect::new(move |_| {
        let Some(el) = strip.get() else { return };
        comparison.with(|c| {
            if let Some(Some(Ok(c))) = c {
                charts::strip(&el, &c.delta);
            }
        });
    });

    let search_view = move || {
        hits.with(|h| match h {
            Some(Some(Ok(list))) if list.is_empty() => {
                view! { <p class="muted">"no such token"</p> }.into_any()
            }
            Some(Some(Ok(list))) => {
                let vt = vocab_tensor.clone();
                view! {
                    <ul class="token-hits">
                        {list.iter().map(|h| {
                            let (id, vt) = (h.id, vt.clone());
                            view! { <li><a href="#" data-id=h.id.to_string() on:click=move |ev| {
                                ev.prevent_default();
                                if let Some(t) = &vt { open_row(ctx, t, id); }
                            }>{format!("{:>6}  {:?}", h.id, h.token)}</a></li> }
                        }).collect_view()}
                    </ul>
                }
                .into_any()
            }
            Some(Some(Err(e))) => view! { <p class="error">{message(e)}</p> }.into_any(),
            _ => ().into_any(),
        })
    };
    let near_view = move || {
        near.with(|n| match n {
            Some(Some(Ok(n))) => {
                let t = n.tensor.clone();
                view! {
                    <div class="nearest" data-row=n.row.to_string()>
                        <div>{format!("nearest to row {} {}", n.row, n.token.as_ref().map(|t| format!("{t:?}")).unwrap_or_default())}</div>
                        <table class="entries"><tbody>
                            {n.neighbors.iter().map(|x| {
                                let (row, t1, t2) = (x.row, t.clone(), t.clone());
                                view! { <tr data-row=x.row.to_string()>
                                    <td><a href="#" on:click=move |ev| { ev.prevent_default(); open_row(ctx, &t1, row); }>{format!("{} {}", x.row, x.token.as_ref().map(|t| format!("{t:?}")).unwrap_or_default())}</a></td>
                                    <td>{format!("{:.4}", x.cosine)}</td>
                                    <td><button class="compare" on:click=move |_| { let _ = &t2; set_compare_with.set(Some(row)); }>"compare"</button></td>
                                </tr> }
                            }).collect_view()}
                        </tbody></table>
                    </div>
                }.into_any()
            }
            Some(Some(Err(e))) => view! { <p class="error">{message(e)}</p> }.into_any(),
            _ => view! { <p class="muted">"select a row of a vocabulary matrix to see its nearest tokens"</p> }.into_any(),
        })
    };
    let compare_view = move || {
        comparison.with(|c| match c {
            Some(Some(Ok(c))) => Some(view! {
                <div class="comparison" data-cosine=c.cosine.to_string()>
                    {format!("{} {:?} vs {} {:?}: cosine {:.4}, L2 distance {:.4}; delta (second - first):",
                        c.a, c.a_token.clone().unwrap_or_default(), c.b, c.b_token.clone().unwrap_or_default(), c.cosine, c.l2)}
                </div>
            }.into_any()),
            Some(Some(Err(e))) => Some(view! { <p class="error">{message(e)}</p> }.into_any()),
            _ => None,
        })
    };
    view! {
        <section class="tokens-panel">
            <h3>"Tokens"</h3>
            <input type="search" class="token-search" placeholder="find a token: \" Paris\"" aria-label="find a token"
                on:change=move |ev| set_query.set(event_target_value(&ev))/>
            {search_view}
            {near_view}
            {compare_view}
            <canvas node_ref=strip width=420 height=60 class="delta-strip" style:display=move || if compare_with.get().is_some() { "block" } else { "none" }/>
        </section>
    }
}

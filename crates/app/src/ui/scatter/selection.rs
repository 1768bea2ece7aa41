//! What a selection in the scatter becomes: the list of its points (with tokens), a row set
//! for the region panel, and the nearest tokens of a clicked point.

use super::super::state::{use_ctx, RowSet};
use crate::api::nearest_tokens;
use leptos::prelude::*;
use tensor_surgeon_wire::{Nearest, Projection};

/// Points listed from a selection.
const LIST_LIMIT: usize = 200;
/// Nearest tokens shown for a clicked point.
const NEAREST: usize = 8;

/// One point as a line of text: its row (or column), token, norm and coordinates.
pub fn describe(p: &Projection, i: usize, columns: bool) -> String {
    let d = p.dims.max(1) as usize;
    let what = if columns { "column" } else { "row" };
    let token = p
        .labels
        .get(i)
        .filter(|l| !l.is_empty())
        .map(|l| format!(" {l:?}"))
        .unwrap_or_default();
    let coords: Vec<String> = p
        .points
        .get(i * d..(i + 1) * d)
        .unwrap_or_default()
        .iter()
        .map(|v| tensor_surgeon_core::units::significant(f64::from(*v), 4))
        .collect();
    let norm = p
        .norms
        .get(i)
        .map(|v| {
            format!(
                "  norm {}",
                tensor_surgeon_core::units::significant(f64::from(*v), 4)
            )
        })
        .unwrap_or_default();
    format!(
        "{what} {}{token}{norm}  ({})",
        p.index.get(i).copied().unwrap_or(i as u64),
        coords.join(", ")
    )
}

/// The selected points: listed, and handed to the region panel as a row set.
#[component]
pub fn SelectionList(
    proj: Memo<Option<(String, Projection)>>,
    picked: RwSignal<Vec<usize>>,
    columns: ReadSignal<bool>,
    open_point: Callback<usize>,
) -> impl IntoView {
    let ctx = use_ctx();
    let to_region = move |_| {
        let Some((tensor, p)) = proj.get_untracked() else {
            return;
        };
        let sel = picked.get_untracked();
        ctx.row_set.set(Some(RowSet {
            tensor,
            columns: columns.get_untracked(),
            lines: sel.iter().map(|&i| p.index[i]).collect(),
            labels: sel
                .iter()
                .map(|&i| p.labels.get(i).cloned().unwrap_or_default())
                .collect(),
        }));
        ctx.open_tab("region");
    };
    move || {
        let sel = picked.get();
        (!sel.is_empty()).then(|| {
            let shown: Vec<usize> = sel.iter().copied().take(LIST_LIMIT).collect();
            let more = if sel.len() > LIST_LIMIT {
                format!(" (first {LIST_LIMIT} listed)")
            } else {
                String::new()
            };
            view! {
                <div class="scatter-selection">
                    <div class="row">
                        <span class="muted selection-count">{format!("{} points selected{more}", sel.len())}</span>
                        <button class="to-region" on:click=to_region title="operate on these rows in the region panel">"to region panel"</button>
                        <button class="clear-selection" on:click=move |_| picked.set(Vec::new())>"clear"</button>
                    </div>
                    <ul>{shown.into_iter().map(|i| {
                        let text = proj.with(|p| p.as_ref().map(|(_, p)| describe(p, i, columns.get_untracked())).unwrap_or_default());
                        view! { <li><a href="#" on:click=move |ev| { ev.prevent_default(); open_point.run(i); }>{text}</a></li> }
                    }).collect_view()}</ul>
                </div>
            }
        })
    }
}

/// The nearest tokens (cosine, edits included) of the last clicked point of a vocabulary
/// matrix.
#[component]
pub fn NearestPoint(clicked: RwSignal<Option<(String, u64)>>) -> impl IntoView {
    let found = LocalResource::new(move || {
        let c = clicked.get();
        async move {
            match c {
                Some((tensor, row)) => Some(nearest_tokens(tensor, row, NEAREST).await),
                None => None,
            }
        }
    });
    move || {
        found.get().flatten().map(|r| match r {
            Ok(Nearest { row, token, neighbors, .. }) => view! {
                <div class="scatter-nearest">
                    <div class="muted">{format!("nearest to row {row}{}", token.map(|t| format!(" {t:?}")).unwrap_or_default())}</div>
                    <ul>{neighbors.into_iter().map(|n| view! {
                        <li>{format!("{:>6}  {:<16} {:.3}", n.row, n.token.map(|t| format!("{t:?}")).unwrap_or_default(), n.cosine)}</li>
                    }).collect_view()}</ul>
                </div>
            }.into_any(),
            Err(_) => ().into_any(),
        })
    }
}

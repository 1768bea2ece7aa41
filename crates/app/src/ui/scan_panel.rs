//! The model scan: every tensor's statistics streamed in with progress, as a sortable,
//! filterable table with flags; outliers among siblings shown as a statistic by layer.
//! Clicking a row opens that tensor.

use super::charts::{self, plot_attr, Bar};
use super::heatmap::Geom;
use super::poll::{poll, Poll};
use super::state::{message, use_ctx};
use crate::api::{get_scan_status, start_scan};
use leptos::html;
use leptos::prelude::*;
use std::cmp::Ordering;
use std::time::Duration;
use tensor_surgeon_core::filter::Filter;
use tensor_surgeon_core::stats::scan::{ScanRow, SiblingGroup};
use tensor_surgeon_core::units::significant;
use tensor_surgeon_wire::ScanStatus;

/// Sortable columns: (key, header).
const COLUMNS: [(&str, &str); 10] = [
    ("tensor", "tensor"),
    ("dtype", "dtype"),
    ("elements", "elements"),
    ("min", "min"),
    ("max", "max"),
    ("mean", "mean"),
    ("std", "std"),
    ("maxabs", "max |x|"),
    ("special", "NaN/Inf"),
    ("flags", "flags"),
];

fn short(v: f64) -> String {
    significant(v, 4)
}

fn number(r: &ScanRow, key: &str) -> Option<f64> {
    let m = &r.summary;
    match key {
        "elements" => Some(m.count as f64),
        "min" => m.min,
        "max" => m.max,
        "mean" => m.mean,
        "std" => m.std,
        "maxabs" => m.max_abs,
        "special" => Some((m.nan + m.pos_inf + m.neg_inf) as f64),
        "flags" => Some(r.flags.len() as f64),
        _ => None,
    }
}

fn compare(a: &ScanRow, b: &ScanRow, key: &str) -> Ordering {
    match key {
        "tensor" => a.tensor.cmp(&b.tensor),
        "dtype" => a.dtype.cmp(&b.dtype),
        _ => {
            // Missing numbers sort last either way round.
            let (x, y) = (number(a, key), number(b, key));
            match (x, y) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
        }
    }
}

/// Streams the scan's rows into `set_rows` (and its status) until it finishes.
pub(super) fn follow_scan(
    set_status: WriteSignal<Option<ScanStatus>>,
    set_rows: WriteSignal<Vec<ScanRow>>,
    set_error: WriteSignal<Option<String>>,
) {
    poll(Duration::from_millis(300), 0, move |since| async move {
        match get_scan_status(since).await {
            Ok(st) => {
                let (running, n) = (st.running, st.rows.len());
                if since == 0 {
                    set_rows.set(st.rows.clone());
                } else {
                    set_rows.update(|r| r.extend(st.rows.iter().cloned()));
                }
                set_status.set(Some(ScanStatus {
                    rows: Vec::new(),
                    ..st
                }));
                if running {
                    Poll::Next(since + n)
                } else if since > 0 {
                    // Finished: fetch all rows again, now with the sibling flags.
                    Poll::After(Duration::ZERO, 0)
                } else {
                    Poll::Done
                }
            }
            Err(e) => {
                set_error.set(Some(message(&e)));
                Poll::Done
            }
        }
    });
}

#[component]
fn SiblingChart(group: Signal<Option<SiblingGroup>>) -> impl IntoView {
    let canvas = NodeRef::<html::Canvas>::new();
    let geom = RwSignal::new(None::<Geom>);
    Effect::new(move |_| {
        let Some(el) = canvas.get() else { return };
        group.with(|g| {
            if let Some(g) = g {
                let bars: Vec<Bar> = g
                    .members
                    .iter()
                    .map(|(layer, name, std)| Bar {
                        label: layer.to_string(),
                        value: *std,
                        flagged: g.outliers.contains(name),
                    })
                    .collect();
                geom.set(charts::bars(&el, &bars, Some(g.median), "std"));
            }
        });
    });
    view! {
        <canvas node_ref=canvas width=560 height=200 class="siblings"
            data-plot=move || plot_attr(geom.get())
            data-outliers=move || group.with(|g| g.as_ref().map(|g| g.outliers.join(",")))/>
    }
}

#[component]
pub fn ScanPanel() -> impl IntoView {
    let ctx = use_ctx();
    let (status, set_status) = signal(None::<ScanStatus>);
    let (rows, set_rows) = signal(Vec::<ScanRow>::new());
    let (error, set_error) = signal(None::<String>);
    let (sort, set_sort) = signal(("flags".to_string(), true));
    let (filter_text, set_filter_text) = signal(String::new());
    let (group_pick, set_group_pick) = signal(None::<String>);

    // Start (or reuse) the scan for the current edits, then stream its rows.
    Effect::new(move |_| {
        let _ = ctx.version.get();
        leptos::task::spawn_local(async move {
            match start_scan().await {
                Ok(_) => follow_scan(set_status, set_rows, set_error),
                Err(e) => set_error.set(Some(message(&e))),
            }
        });
    });

    let shown = move || {
        let f = Filter::new(&filter_text.get(), false).ok();
        let (key, desc) = sort.get();
        let mut list: Vec<ScanRow> = rows.with(|r| {
            r.iter()
                .filter(|r| f.as_ref().is_none_or(|f| f.matches(&r.tensor)))
                .cloned()
                .collect()
        });
        list.sort_by(|a, b| {
            let o = compare(a, b, &key);
            if desc {
                o.reverse()
            } else {
                o
            }
        });
        list
    };
    let groups = move || status.with(|s| s.as_ref().map(|s| s.groups.clone()).unwrap_or_default());
    let group = Signal::derive(move || {
        let gs = groups();
        let pick = group_pick.get();
        gs.iter()
            .find(|g| Some(&g.pattern) == pick.as_ref())
            .or_else(|| gs.iter().find(|g| !g.outliers.is_empty()))
            .or(gs.first())
            .cloned()
    });
    let open = move |name: String| {
        let url = ctx.url.get_untracked();
        let mut next = url.open(&name);
        next.scan = false;
        ctx.go(&next, false);
    };
    let progress = move || {
        status.get().map(|s| {
            let pct = (s.bytes_done * 100)
                .checked_div(s.bytes_total)
                .unwrap_or(100);
            let text = if s.running {
                format!(
                    "scanning… {} of {} tensors ({pct}%)",
                    s.tensors_done, s.tensors_total
                )
            } else {
                let flagged = rows.with(|r| r.iter().filter(|r| !r.flags.is_empty()).count());
                format!("{} tensors scanned, {flagged} flagged", s.tensors_done)
            };
            view! {
                <div class="scan-progress" data-complete=s.complete.to_string()>
                    <progress max="100" value=pct.to_string()></progress>" "{text}
                    {s.error.map(|e| view! { <span class="error">{e}</span> })}
                </div>
            }
        })
    };
    let header = move || {
        COLUMNS
            .iter()
            .map(|&(key, label)| {
                let arrow = move || {
                    let (k, desc) = sort.get();
                    (k == key).then_some(if desc { " ▼" } else { " ▲" })
                };
                view! {
                    <th data-sort=key on:click=move |_| set_sort.update(|(k, d)| {
                        if k == key { *d = !*d } else { *k = key.to_string(); *d = key != "tensor" && key != "dtype"; }
                    })>{label}{arrow}</th>
                }
            })
            .collect_view()
    };
    let body =
        move || {
            shown()
            .into_iter()
            .map(|r| {
                let name = r.tensor.clone();
                let m = &r.summary;
                let flags = r.flags.iter().map(|f| f.label()).collect::<Vec<_>>().join(", ");
                let cls = if r.flags.is_empty() { "" } else { "flagged" };
                view! {
                    <tr class=cls data-tensor=r.tensor.clone() on:click=move |_| open(name.clone())>
                        <td class="name">{r.tensor.clone()}</td>
                        <td>{r.dtype.clone()}</td>
                        <td>{m.count.to_string()}</td>
                        <td>{m.min.map(short)}</td>
                        <td>{m.max.map(short)}</td>
                        <td>{m.mean.map(short)}</td>
                        <td>{m.std.map(short)}</td>
                        <td>{m.max_abs.map(short)}</td>
                        <td>{(m.nan + m.pos_inf + m.neg_inf).to_string()}</td>
                        <td class="flags">{flags}</td>
                    </tr>
                }
            })
            .collect_view()
        };
    view! {
        <section class="scan-panel">
            <div class="row">
                <h3>"Model scan"</h3>
                <input type="search" class="scan-filter" placeholder="filter tensors"
                    prop:value=filter_text on:input=move |ev| set_filter_text.set(event_target_value(&ev))/>
                <button on:click=move |_| { let mut u = ctx.url.get_untracked(); u.scan = false; ctx.go(&u, false); }>"close"</button>
            </div>
            {progress}
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            {move || (!groups().is_empty()).then(|| view! {
                <div class="siblings-box">
                    <label>"siblings: "<select class="sibling-group" on:change=move |ev| set_group_pick.set(Some(event_target_value(&ev)))>
                        {move || groups().into_iter().map(|g| {
                            let selected = group.with(|c| c.as_ref().map(|c| c.pattern == g.pattern)) == Some(true);
                            let label = if g.outliers.is_empty() { g.pattern.clone() } else { format!("{} ({} outlier)", g.pattern, g.outliers.len()) };
                            view! { <option value=g.pattern.clone() selected=selected>{label}</option> }
                        }).collect_view()}
                    </select></label>
                    <SiblingChart group/>
                </div>
            })}
            <div class="scan-table-wrap" tabindex="0" role="region" aria-label="scan results">
                <table class="entries scan-table">
                    <thead><tr>{header}</tr></thead>
                    <tbody>{body}</tbody>
                </table>
            </div>
        </section>
    }
}

//! Region operations on the selection: zero its row or column (ablation), swap its row or
//! column with another, copy a region onto it, fill it with seeded noise; and, over the whole
//! tensor, blend toward another tensor or scale every row or column by its own factor. A row
//! set (picked in the projection) gets its own form: zero, scale, noise or blend those rows,
//! as one step.

use super::state::{submit, use_ctx};
use crate::api::{edit, region_edit, row_set_edit};
use leptos::prelude::*;
use tensor_surgeon_core::edit::Op;
use tensor_surgeon_core::region::Region;
use tensor_surgeon_wire::{EditRequest, RegionRequest, RowSetAction, RowSetRequest};

const OPS: [(&str, &str); 9] = [
    ("zero_row", "zero row"),
    ("zero_column", "zero column"),
    ("swap_rows", "swap row with"),
    ("swap_columns", "swap column with"),
    ("copy", "copy from"),
    ("noise", "noise"),
    ("blend", "blend toward"),
    ("scale_rows", "scale rows"),
    ("scale_columns", "scale columns"),
];

fn number(text: &str, what: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| format!("{what}: {text:?} is not a number"))
}

/// `TENSOR[SPEC]` or `TENSOR` -> (tensor, spec).
fn target(text: &str) -> (String, String) {
    let t = text.trim();
    match t.rfind('[') {
        Some(open) if t.ends_with(']') => {
            (t[..open].to_string(), t[open + 1..t.len() - 1].to_string())
        }
        _ => (t.to_string(), String::new()),
    }
}

/// What the form asks for, given the selected cell's full index and the selection's spec.
enum Request {
    Edit(EditRequest),
    Region(RegionRequest),
}

fn build(
    kind: &str,
    a: &str,
    b: &str,
    tensor: &str,
    index: &[u64],
    spec: &str,
) -> Result<Request, String> {
    let row = index.first().copied().unwrap_or(0);
    let col = index.last().copied().unwrap_or(0);
    let line = |columns: bool| {
        if columns {
            let mut dims = vec![":".to_string(); index.len().saturating_sub(1)];
            dims.push(col.to_string());
            dims.join(",")
        } else {
            row.to_string()
        }
    };
    let region = |spec: String, region: Region| {
        Ok(Request::Region(RegionRequest {
            tensor: tensor.to_string(),
            spec,
            region,
            saturate: false,
            round: false,
        }))
    };
    let index_of = |text: &str| {
        text.trim()
            .parse::<u64>()
            .map_err(|_| format!("{text:?} is not a row or column index"))
    };
    let factors = |text: &str| {
        text.split(',')
            .map(|f| number(f, "factor"))
            .collect::<Result<Vec<f64>, String>>()
    };
    match kind {
        "zero_row" | "zero_column" => Ok(Request::Edit(EditRequest {
            tensor: tensor.to_string(),
            spec: line(kind == "zero_column"),
            op: Op::Zero,
            saturate: false,
            round: false,
        })),
        "swap_rows" => region(
            String::new(),
            Region::SwapRows {
                a: row,
                b: index_of(a)?,
            },
        ),
        "swap_columns" => region(
            String::new(),
            Region::SwapColumns {
                a: col,
                b: index_of(a)?,
            },
        ),
        "copy" => {
            let (from, from_spec) = target(a);
            if from.is_empty() {
                return Err("copy from: write TENSOR[SPEC]".into());
            }
            region(spec.to_string(), Region::Copy { from, from_spec })
        }
        "noise" => region(
            spec.to_string(),
            Region::Noise {
                std: number(a, "std")?,
                seed: if b.trim().is_empty() { 0 } else { index_of(b)? },
            },
        ),
        "blend" => region(
            String::new(),
            Region::Blend {
                with: a.trim().to_string(),
                alpha: number(b, "alpha")?,
            },
        ),
        "scale_rows" => region(
            String::new(),
            Region::ScaleRows {
                factors: factors(a)?,
            },
        ),
        _ => region(
            String::new(),
            Region::ScaleColumns {
                factors: factors(a)?,
            },
        ),
    }
}

/// Rows of a set listed in the form.
const SET_LISTED: usize = 50;

fn row_set_action(kind: &str, a: &str, b: &str) -> Result<RowSetAction, String> {
    match kind {
        "zero" => Ok(RowSetAction::Zero),
        "scale" => Ok(RowSetAction::Scale {
            factor: number(a, "factor")?,
        }),
        "noise" => Ok(RowSetAction::Noise {
            std: number(a, "std")?,
            seed: if b.trim().is_empty() {
                0
            } else {
                b.trim()
                    .parse()
                    .map_err(|_| format!("seed: {b:?} is not a whole number"))?
            },
        }),
        _ => {
            if a.trim().is_empty() {
                return Err("blend toward: name a tensor of the same shape".into());
            }
            Ok(RowSetAction::Blend {
                with: a.trim().to_string(),
                alpha: number(b, "alpha")?,
            })
        }
    }
}

/// The row set handed over from the projection, and what to do to it.
#[component]
fn RowSetForm() -> impl IntoView {
    let ctx = use_ctx();
    let (kind, set_kind) = signal("zero".to_string());
    let (a, set_a) = signal(String::new());
    let (b, set_b) = signal(String::new());
    let (error, set_error) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    let apply = move || {
        let Some(set) = ctx.row_set.get_untracked() else {
            return;
        };
        let action = match row_set_action(
            &kind.get_untracked(),
            &a.get_untracked(),
            &b.get_untracked(),
        ) {
            Ok(x) => x,
            Err(e) => {
                set_error.set(Some(e));
                return;
            }
        };
        submit(
            ctx,
            Some(set_busy),
            set_error,
            row_set_edit(RowSetRequest {
                tensor: set.tensor,
                columns: set.columns,
                lines: set.lines,
                action,
            }),
        );
    };
    let hint = move || match kind.get().as_str() {
        "scale" => ("factor", ""),
        "noise" => ("std", "seed"),
        "blend" => ("other tensor", "alpha"),
        _ => ("", ""),
    };
    move || {
        ctx.row_set.get().map(|set| {
            let what = if set.columns { "columns" } else { "rows" };
            let listed: Vec<String> = set
                .lines
                .iter()
                .zip(set.labels.iter().map(Some).chain(std::iter::repeat(None)))
                .take(SET_LISTED)
                .map(|(l, t)| format!("{l:>6} {}", t.filter(|t| !t.is_empty()).map(|t| format!("{t:?}")).unwrap_or_default()))
                .collect();
            view! {
                <div class="row-set">
                    <div class="row"><strong class="row-set-title">{format!("{} {what} of {} from the projection", set.lines.len(), set.tensor)}</strong>
                        <button class="row-set-clear" on:click=move |_| ctx.row_set.set(None)>"clear"</button></div>
                    <ul class="row-set-lines">{listed.into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}</ul>
                    <form on:submit=move |ev| { ev.prevent_default(); apply(); }>
                        <select class="row-set-op" aria-label="row set operation" on:change=move |ev| set_kind.set(event_target_value(&ev))>
                            <option value="zero" selected=true>{format!("zero these {what}")}</option>
                            <option value="scale">"scale by"</option>
                            <option value="noise">"noise"</option>
                            <option value="blend">"blend toward"</option>
                        </select>
                        {move || (!hint().0.is_empty()).then(|| view! {
                            <input aria-label="row set argument" placeholder=hint().0 prop:value=a on:input=move |ev| set_a.set(event_target_value(&ev))/>
                        })}
                        {move || (!hint().1.is_empty()).then(|| view! {
                            <input aria-label="row set second argument" placeholder=hint().1 prop:value=b on:input=move |ev| set_b.set(event_target_value(&ev))/>
                        })}
                        <button type="submit" class="row-set-apply" disabled=move || busy.get()>"apply"</button>
                    </form>
                    {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
                </div>
            }
        })
    }
}

#[component]
pub fn RegionPanel() -> impl IntoView {
    let ctx = use_ctx();
    let (kind, set_kind) = signal("swap_rows".to_string());
    let (a, set_a) = signal(String::new());
    let (b, set_b) = signal(String::new());
    let (error, set_error) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    let selected = move || ctx.selection_in_view();
    let apply = move || {
        let Some(sel) = selected() else {
            set_error.set(Some("select a cell or a rectangle first".into()));
            return;
        };
        let index = sel.view.coords(sel.rows.0, sel.cols.0);
        let spec = sel.view.rect_spec(sel.rows, sel.cols).to_string();
        let req = match build(
            &kind.get_untracked(),
            &a.get_untracked(),
            &b.get_untracked(),
            &sel.tensor,
            &index,
            &spec,
        ) {
            Ok(r) => r,
            Err(e) => {
                set_error.set(Some(e));
                return;
            }
        };
        submit(ctx, Some(set_busy), set_error, async move {
            match req {
                Request::Edit(r) => edit(r).await,
                Request::Region(r) => region_edit(r).await,
            }
        });
    };
    let hint = move || match kind.get().as_str() {
        "zero_row" => ("", "", "zeroes the selected cell's row (first dim)"),
        "zero_column" => ("", "", "zeroes the selected cell's column (last dim)"),
        "swap_rows" => (
            "other row",
            "",
            "swaps the selected cell's row with another",
        ),
        "swap_columns" => (
            "other column",
            "",
            "swaps the selected cell's column with another",
        ),
        "copy" => (
            "TENSOR[SPEC]",
            "",
            "copies a region of the same shape onto the selection (dtype converted)",
        ),
        "noise" => (
            "std",
            "seed",
            "fills the selection with seeded normal noise",
        ),
        "blend" => (
            "other tensor",
            "alpha",
            "(1 - alpha) x + alpha other, over the whole tensor",
        ),
        "scale_rows" => ("f0,f1,…", "", "multiplies row i of the tensor by factor i"),
        _ => (
            "f0,f1,…",
            "",
            "multiplies column j of the tensor by factor j",
        ),
    };
    view! {
        <section class="region-panel">
            <RowSetForm/>
            <h3>"Region"</h3>
            <form on:submit=move |ev| { ev.prevent_default(); apply(); }>
                <select aria-label="region op" on:change=move |ev| set_kind.set(event_target_value(&ev))>
                    {OPS.into_iter().map(|(k, label)| view! { <option value=k selected=move || kind.get() == k>{label}</option> }).collect_view()}
                </select>
                {move || (!hint().0.is_empty()).then(|| view! {
                    <input aria-label="region argument" placeholder=hint().0 prop:value=a on:input=move |ev| set_a.set(event_target_value(&ev))/>
                })}
                {move || (!hint().1.is_empty()).then(|| view! {
                    <input aria-label="region second argument" placeholder=hint().1 prop:value=b on:input=move |ev| set_b.set(event_target_value(&ev))/>
                })}
                <button type="submit" class="region-apply" title="apply the region operation" disabled=move || busy.get()>"run"</button>
            </form>
            <p class="muted">{move || hint().2}</p>
            {move || error.get().map(|e| view! { <p class="error region-error">{e}</p> })}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_from_the_form() {
        let Ok(Request::Region(r)) = build("swap_rows", "9", "", "w", &[3, 4], "3,4") else {
            panic!("a region request")
        };
        assert_eq!(r.region, Region::SwapRows { a: 3, b: 9 });
        let Ok(Request::Edit(e)) = build("zero_column", "", "", "w", &[1, 2, 5], "1,2,5") else {
            panic!("an edit")
        };
        assert_eq!(e.spec, ":,:,5");
        assert!(build("noise", "x", "", "w", &[0, 0], "0,0").is_err());
        let Ok(Request::Region(r)) = build("copy", "e[2, 0:4]", "", "w", &[0, 0], "0,0:4") else {
            panic!("a region request")
        };
        assert_eq!(
            r.region,
            Region::Copy {
                from: "e".into(),
                from_spec: "2, 0:4".into()
            }
        );
    }
}

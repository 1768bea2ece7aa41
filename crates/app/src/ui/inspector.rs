//! The cell inspector: exact value, the bytes as stored, and for floats the bit fields, each
//! bit a button that flips it (an ordinary hex edit).

use super::state::{message, submit, use_ctx};
use crate::api::{edit, get_cell};
use leptos::prelude::*;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::edit::Op;
use tensor_surgeon_wire::EditRequest;

/// Bits of a little-endian element, most significant first.
fn bits_msb_first(bytes: &[u8], nbits: usize) -> Vec<bool> {
    (0..nbits)
        .rev()
        .map(|i| bytes.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1))
        .collect()
}

/// `bytes` with bit `i` (counted from the least significant) flipped.
fn flip(bytes: &[u8], i: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if let Some(b) = out.get_mut(i / 8) {
        *b ^= 1 << (i % 8);
    }
    out
}

#[component]
pub fn Inspector() -> impl IntoView {
    let ctx = use_ctx();
    let (error, set_error) = signal(None::<String>);
    let target = Memo::new(move |_| {
        let s = ctx.selection.get()?;
        (s.is_cell() && Some(&s.view) == ctx.view.get().as_ref())
            .then(|| (s.tensor.clone(), s.view.coords(s.rows.0, s.cols.0)))
    });
    let cell = Resource::new(
        move || (target.get(), ctx.version.get()),
        |(t, _)| async move {
            match t {
                Some((tensor, index)) => Some(
                    get_cell(
                        tensor,
                        index
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                    )
                    .await,
                ),
                None => None,
            }
        },
    );
    let flip_bit = move |tensor: String, index: Vec<u64>, hex_now: String, bit: usize| {
        let Ok(bytes) = hex::decode(&hex_now) else {
            return;
        };
        let spec = index
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let req = EditRequest {
            tensor,
            spec,
            op: Op::Hex {
                hex: hex::encode(flip(&bytes, bit)),
            },
            saturate: false,
            round: false,
        };
        submit(ctx, None, set_error, edit(req));
    };
    view! {
        <section class="inspector">
            <h3>"Cell"</h3>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    match cell.await {
                        None => view! { <p class="muted">"Click a cell to inspect it."</p> }.into_any(),
                        Some(Err(e)) => view! { <p class="error">{message(&e)}</p> }.into_any(),
                        Some(Ok(c)) if c.block.is_some() => block_cell(&c).into_any(),
                        Some(Ok(c)) => {
                            let dt = dtype::parse_name(&c.dtype);
                            let fields = dt.and_then(dtype::float_fields);
                            let nbits = dt.map(dtype::bits).unwrap_or(0);
                            let bytes = hex::decode(&c.hex).unwrap_or_default();
                            let bits = bits_msb_first(&bytes, nbits);
                            let bit_view = fields.map(|(s, e, _)| {
                                let (tensor, index, hex_now) = (c.tensor.clone(), c.index.clone(), c.hex.clone());
                                view! {
                                    <div class="bits" aria-label="bit fields">
                                        {bits.iter().enumerate().map(|(pos, &on)| {
                                            let lsb = nbits - 1 - pos;
                                            let field = if (pos as u32) < s { "sign" } else if (pos as u32) < s + e { "exp" } else { "man" };
                                            let (tensor, index, hex_now) = (tensor.clone(), index.clone(), hex_now.clone());
                                            view! {
                                                <button class=format!("bit {field}") data-bit=lsb.to_string() title=format!("{field} bit {lsb}: click to flip")
                                                    on:click=move |_| flip_bit(tensor.clone(), index.clone(), hex_now.clone(), lsb)>
                                                    {if on { "1" } else { "0" }}
                                                </button>
                                            }
                                        }).collect_view()}
                                    </div>
                                    <div class="muted legend">"sign · exponent · mantissa"</div>
                                }
                            });
                            view! {
                                <table class="kv"><tbody>
                                    <tr><td>"index"</td><td class="cell-index">{format!("{:?}", c.index)}</td></tr>
                                    <tr><td>"value"</td><td class="cell-value">{c.value.clone()}</td></tr>
                                    {c.token.clone().map(|t| view! { <tr><td>"token"</td><td class="cell-token">{format!("{t:?}")}</td></tr> })}
                                    <tr><td>"bytes"</td><td class="cell-hex"><code>{c.hex.clone()}</code> <span class="muted">{format!(" {} little-endian", c.dtype)}</span></td></tr>
                                </tbody></table>
                                {bit_view}
                            }.into_any()
                        }
                    }
                })}
            </Transition>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </section>
    }
}

/// A cell of a quantized tensor: its decoded value, and the block it is decoded from (the
/// element's code, its scale and min, the block's bytes). Its bits are the block's, not an
/// element's: no bit view.
fn block_cell(c: &tensor_surgeon_wire::CellData) -> impl IntoView {
    let b = c.block.clone().expect("a quantized cell");
    let end = b.offset + b.hex.len() as u64 / 2;
    let code = b.code_text();
    view! {
        <table class="kv"><tbody>
            <tr><td>"index"</td><td class="cell-index">{format!("{:?}", c.index)}</td></tr>
            <tr><td>"value"</td><td class="cell-value">{c.value.clone()}</td></tr>
            {c.token.clone().map(|t| view! { <tr><td>"token"</td><td class="cell-token">{format!("{t:?}")}</td></tr> })}
            <tr><td>"block"</td><td class="cell-block">{format!("{} block {}, element {} (bytes {}..{end} of the tensor)", b.ggml_type, b.index, b.element, b.offset)}</td></tr>
            {code.map(|code| view! { <tr><td>"code"</td><td class="cell-code" title="value = scale × quant − min">{code}</td></tr> })}
            {b.sub_block.map(|s| view! { <tr><td>"sub-block"</td><td>{s.to_string()}</td></tr> })}
            <tr><td>"block bytes"</td><td class="cell-hex block-hex"><code>{b.hex.clone()}</code></td></tr>
        </tbody></table>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_order_and_flip() {
        // 1.0f32 = 0x3f800000: sign 0, exponent 0111_1111, mantissa 0.
        let one = 1f32.to_le_bytes();
        let bits = bits_msb_first(&one, 32);
        assert!(
            !bits[0] && !bits[1] && bits[2..9].iter().all(|b| *b) && bits[9..].iter().all(|b| !*b)
        );
        assert_eq!(
            f32::from_le_bytes(flip(&one, 31).try_into().unwrap()),
            -1.0,
            "flipping the sign bit"
        );
        assert_eq!(
            f32::from_le_bytes(flip(&one, 23).try_into().unwrap()),
            0.5,
            "lowest exponent bit"
        );
    }
}

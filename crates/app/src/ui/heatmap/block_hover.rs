//! The hovered element's block, for a quantized tensor: its type and number, the element's
//! code (`scale × quant − min`) and the block's bytes, asked of the server when the pointer
//! comes to rest on another exact cell.

use crate::api::get_cell;
use leptos::prelude::*;

/// `cell`: the tensor and index of the hovered exact cell of a quantized tensor (`None`
/// otherwise).
#[component]
pub(super) fn BlockHover(cell: Memo<Option<(String, Vec<u64>)>>) -> impl IntoView {
    let block = Resource::new(
        move || cell.get(),
        |cell| async move {
            let (tensor, index) = cell?;
            let index = index
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            get_cell(tensor, index).await.ok()?.block
        },
    );
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                block.await.map(|b| {
                    let code = b.code_text().map(|c| format!(" = {c}")).unwrap_or_default();
                    // K-quants scale each sub-block of a super-block on its own.
                    let sub = b
                        .sub_block
                        .filter(|_| b.ggml_type.ends_with("_K"))
                        .map(|s| format!(", sub-block {s}"))
                        .unwrap_or_default();
                    view! {
                        <div class="hover-block muted">
                            {format!("{} block {}, element {}{sub}{code}; bytes ", b.ggml_type, b.index, b.element)}
                            <code class="hover-block-hex">{b.hex.clone()}</code>
                        </div>
                    }
                })
            })}
        </Transition>
    }
}

//! `slice`: values of a numpy-style slice.

use super::print_json;
use serde_json::json;
use std::path::Path;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::gguf::GgmlType;
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_core::slice::Selection;
use tensor_surgeon_engine::{Error, Result};
use tensor_surgeon_store::model::{select, Shard};
use tensor_surgeon_store::Model;

pub fn run(path: &Path, tensor: &str, spec: &str, as_json: bool, max_elements: u64) -> Result<()> {
    let model = Model::open(path)?;
    let (shard, info) = model.get(tensor)?;
    let selection = select(tensor, spec, &info.shape)?;
    selection
        .check_cap(max_elements)
        .map_err(|source| Error::Slice {
            tensor: tensor.to_string(),
            source,
        })?;
    let base = shard.selection_region(info, &selection)?;
    let bytes = tensor_surgeon_core::source::extract(info.dtype, &info.shape, &selection, &base);
    let width = dtype::element_bytes(info.dtype);
    let shape = selection.out_shape();
    let type_name = model.type_name(shard, info);
    if as_json {
        let values: Vec<_> = bytes
            .chunks(width.max(1))
            .map(|b| dtype::to_json(dtype::decode(info.dtype, b)))
            .collect();
        let mut out = json!({ "dtype": type_name, "shape": shape, "values": values });
        match shard.quantized(info) {
            // The values are decoded from blocks: the bytes are the blocks they come from.
            Some(ty) => {
                let (blocks, all) = blocks_json(shard, info, ty, &selection)?;
                out["blocks"] = blocks;
                if !all {
                    out["blocks_truncated"] = json!(true);
                }
            }
            None => out["hex"] = bytes.chunks(width.max(1)).map(hex::encode).collect(),
        }
        print_json(&out);
        return Ok(());
    }
    println!("{tensor}[{spec}]: {type_name} {shape:?}");
    let cols = shape.last().copied().unwrap_or(1).max(1) as usize;
    let cells: Vec<String> = bytes
        .chunks(width.max(1))
        .map(|b| dtype::format_element(info.dtype, b))
        .collect();
    if cells.is_empty() {
        println!("(empty)");
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    for row in cells.chunks(cols) {
        t.add_row(row.to_vec());
    }
    println!("{t}");
    Ok(())
}

/// Most blocks listed for one slice.
const MAX_BLOCKS: usize = 4096;

/// The blocks a selection of a quantized tensor reads: `[{"index", "offset", "hex"}]`, the
/// block's number in the tensor, its byte offset in the tensor's data, and its bytes; the
/// first [`MAX_BLOCKS`] of them (`false`: there were more).
fn blocks_json(
    shard: &Shard,
    info: &TensorInfo,
    ty: GgmlType,
    selection: &Selection,
) -> Result<(serde_json::Value, bool)> {
    let row_len = info.shape.last().copied().unwrap_or(1);
    let per_row = row_len / ty.block_elements() as u64;
    let mut blocks = std::collections::BTreeSet::new();
    let mut all = true;
    for flat in selection.element_indices(&info.shape) {
        blocks.insert(flat / row_len * per_row + flat % row_len / ty.block_elements() as u64);
        if blocks.len() > MAX_BLOCKS {
            blocks.pop_last();
            all = false;
            break;
        }
    }
    let start = shard.header.data_start() + info.data_offsets.0;
    let size = ty.block_bytes() as u64;
    let mut out = Vec::with_capacity(blocks.len());
    for b in blocks {
        let at = b * size;
        let raw = shard.read_raw(start + at..start + at + size, None)?;
        out.push(json!({ "index": b, "offset": at, "hex": hex::encode(&*raw) }));
    }
    Ok((serde_json::Value::Array(out), all))
}

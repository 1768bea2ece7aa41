//! `slice`: values of a numpy-style slice.

use super::print_json;
use serde_json::json;
use std::path::Path;
use tensor_surgeon_core::dtype;
use tensor_surgeon_engine::{Error, Result};
use tensor_surgeon_store::model::select;
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
    if as_json {
        let values: Vec<_> = bytes
            .chunks(width.max(1))
            .map(|b| dtype::to_json(dtype::decode(info.dtype, b)))
            .collect();
        let hex: Vec<_> = bytes.chunks(width.max(1)).map(hex::encode).collect();
        print_json(
            &json!({ "dtype": dtype::name(info.dtype), "shape": shape, "values": values, "hex": hex }),
        );
        return Ok(());
    }
    println!("{tensor}[{spec}]: {} {shape:?}", dtype::name(info.dtype));
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

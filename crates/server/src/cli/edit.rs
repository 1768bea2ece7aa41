//! `edit`: value and byte edits recorded into a patch file.

use super::FormatArg;
use clap::{ArgMatches, Args};
use std::path::PathBuf;
use tensor_surgeon_core::dtype::EncodeOptions;
use tensor_surgeon_core::edit::Op;
use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::patch::{MetadataEntry, Origin, Patch};
use tensor_surgeon_core::region::Region;
use tensor_surgeon_engine::blocks;
use tensor_surgeon_engine::{Error, Result};
use tensor_surgeon_store::model::select;
use tensor_surgeon_store::patch_files::{self, Format};
use tensor_surgeon_store::{Model, StoreError};
use tensor_surgeon_wire::RegionRequest;

/// Edits are written as `TENSOR[SPEC]=VALUE`, SPEC numpy-style (`3,4`, `0:2,:`); the patch
/// records the changed bytes. Several edits apply in the order given.
#[derive(Args, Debug)]
pub struct EditArgs {
    model: PathBuf,
    /// The patch file to create or extend.
    #[arg(long)]
    patch: PathBuf,
    /// Set elements: `TENSOR[i,j]=VALUE` (VALUE may be nan, inf, -inf).
    #[arg(long, allow_hyphen_values = true)]
    set: Vec<String>,
    /// Add to elements: `TENSOR[SPEC]=VALUE`.
    #[arg(long, allow_hyphen_values = true)]
    add: Vec<String>,
    /// Multiply elements: `TENSOR[SPEC]=FACTOR`.
    #[arg(long, allow_hyphen_values = true)]
    scale: Vec<String>,
    /// Zero elements: `TENSOR[SPEC]`.
    #[arg(long, allow_hyphen_values = true)]
    zero: Vec<String>,
    /// Clamp elements: `TENSOR[SPEC]=MIN:MAX` (either side may be empty).
    #[arg(long, allow_hyphen_values = true)]
    clamp: Vec<String>,
    /// Replace stored bytes: `TENSOR[i,j]=HEX`, one element's bytes, little-endian as stored.
    #[arg(long, allow_hyphen_values = true)]
    hex: Vec<String>,
    /// Copy a region: `DST[SPEC]=SRC[SPEC]` (same or another tensor; same shape, size-1 dims
    /// aside; values converted between dtypes).
    #[arg(long, allow_hyphen_values = true)]
    copy: Vec<String>,
    /// Swap two rows (indices of the first dim): `TENSOR=A,B`.
    #[arg(long, allow_hyphen_values = true)]
    swap_rows: Vec<String>,
    /// Swap two columns (indices of the last dim): `TENSOR=A,B`.
    #[arg(long, allow_hyphen_values = true)]
    swap_columns: Vec<String>,
    /// Replace with seeded normal noise: `TENSOR[SPEC]=STD` (seed from --seed).
    #[arg(long, allow_hyphen_values = true)]
    noise: Vec<String>,
    /// The seed of --noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Blend toward another tensor of the same shape: `TENSOR[SPEC]=OTHER:ALPHA` gives
    /// `(1 - ALPHA) * TENSOR + ALPHA * OTHER` over the selection.
    #[arg(long, allow_hyphen_values = true)]
    blend: Vec<String>,
    /// Scale each row by its factor: `TENSOR=F0,F1,...` (one per row) or `TENSOR=@VECTOR`
    /// (the values of a 1-D tensor).
    #[arg(long, allow_hyphen_values = true)]
    scale_rows: Vec<String>,
    /// Scale each column by its factor: `TENSOR=F0,F1,...` or `TENSOR=@VECTOR`.
    #[arg(long, allow_hyphen_values = true)]
    scale_columns: Vec<String>,
    /// Set a GGUF metadata value: `KEY=VALUE` in the key's own type (a new key is a string),
    /// or `KEY=@FILE` for a string read from a file (a chat template). The header is written
    /// again when the patch is baked.
    #[arg(long, allow_hyphen_values = true)]
    metadata: Vec<String>,
    /// Remove a GGUF metadata key (applied when the patch is baked).
    #[arg(long)]
    remove_metadata: Vec<String>,
    /// Clamp values the dtype cannot hold to its range instead of failing.
    #[arg(long)]
    saturate: bool,
    /// Round non-integers for integer dtypes instead of failing.
    #[arg(long)]
    round: bool,
    /// A note to keep in the patch.
    #[arg(long)]
    note: Option<String>,
    /// The form to write: JSON, compact (binary, zstd), or auto (compact above ~1 MB of JSON).
    #[arg(long, value_enum, default_value_t)]
    format: FormatArg,
}

/// `KEY=VALUE` or `KEY=@FILE` -> (key, the value's text).
fn metadata_change(text: &str) -> Result<(String, String)> {
    let (key, value) = text.split_once('=').ok_or_else(|| {
        Error::Usage(format!(
            "cannot read {text:?}: write KEY=VALUE or KEY=@FILE"
        ))
    })?;
    let value = match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(Error::io(path))?,
        None => value.to_string(),
    };
    Ok((key.trim().to_string(), value))
}

/// Records a change of GGUF metadata `key` (to the value `text` reads as in the key's type;
/// `None`: removed) in `patch`, against the base's value. Says what changed.
fn edit_metadata(
    model: &Model,
    patch: &mut Patch,
    key: &str,
    text: Option<&str>,
) -> Result<String> {
    use tensor_surgeon_core::gguf::{write, ValueType};
    let header = model.gguf().ok_or_else(|| {
        Error::Usage(format!(
            "{key}: metadata edits are for GGUF files; {} is not one",
            model.path.display()
        ))
    })?;
    let base = header.get(key);
    let new = match text {
        None if base.is_none() => {
            return Err(Error::Usage(format!(
                "{key}: the model has no such metadata key"
            )))
        }
        None => None,
        Some(t) => {
            let ty = base.map_or(ValueType::String, |v| v.value_type());
            Some(write::value_from_text(key, ty, t).map_err(StoreError::from)?)
        }
    };
    let entry = MetadataEntry::new(key, base, new.as_ref(), Some(Origin::new("cli")))
        .map_err(StoreError::from)?;
    patch.metadata.retain(|e| e.key != key);
    let show = |v: Option<&tensor_surgeon_core::gguf::Value>| {
        v.map_or("(absent)".to_string(), |v| v.to_string())
    };
    let line = format!("metadata {key}: {} -> {}", show(base), show(new.as_ref()));
    if entry.original != entry.patched {
        patch.metadata.push(entry);
    }
    Ok(line)
}

/// `TENSOR[SPEC]=VALUE` -> (tensor, spec, value).
fn split_target(text: &str, needs_value: bool) -> Result<(String, String, Option<String>)> {
    let bad = || {
        Error::Usage(format!(
            "cannot read {text:?}: write TENSOR[SPEC]{}",
            if needs_value { "=VALUE" } else { "" }
        ))
    };
    let (target, value) = match text.find("]=") {
        Some(i) => (&text[..=i], Some(text[i + 2..].to_string())),
        None if needs_value => match text.rsplit_once('=') {
            Some((t, v)) if !t.contains('[') => (t, Some(v.to_string())),
            _ => return Err(bad()),
        },
        None => (text, None),
    };
    if needs_value != value.is_some() {
        return Err(bad());
    }
    let (name, spec) = match target.rfind('[') {
        Some(open) if target.ends_with(']') => {
            (&target[..open], &target[open + 1..target.len() - 1])
        }
        _ => (target, ""),
    };
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name.to_string(), spec.to_string(), value))
}

/// The operation of an edit flag: `--clamp` takes `MIN:MAX`, the others their one value.
fn parse_op(kind: &str, value: Option<String>) -> Result<Op> {
    let value = value.unwrap_or_default();
    let (first, second) = if kind == "clamp" {
        value
            .split_once(':')
            .ok_or_else(|| Error::Usage(format!("clamp wants MIN:MAX, got {value:?}")))?
    } else {
        (value.as_str(), "")
    };
    Ok(Op::parse(kind, first, second)?)
}

/// The region operation of a region flag (`None` for the element-wise ones).
fn parse_region(
    kind: &str,
    value: Option<&str>,
    args: &EditArgs,
    model: &Model,
    overlay: &Overlay,
) -> Result<Option<Region>> {
    let value = value.unwrap_or_default().trim();
    let float = |v: &str| {
        v.trim()
            .parse::<f64>()
            .map_err(|_| Error::Usage(format!("{v:?} is not a number")))
    };
    let pair = || -> Result<(u64, u64)> {
        let (a, b) = value.split_once(',').ok_or_else(|| {
            Error::Usage(format!(
                "{} wants TENSOR=A,B, got {value:?}",
                kind.replace('_', "-")
            ))
        })?;
        let index = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::Usage(format!("{v:?} is not an index")))
        };
        Ok((index(a)?, index(b)?))
    };
    let factors = || -> Result<Vec<f64>> {
        match value.strip_prefix('@') {
            Some(vector) => vector_values(model, overlay, vector),
            None => value.split(',').map(float).collect(),
        }
    };
    Ok(Some(match kind {
        "copy" => {
            let (from, from_spec, _) = split_target(value, false)?;
            Region::Copy { from, from_spec }
        }
        "swap_rows" => {
            let (a, b) = pair()?;
            Region::SwapRows { a, b }
        }
        "swap_columns" => {
            let (a, b) = pair()?;
            Region::SwapColumns { a, b }
        }
        "noise" => Region::Noise {
            std: float(value)?,
            seed: args.seed,
        },
        "blend" => {
            let (with, alpha) = value.rsplit_once(':').ok_or_else(|| {
                Error::Usage(format!(
                    "blend wants TENSOR[SPEC]=OTHER:ALPHA, got {value:?}"
                ))
            })?;
            if with.contains('[') {
                return Err(Error::Usage(format!(
                    "blend reads {with} at the target's own selection: write OTHER without [SPEC]"
                )));
            }
            Region::Blend {
                with: with.trim().to_string(),
                alpha: float(alpha)?,
            }
        }
        "scale_rows" => Region::ScaleRows {
            factors: factors()?,
        },
        "scale_columns" => Region::ScaleColumns {
            factors: factors()?,
        },
        _ => return Ok(None),
    }))
}

/// The values of a 1-D tensor (with the edits so far), as f64.
fn vector_values(model: &Model, overlay: &Overlay, name: &str) -> Result<Vec<f64>> {
    let (shard, info) = model.get(name)?;
    if info.shape.len() != 1 || tensor_surgeon_core::dtype::is_packed(info.dtype) {
        return Err(Error::Usage(format!(
            "{name} has shape {:?} and dtype {}: factors come from a 1-D tensor of whole bytes",
            info.shape,
            tensor_surgeon_core::dtype::name(info.dtype)
        )));
    }
    let mut bytes = vec![0u8; info.byte_len() as usize];
    let base = shard.data(info)?;
    tensor_surgeon_core::source::ByteSource::read(&overlay.view(info, &*base), 0, &mut bytes);
    let mut out = Vec::with_capacity(info.shape[0] as usize);
    tensor_surgeon_core::dtype::decode_f64_into(info.dtype, &bytes, &mut out);
    Ok(out)
}

pub fn run(args: EditArgs, matches: &ArgMatches) -> Result<()> {
    let model = Model::open(&args.model)?;
    let options = EncodeOptions {
        saturate: args.saturate,
        round: args.round,
    };
    // The edits in command-line order.
    let mut ops: Vec<(usize, &str, &String)> = Vec::new();
    for (kind, values) in [
        ("set", &args.set),
        ("add", &args.add),
        ("scale", &args.scale),
        ("zero", &args.zero),
        ("clamp", &args.clamp),
        ("hex", &args.hex),
        ("copy", &args.copy),
        ("swap_rows", &args.swap_rows),
        ("swap_columns", &args.swap_columns),
        ("noise", &args.noise),
        ("blend", &args.blend),
        ("scale_rows", &args.scale_rows),
        ("scale_columns", &args.scale_columns),
    ] {
        let indices: Vec<usize> = matches
            .indices_of(kind)
            .map(Iterator::collect)
            .unwrap_or_default();
        for (i, v) in values.iter().enumerate() {
            ops.push((indices.get(i).copied().unwrap_or(usize::MAX), kind, v));
        }
    }
    if ops.is_empty() && args.metadata.is_empty() && args.remove_metadata.is_empty() {
        return Err(Error::Usage(
            "no edit given: use --set, --add, --scale, --zero, --clamp, --hex, --copy, \
             --swap-rows, --swap-columns, --noise, --blend, --scale-rows, --scale-columns, \
             --metadata or --remove-metadata"
                .into(),
        ));
    }
    ops.sort_by_key(|o| o.0);

    let mut patch = if args.patch.exists() {
        tensor_surgeon_engine::adapter::load_for(&args.patch, &model)?
    } else {
        patch_files::new_for(&model, "")
    };
    if let Some(note) = &args.note {
        patch.note = if patch.note.is_empty() {
            note.clone()
        } else {
            format!("{}\n{note}", patch.note)
        };
    }
    let mut total = 0usize;
    for (_, kind, text) in ops {
        let (name, spec, value) = split_target(text, kind != "zero")?;
        model.refuse_derived(&name)?;
        let overlay = patch.to_overlay();
        // Values of a quantized tensor are quantized again into its blocks; its hex is a
        // whole block's bytes.
        let (changes, requantized) = if let Some(region) =
            parse_region(kind, value.as_deref(), &args, &model, &overlay)?
        {
            let req = RegionRequest {
                tensor: name.clone(),
                spec: spec.clone(),
                region,
                saturate: args.saturate,
                round: args.round,
            };
            let planned =
                tensor_surgeon_engine::workbench::region::plan_region_on(&model, &overlay, &req)?;
            blocks::to_stored(&model, &overlay, planned)?
        } else {
            let op = parse_op(kind, value)?;
            let (_, info) = model.get(&name)?;
            let selection = select(&name, &spec, &info.shape)?;
            blocks::plan(&model, &overlay, info, &selection, &op, options)?
        };
        for r in &requantized {
            println!("{}: {}", r.tensor, r.describe());
        }
        total += changes.iter().map(|c| c.after.len()).sum::<usize>();
        // The base bytes recording reads: the patch's and the new changes', whole elements.
        let widen = |offset: u64, len: u64| offset - offset % 8..(offset + len).div_ceil(8) * 8;
        let base = model.based(
            patch
                .entries
                .iter()
                .map(|e| (e.tensor.as_str(), widen(e.offset, e.original.len() as u64)))
                .chain(
                    changes
                        .iter()
                        .map(|c| (c.tensor.as_str(), widen(c.offset, c.after.len() as u64))),
                ),
        )?;
        patch.record(
            &changes,
            &base,
            &tensor_surgeon_core::patch::Origin::new("cli"),
        );
        println!(
            "{} {name}[{spec}]: {} byte(s) changed",
            kind.replace('_', "-"),
            changes.iter().map(|c| c.after.len()).sum::<usize>()
        );
    }
    let changes = args
        .metadata
        .iter()
        .map(|m| metadata_change(m).map(|(k, v)| (k, Some(v))))
        .chain(args.remove_metadata.iter().map(|k| Ok((k.clone(), None))))
        .collect::<Result<Vec<_>>>()?;
    for (key, text) in changes {
        let line = edit_metadata(&model, &mut patch, &key, text.as_deref())?;
        println!("{line}");
    }
    patch.created = patch_files::now();
    let form = patch_files::save(&args.patch, &patch, args.format.into(), Some(&model))?;
    println!(
        "{}: {}{} ({total} byte(s) changed by this edit)",
        args.patch.display(),
        super::patch_cmds::plural(
            patch.entries.len() + patch.low_rank.len() + patch.metadata.len(),
            "entry",
            "entries"
        ),
        if form == Format::Compact {
            " in compact form"
        } else {
            ""
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        type Row<'a> = (&'a str, bool, (&'a str, &'a str, Option<&'a str>));
        let rows: &[Row] = &[
            ("w[1,2]=3.5", true, ("w", "1,2", Some("3.5"))),
            (
                "model.x.weight[0:2,:]=-1",
                true,
                ("model.x.weight", "0:2,:", Some("-1")),
            ),
            ("w=2", true, ("w", "", Some("2"))),
            ("w[3]", false, ("w", "3", None)),
        ];
        for (text, needs, (n, s, v)) in rows {
            let got = split_target(text, *needs).expect(text);
            assert_eq!(
                got,
                (n.to_string(), s.to_string(), v.map(String::from)),
                "{text}"
            );
        }
        assert!(split_target("w[1]", true).is_err());
        assert!(split_target("[1]=2", true).is_err());
    }
}

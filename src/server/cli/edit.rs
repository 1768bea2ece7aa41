//! `edit`: value and byte edits recorded into a patch file.

use crate::dtype::EncodeOptions;
use crate::edit::{self, Op};
use crate::server::patches::{self, Format};
use crate::server::{Error, Model, Result};
use crate::slice::SliceSpec;
use clap::{ArgMatches, Args};
use std::path::PathBuf;

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
    format: Format,
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

fn parse_op(kind: &str, value: Option<String>) -> Result<Op> {
    let value = value.unwrap_or_default();
    let float = |v: &str| {
        v.trim()
            .parse::<f64>()
            .map_err(|_| Error::Usage(format!("{v:?} is not a number")))
    };
    Ok(match kind {
        "set" => Op::Set { value },
        "add" => Op::Add { value },
        "scale" => Op::Scale {
            factor: float(&value)?,
        },
        "zero" => Op::Zero,
        "hex" => Op::Hex { hex: value },
        _ => {
            let (lo, hi) = value
                .split_once(':')
                .ok_or_else(|| Error::Usage(format!("clamp wants MIN:MAX, got {value:?}")))?;
            let bound = |s: &str| {
                if s.trim().is_empty() {
                    Ok(None)
                } else {
                    float(s).map(Some)
                }
            };
            Op::Clamp {
                min: bound(lo)?,
                max: bound(hi)?,
            }
        }
    })
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
    ] {
        let indices: Vec<usize> = matches
            .indices_of(kind)
            .map(Iterator::collect)
            .unwrap_or_default();
        for (i, v) in values.iter().enumerate() {
            ops.push((indices.get(i).copied().unwrap_or(usize::MAX), kind, v));
        }
    }
    if ops.is_empty() {
        return Err(Error::Usage(
            "no edit given: use --set, --add, --scale, --zero, --clamp or --hex".into(),
        ));
    }
    ops.sort_by_key(|o| o.0);

    let mut patch = if args.patch.exists() {
        patches::load_for(&args.patch, &model)?
    } else {
        patches::new_for(&model, "")
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
        let op = parse_op(kind, value)?;
        let (shard, info) = model.get(&name)?;
        let selection = SliceSpec::parse(&spec)
            .and_then(|s| s.resolve(&info.shape))
            .map_err(|source| Error::Slice {
                tensor: name.clone(),
                source,
            })?;
        let overlay = patch.to_overlay();
        let source = overlay.view(&name, shard.data(info));
        let changes = edit::plan(info, &selection, &source, &op, options)?;
        total += changes.iter().map(|c| c.after.len()).sum::<usize>();
        patch.record(&changes, &model, &crate::patch::Origin::new("cli"));
        println!(
            "{kind} {name}[{spec}]: {} byte(s) changed",
            changes.iter().map(|c| c.after.len()).sum::<usize>()
        );
    }
    patch.created = patches::now();
    let form = patches::save(&args.patch, &patch, args.format, Some(&model))?;
    println!(
        "{}: {}{} ({total} byte(s) changed by this edit)",
        args.patch.display(),
        super::patch_cmds::plural(patch.entries.len(), "entry", "entries"),
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

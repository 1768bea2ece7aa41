//! The model store and bakes on real files in temp dirs: sharded routing, folder detection,
//! and each way a model on disk can be wrong.

use std::path::Path;
use tensor_surgeon_core::dtype::Dtype;
use tensor_surgeon_core::header::{self, TensorInfo};
use tensor_surgeon_core::patch::Patch;
use tensor_surgeon_store::{bake, Model, StoreError};

/// Writes a file with U8 tensors named `names`, each `[2]` holding `[i, i]`.
fn write_model(path: &Path, names: &[&str]) {
    let infos: Vec<TensorInfo> = names
        .iter()
        .enumerate()
        .map(|(i, n)| TensorInfo {
            name: n.to_string(),
            dtype: Dtype::U8,
            shape: vec![2],
            data_offsets: (2 * i as u64, 2 * i as u64 + 2),
            blocks: None,
        })
        .collect();
    let mut bytes = header::serialize(None, &infos);
    for i in 0..names.len() {
        bytes.extend_from_slice(&[i as u8, i as u8]);
    }
    std::fs::write(path, bytes).unwrap();
}

fn write_index(dir: &Path, map: &[(&str, &str)]) {
    let weight_map: serde_json::Map<String, serde_json::Value> = map
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({ "weight_map": weight_map }).to_string(),
    )
    .unwrap();
}

fn open_err(path: &Path) -> String {
    match Model::open(path) {
        Ok(_) => panic!("{} should not open", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn folder_forms() {
    let d = tempfile::tempdir().unwrap();
    write_model(&d.path().join("weights.safetensors"), &["a"]);
    assert_eq!(
        Model::open(d.path()).unwrap().len(),
        1,
        "a lone .safetensors in a folder"
    );
    write_model(&d.path().join("other.safetensors"), &["b"]);
    assert!(open_err(d.path()).contains("2 model files but no model.safetensors.index.json"));
    let empty = tempfile::tempdir().unwrap();
    assert!(open_err(empty.path()).contains("no .safetensors or .gguf file, nor an index"));
}

#[test]
fn sharded_routing() {
    let d = tempfile::tempdir().unwrap();
    write_model(&d.path().join("s1.safetensors"), &["a", "b"]);
    write_model(&d.path().join("s2.safetensors"), &["c"]);
    write_index(
        d.path(),
        &[
            ("a", "s1.safetensors"),
            ("b", "s1.safetensors"),
            ("c", "s2.safetensors"),
        ],
    );
    let m = Model::open(d.path()).unwrap();
    assert!(m.is_sharded());
    let (shard, info) = m.get("c").unwrap();
    assert_eq!(shard.file_name, "s2.safetensors");
    assert_eq!(*shard.data(info).unwrap(), [0, 0]);
    assert_eq!(m.fingerprints().len(), 2);
}

#[test]
fn sharded_models_that_disagree_with_their_index() {
    type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let rows: &[Row] = &[
        (
            "routed to the wrong shard",
            &[
                ("a", "s2.safetensors"),
                ("b", "s1.safetensors"),
                ("c", "s2.safetensors"),
            ],
            "tensor \"a\" is in s1.safetensors but the index routes it to s2.safetensors",
        ),
        (
            "tensor missing from its shard",
            &[
                ("a", "s1.safetensors"),
                ("b", "s1.safetensors"),
                ("c", "s2.safetensors"),
                ("z", "s2.safetensors"),
            ],
            "routes \"z\" to s2.safetensors, which has no such tensor",
        ),
        (
            "shard outside the folder",
            &[("a", "../s1.safetensors")],
            "is not a file name beside the index",
        ),
        (
            "shard file missing",
            &[("a", "s9.safetensors")],
            "s9.safetensors: No such file",
        ),
    ];
    for (label, map, needle) in rows {
        let d = tempfile::tempdir().unwrap();
        write_model(&d.path().join("s1.safetensors"), &["a", "b"]);
        write_model(&d.path().join("s2.safetensors"), &["c"]);
        write_index(d.path(), map);
        let err = open_err(d.path());
        assert!(err.contains(needle), "{label}: {err}");
    }
    // The same name in two shards.
    let d = tempfile::tempdir().unwrap();
    write_model(&d.path().join("s1.safetensors"), &["a"]);
    write_model(&d.path().join("s2.safetensors"), &["a"]);
    write_index(
        d.path(),
        &[("a", "s1.safetensors"), ("x", "s2.safetensors")],
    );
    assert_eq!(
        open_err(d.path()),
        format!(
            "{}: tensor \"a\" is in s2.safetensors but the index routes it to s1.safetensors",
            d.path().join("model.safetensors.index.json").display()
        )
    );
    // The same name in two shards, in the index under neither.
    let d = tempfile::tempdir().unwrap();
    write_model(&d.path().join("s1.safetensors"), &["a", "b"]);
    write_model(&d.path().join("s2.safetensors"), &["a", "c"]);
    write_index(
        d.path(),
        &[("b", "s1.safetensors"), ("c", "s2.safetensors")],
    );
    assert!(
        open_err(d.path()).ends_with("tensor \"a\" is in more than one shard"),
        "{}",
        open_err(d.path())
    );
}

#[test]
fn malformed_file_errors_name_the_file() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("broken.safetensors");
    std::fs::write(&path, [1u8, 2, 3]).unwrap();
    let err = open_err(&path);
    assert!(err.starts_with(&path.display().to_string()), "{err}");
    assert!(
        err.ends_with("file is 3 bytes, too short for the 8-byte header length"),
        "{err}"
    );
    assert!(open_err(&d.path().join("missing.safetensors")).contains("No such file"));
}

#[test]
fn bake_never_overwrites_the_base() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("model.safetensors");
    write_model(&path, &["a"]);
    let before = std::fs::read(&path).unwrap();
    let model = Model::open(&path).unwrap();
    let patch = Patch::new(model.fingerprints(), String::new(), String::new());
    let err = bake::bake(&model, &patch, &path, &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(err, StoreError::BakeTarget { .. })
            && err.to_string().contains("is the base model"),
        "{err}"
    );
    let err = bake::bake(&model, &patch, d.path(), &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(err, StoreError::BakeTarget { .. }),
        "a folder holding the base resolves to the base file"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn bake_streams_with_progress() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("model.safetensors");
    write_model(&path, &["a", "b"]);
    let model = Model::open(&path).unwrap();
    let mut patch = Patch::new(model.fingerprints(), String::new(), String::new());
    patch.entries.push(tensor_surgeon_core::patch::PatchEntry {
        tensor: "b".into(),
        offset: 1,
        original: vec![1],
        patched: vec![42],
        origin: None,
    });
    let out = d.path().join("out.safetensors");
    let mut last = (0, 0);
    let written = bake::bake(&model, &patch, &out, &mut |done, total| {
        last = (done, total)
    })
    .unwrap();
    assert_eq!(written, vec![out.clone()]);
    assert_eq!(last, (model.total_bytes(), model.total_bytes()));
    let baked = Model::open(&out).unwrap();
    let (shard, info) = baked.get("b").unwrap();
    assert_eq!(*shard.data(info).unwrap(), [1, 42]);
}

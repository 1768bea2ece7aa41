//! The layout service alone: the demo model, snapshots of overlays made here, no session.

use super::*;
use tensor_surgeon_core::view::ViewSpec;
use tensor_surgeon_wire::{LayoutParams, Method};

const EMBED: &str = "model.embed_tokens.weight";

fn service() -> (tempfile::TempDir, Layouts) {
    let dir = tempfile::tempdir().unwrap();
    let path = tensor_surgeon_store::demo::write_demo(dir.path()).unwrap();
    let vocab = Vocab::find(&path, None).unwrap().map(Arc::new);
    (
        dir,
        Layouts::new(Arc::new(Model::open(&path).unwrap()), vocab),
    )
}

fn request() -> ProjectRequest {
    ProjectRequest {
        tensor: EMBED.into(),
        spec: ViewSpec::default_for(&[2048, 128]),
        columns: false,
        dims: 2,
        normalize: false,
        method: Method::Umap,
        params: LayoutParams {
            iterations: Some(100),
            ..LayoutParams::default()
        },
    }
}

/// The snapshot with row 5 of the embedding zeroed, at `version`.
fn zeroed(layouts: &Layouts, version: u64) -> Snapshot {
    let (_, info) = layouts.model.get(EMBED).unwrap();
    let row = info.byte_len() / info.shape[0];
    let mut overlay = Overlay::default();
    overlay.write(EMBED, 5 * row, &vec![0; row as usize]);
    Snapshot::of(overlay, version)
}

#[test]
fn layouts_are_kept_per_tensor_version_of_the_snapshot() {
    let (_dir, layouts) = service();
    let base = layouts.blocking(&Snapshot::default(), &request()).unwrap();
    assert_eq!(base.index.len(), 2048);
    assert_eq!(
        base.labels.len(),
        2048,
        "the demo embedding's rows are tokens"
    );
    // The same version of the tensor: answered at once from the kept layout.
    let again = layouts.start(&Snapshot::default(), &request()).unwrap();
    assert!(!again.running && again.layout.points == base.points);
    // The snapshot's edit: laid out again, on the edited rows.
    let first = layouts.start(&zeroed(&layouts, 1), &request()).unwrap();
    assert!(first.running, "an edited tensor is laid out again");
    let edited = layouts.blocking(&zeroed(&layouts, 1), &request()).unwrap();
    assert_ne!(edited.points, base.points);
    let i = edited.index.iter().position(|&r| r == 5).unwrap();
    assert_eq!(edited.norms[i], 0.0, "row 5 is zero in the snapshot");
}

#[test]
fn a_failed_layout_keeps_its_error_whole() {
    let (_dir, layouts) = service();
    let mut bad = request();
    bad.tensor = "no.such.tensor".into();
    let e = layouts.blocking(&Snapshot::default(), &bad).unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::NotFound, "{e}");
    // Found by the layout's own thread: the page's frame says why, the blocking caller gets
    // the layout's error itself (not its text under another kind).
    bad = request();
    bad.dims = 4;
    let frame = layouts.start(&Snapshot::default(), &bad).unwrap();
    let e = layouts.blocking(&Snapshot::default(), &bad).unwrap_err();
    assert!(
        matches!(&e, Error::Shared(inner) if matches!(**inner, Error::Layout(_))),
        "{e:?}"
    );
    let shown = layouts
        .frame(FrameRequest {
            job: frame.job,
            since: 0,
        })
        .unwrap();
    assert_eq!(shown.error, Some(e.to_string()));
}

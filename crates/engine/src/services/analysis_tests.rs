//! The analysis service alone: the demo model, snapshots of overlays made here, no session.

use super::*;
use tensor_surgeon_core::dtype::{self, EncodeOptions};
use tensor_surgeon_core::overlay::Overlay;

fn service() -> (tempfile::TempDir, Analysis) {
    let dir = tempfile::tempdir().unwrap();
    let path = tensor_surgeon_store::demo::write_demo(dir.path()).unwrap();
    (dir, Analysis::new(Arc::new(Model::open(&path).unwrap())))
}

/// A 2-D float tensor of the demo, and an overlay setting its first element to 1000.
fn big_first(a: &Analysis) -> (String, Overlay) {
    let (_, info) = a
        .model
        .tensors()
        .find(|(_, t)| t.shape.len() == 2 && dtype::kind(t.dtype) == dtype::Kind::Float)
        .expect("the demo has a 2-D float tensor");
    let number = dtype::parse_number("1000").unwrap();
    let bytes = dtype::encode(info.dtype, number, EncodeOptions::default()).unwrap();
    let mut overlay = Overlay::default();
    overlay.write(&info.name, 0, &bytes);
    (info.name.clone(), overlay)
}

#[test]
fn statistics_follow_the_snapshot_and_its_version() {
    let (_dir, a) = service();
    let (tensor, overlay) = big_first(&a);
    let base = a.stats(&Snapshot::default(), &tensor).unwrap();
    assert!(base.summary.max < Some(1000.0));
    let edited = Snapshot::of(overlay, 1);
    assert_eq!(a.stats(&edited, &tensor).unwrap().summary.max, Some(1000.0));
    // Back at version 0 (an undo): the base's statistics, not the cached edited ones.
    assert_eq!(a.stats(&Snapshot::default(), &tensor).unwrap(), base);
    let h = a.histogram(&edited, &tensor, 4, None, None).unwrap();
    assert_eq!(h.counts.iter().sum::<u64>(), base.summary.finite);
    assert!(a.histogram(&edited, &tensor, 0, None, None).is_err());
}

#[test]
fn a_scan_covers_every_tensor_of_its_snapshot() {
    let (_dir, a) = service();
    let (tensor, overlay) = big_first(&a);
    let snap = Snapshot::of(overlay, 3);
    let now = a.scan_now(&snap).unwrap();
    assert_eq!(now.rows.len(), a.model.len());
    a.start_scan(&snap).unwrap();
    let status = loop {
        let s = a.scan_status(0);
        if !s.running {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(status.complete && status.error.is_none(), "{status:?}");
    assert_eq!(status.rows, now.rows);
    let row = status.rows.iter().find(|r| r.tensor == tensor).unwrap();
    assert_eq!(row.summary.max, Some(1000.0));
}

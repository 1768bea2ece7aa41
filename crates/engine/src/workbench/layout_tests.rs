//! Layout jobs on the demo model: frames, the cache, staleness, the stop, errors.

use super::*;
use std::time::{Duration, Instant};
use tensor_surgeon_core::edit::Op;
use tensor_surgeon_core::patch::Origin;
use tensor_surgeon_core::view::ViewSpec;
use tensor_surgeon_wire::{EditRequest, LayoutParams};

const EMBED: &str = "model.embed_tokens.weight";

fn bench() -> (tempfile::TempDir, Arc<Workbench>) {
    let (dir, mut wb, model) = crate::workbench::demo_bench();
    wb.set_vocab(tensor_surgeon_infer::tokens::Vocab::find(&model, None).unwrap());
    (dir, Arc::new(wb))
}

fn request(iterations: u32) -> ProjectRequest {
    ProjectRequest {
        tensor: EMBED.into(),
        spec: ViewSpec::default_for(&[2048, 128]),
        columns: false,
        dims: 2,
        normalize: false,
        method: Method::Umap,
        params: LayoutParams {
            iterations: Some(iterations),
            ..LayoutParams::default()
        },
    }
}

/// Polls until the layout ends; the frames with points seen on the way.
fn follow(wb: &Workbench, first: &LayoutFrame) -> (LayoutFrame, usize) {
    let (mut since, mut frames, mut last) = (first.frame, 0, first.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    while last.running && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let f = wb
            .layout_frame(FrameRequest {
                job: first.job,
                since,
            })
            .unwrap();
        if f.frame > since {
            assert!(
                !f.layout.points.is_empty(),
                "a newer frame carries its points"
            );
            frames += 1;
        } else {
            assert!(f.layout.points.is_empty(), "an old frame is not sent again");
        }
        since = f.frame;
        last = f;
    }
    (last, frames)
}

#[test]
fn a_layout_runs_in_frames_is_kept_and_goes_stale_with_an_edit() {
    let (_dir, wb) = bench();
    let first = wb.start_layout(&request(300)).unwrap();
    assert!(first.running);
    let (done, frames) = follow(&wb, &first);
    assert!(!done.running && done.error.is_none() && done.phase == "done");
    assert!(frames >= 2, "{frames} frames");
    let full = wb
        .layout_frame(FrameRequest {
            job: first.job,
            since: 0,
        })
        .unwrap();
    assert_eq!(full.layout.index.len(), 2048);
    assert_eq!(
        full.layout.labels.len(),
        2048,
        "the demo embedding's rows are tokens"
    );
    assert_eq!(full.layout.iterations, 300);

    // Asked again: answered from the kept layout, at once, with the same points.
    let again = wb.start_layout(&request(300)).unwrap();
    assert!(!again.running && again.phase == "done");
    assert_eq!(again.layout.points, full.layout.points);
    assert_eq!(
        wb.project(&request(300)).unwrap().points,
        full.layout.points
    );

    // An edit of the tensor makes it stale: the next request runs again.
    let edit = EditRequest {
        tensor: EMBED.into(),
        spec: "5,0".into(),
        op: Op::Zero,
        saturate: false,
        round: false,
    };
    wb.edit(&edit, &Origin::new("test")).unwrap();
    let fresh = wb.start_layout(&request(300)).unwrap();
    assert!(fresh.running && fresh.job != first.job);
    let (done, _) = follow(&wb, &fresh);
    assert!(done.error.is_none());
}

#[test]
fn a_stopped_layout_is_shown_not_kept() {
    let (_dir, wb) = bench();
    let first = wb.start_layout(&request(50_000)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while wb
        .layout_frame(FrameRequest {
            job: first.job,
            since: 0,
        })
        .unwrap()
        .layout
        .iterations
        == 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    wb.stop_layout(first.job).unwrap();
    let (done, _) = follow(&wb, &first);
    assert!(!done.running && done.layout.stopped);
    assert!(done.layout.iterations < 50_000);
    let again = wb.start_layout(&request(50_000)).unwrap();
    assert!(
        again.running,
        "a stopped layout is not answered from the cache"
    );
    wb.stop_layout(again.job).unwrap();
    follow(&wb, &again);
}

#[test]
fn pca_and_unknown_jobs_are_clear_errors() {
    let (_dir, wb) = bench();
    let mut pca = request(10);
    pca.method = Method::Pca;
    let e = wb.start_layout(&pca).unwrap_err().to_string();
    assert!(e.contains("PCA is instant"), "{e}");
    let e = wb
        .layout_frame(FrameRequest { job: 99, since: 0 })
        .unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::NotFound);
    let mut one_d = request(10);
    one_d.tensor = "model.norm.weight".into();
    let e = wb.start_layout(&one_d).unwrap_err().to_string();
    assert!(e.contains("1-D: layouts need a 2-D view"), "{e}");
}

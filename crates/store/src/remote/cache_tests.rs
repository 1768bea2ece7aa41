//! The cache's tests: fills, restarts, damage, eviction, the folder lock.

use super::*;

fn bytes(range: Range<u64>) -> Vec<u8> {
    range.map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn fills_what_it_has_and_names_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 20).unwrap();
    cache.insert("a", 1000, 100, &bytes(100..200));
    cache.insert("a", 1000, 300, &bytes(300..350));
    let mut out = vec![0u8; 400];
    let f = cache.fill("a", 1000, 50..450, &mut out);
    assert_eq!(f.missing, vec![50..100, 200..300, 350..450]);
    assert_eq!(&out[50..150], &bytes(100..200)[..]);
    assert_eq!(&out[250..300], &bytes(300..350)[..]);
    assert_eq!(out[0], 0, "missing parts are left alone");
    // Overlapping inserts keep one copy of each byte.
    cache.insert("a", 1000, 150, &bytes(150..320));
    assert_eq!(cache.held(), 100 + 50 + 100);
    let mut out = vec![0u8; 250];
    assert!(cache.fill("a", 1000, 100..350, &mut out).missing.is_empty());
    assert_eq!(out, bytes(100..350));
}

#[test]
fn survives_a_restart_and_refetches_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        cache.insert("k", 500, 0, &bytes(0..100));
        cache.insert("k", 500, 200, &bytes(200..300));
    }
    // Damage the second extent on disk.
    let data = dir.path().join("k.data");
    File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .write_all_at(&[9, 9, 9], 250)
        .unwrap();
    let cache = Cache::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(cache.held(), 200);
    let mut out = vec![0u8; 300];
    let f = cache.fill("k", 500, 0..300, &mut out);
    assert_eq!(
        f.missing,
        vec![100..300],
        "the damaged extent is not served"
    );
    assert_eq!(&out[..100], &bytes(0..100)[..]);
    assert_eq!(cache.held(), 100);
    // A different size is another object version: nothing of the old one is served.
    let mut out = vec![0u8; 100];
    assert_eq!(cache.fill("k", 600, 0..100, &mut out).missing, vec![0..100]);
}

#[test]
fn drops_the_least_recently_used_past_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 250).unwrap();
    cache.insert("x", 1000, 0, &bytes(0..100));
    cache.insert("x", 1000, 100, &bytes(100..200));
    // Reading the first extent makes the second the oldest.
    let mut out = vec![0u8; 100];
    cache.fill("x", 1000, 0..100, &mut out);
    cache.insert("y", 1000, 0, &bytes(0..100));
    assert_eq!(cache.held(), 200);
    let mut out = vec![0u8; 200];
    assert_eq!(
        cache.fill("x", 1000, 0..200, &mut out).missing,
        vec![100..200]
    );
    // Bigger than the whole cache: not kept at all.
    cache.insert("z", 1000, 0, &bytes(0..300));
    assert_eq!(cache.held(), 200);
    // Nothing kept when the cache is off.
    let off = Cache::open(&dir.path().join("off"), 0).unwrap();
    off.insert("x", 10, 0, &[1, 2, 3]);
    assert_eq!(off.held(), 0);
}

#[test]
fn one_process_at_a_time_uses_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let first = Cache::open(dir.path(), 1 << 20).unwrap();
    first.insert("k", 100, 0, &bytes(0..10));
    // A second open of the same folder (as another process would) reads without a cache.
    let second = Cache::open(dir.path(), 1 << 20).unwrap();
    assert!(second
        .note
        .as_deref()
        .unwrap()
        .contains("in use by another process"));
    second.insert("k", 100, 10, &bytes(10..20));
    let mut out = vec![0u8; 10];
    assert_eq!(second.fill("k", 100, 0..10, &mut out).missing, vec![0..10]);
    drop(first);
    let third = Cache::open(dir.path(), 1 << 20).unwrap();
    assert!(third.note.is_none());
    assert_eq!(third.held(), 10);
}

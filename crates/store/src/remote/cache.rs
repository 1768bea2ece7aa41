//! The on-disk cache of remote bytes: one sparse file per remote object version, holding the
//! extents (byte ranges) read so far, and an index of them. Bounded: past its size the least
//! recently used extents are dropped (their disk space punched out of the sparse file).
//!
//! Extents are exactly what was fetched (a view's rows are small extents, a whole tensor is a
//! few large ones), so nothing is read from the network that was not asked for. Every extent
//! carries the BLAKE3 digest of its bytes, checked the first time a process reads it: a cache
//! damaged by a crash or a full disk is refetched, never served.

use crate::error::{Result, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One cached byte range of an object.
#[derive(Clone, Debug)]
struct Extent {
    end: u64,
    /// When it was last read (the cache's clock).
    used: u64,
    digest: blake3::Hash,
    /// Its digest was checked (or it was written) by this process.
    checked: bool,
}

/// The cached extents of one object version.
struct Object {
    file: File,
    size: u64,
    extents: BTreeMap<u64, Extent>,
    /// Extents added since the index was last written.
    dirty: bool,
}

#[derive(Default)]
struct Inner {
    objects: HashMap<String, Object>,
    /// Bytes held, over every object.
    total: u64,
    clock: u64,
}

/// What a cache read found.
pub struct Filled {
    /// The parts of the range the cache did not have (sorted, disjoint), left as they were.
    pub missing: Vec<Range<u64>>,
}

/// The cache: a folder, a size limit in bytes (0: no cache).
pub struct Cache {
    dir: PathBuf,
    limit: u64,
    inner: Mutex<Inner>,
    /// The folder's lock, held for the process's life: one process at a time uses a cache
    /// folder (another's eviction would punch holes in extents this one already checked).
    _lock: Option<File>,
    /// Why the cache is off although a size was given (another process holds the folder).
    pub note: Option<String>,
}

impl Cache {
    /// Opens (creating) the cache in `dir`, taking stock of what earlier runs left there.
    pub fn open(dir: &Path, limit: u64) -> Result<Cache> {
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let lock_path = dir.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(StoreError::io(&lock_path))?;
        let (limit, lock, note) = if limit > 0 && !try_lock(&lock) {
            let note = format!(
                "the remote cache {} is in use by another process: this one reads without a \
                 cache (give it its own with --cache-dir)",
                dir.display()
            );
            (0, None, Some(note))
        } else {
            (limit, Some(lock), None)
        };
        let cache = Cache {
            dir: dir.to_path_buf(),
            limit,
            inner: Mutex::new(Inner::default()),
            _lock: lock,
            note,
        };
        if cache.limit == 0 {
            return Ok(cache);
        }
        let mut inner = cache.lock();
        for entry in std::fs::read_dir(dir)
            .map_err(StoreError::io(dir))?
            .flatten()
        {
            let path = entry.path();
            let Some(key) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".index"))
            else {
                continue;
            };
            match cache.load(key) {
                Some(object) => {
                    let bytes: u64 = object.extents.iter().map(|(s, e)| e.end - s).sum();
                    let newest = object.extents.values().map(|e| e.used).max().unwrap_or(0);
                    inner.total += bytes;
                    inner.clock = inner.clock.max(newest);
                    inner.objects.insert(key.to_string(), object);
                }
                None => cache.forget(key),
            }
        }
        cache.evict(&mut inner);
        drop(inner);
        Ok(cache)
    }

    /// The folder it lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes it holds now.
    pub fn held(&self) -> u64 {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn data_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.data"))
    }

    fn index_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.index"))
    }

    /// An object's index as an earlier run wrote it: `size`, then `start end used digest` per
    /// line. Anything unreadable means: start that object afresh.
    fn load(&self, key: &str) -> Option<Object> {
        let text = std::fs::read_to_string(self.index_path(key)).ok()?;
        let mut lines = text.lines();
        let size: u64 = lines.next()?.strip_prefix("size ")?.parse().ok()?;
        let mut extents = BTreeMap::new();
        for line in lines {
            let mut f = line.split(' ');
            let start: u64 = f.next()?.parse().ok()?;
            let end: u64 = f.next()?.parse().ok()?;
            let used: u64 = f.next()?.parse().ok()?;
            let digest = blake3::Hash::from_hex(f.next()?).ok()?;
            (start < end && end <= size).then_some(())?;
            extents.insert(
                start,
                Extent {
                    end,
                    used,
                    digest,
                    checked: false,
                },
            );
        }
        let file = File::options()
            .read(true)
            .write(true)
            .open(self.data_path(key))
            .ok()?;
        Some(Object {
            file,
            size,
            extents,
            dirty: false,
        })
    }

    fn forget(&self, key: &str) {
        let _ = std::fs::remove_file(self.index_path(key));
        let _ = std::fs::remove_file(self.data_path(key));
    }

    /// Writes an object's index beside its data (a new file renamed over the old one).
    fn save(&self, key: &str, object: &Object) {
        let mut text = format!("size {}\n", object.size);
        for (start, e) in &object.extents {
            text.push_str(&format!(
                "{start} {} {} {}\n",
                e.end,
                e.used,
                e.digest.to_hex()
            ));
        }
        let path = self.index_path(key);
        let tmp = path.with_extension("index.tmp");
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            // A cache that cannot keep its index serves nothing next run; this run goes on.
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Copies what the cache holds of `range` of object `key` (of `size` bytes) into `out`
    /// (`out[0]` is byte `range.start`) and says what it lacks.
    pub fn fill(&self, key: &str, size: u64, range: Range<u64>, out: &mut [u8]) -> Filled {
        let whole = || Filled {
            missing: vec![range.clone()],
        };
        if self.limit == 0 || range.is_empty() {
            return Filled {
                missing: if range.is_empty() {
                    vec![]
                } else {
                    whole().missing
                },
            };
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let Some(object) = inner.objects.get_mut(key).filter(|o| o.size == size) else {
            return whole();
        };
        let mut missing = Vec::new();
        let mut at = range.start;
        let mut damaged = Vec::new();
        // The extent that may start before the range, then every one starting inside it.
        let first = object
            .extents
            .range(..=range.start)
            .next_back()
            .map(|(s, _)| *s)
            .unwrap_or(range.start);
        let starts: Vec<u64> = object
            .extents
            .range(first..range.end)
            .map(|(s, _)| *s)
            .collect();
        for start in starts {
            let e = object.extents.get_mut(&start).expect("listed just now");
            if e.end <= at {
                continue;
            }
            if !e.checked {
                let mut all = vec![0u8; (e.end - start) as usize];
                let ok = object.file.read_exact_at(&mut all, start).is_ok()
                    && blake3::hash(&all) == e.digest;
                if !ok {
                    damaged.push(start);
                    continue;
                }
                e.checked = true;
            }
            let from = start.max(at);
            let to = e.end.min(range.end);
            if from > at {
                missing.push(at..from);
            }
            let dst = &mut out[(from - range.start) as usize..(to - range.start) as usize];
            if object.file.read_exact_at(dst, from).is_err() {
                damaged.push(start);
                missing.push(from..to);
            } else {
                e.used = clock;
            }
            at = to;
        }
        if at < range.end {
            missing.push(at..range.end);
        }
        let object = inner.objects.get_mut(key).expect("found above");
        let mut dropped = 0;
        for start in &damaged {
            if let Some(e) = object.extents.remove(start) {
                dropped += e.end - start;
            }
        }
        if !damaged.is_empty() {
            self.save(key, object);
            inner.total -= dropped;
        }
        Filled {
            missing: merge(missing),
        }
    }

    /// Keeps `bytes`, fetched from `start` of object `key` (of `size` bytes); parts it already
    /// holds are kept as they are. Then drops the least recently used extents over the limit.
    pub fn insert(&self, key: &str, size: u64, start: u64, bytes: &[u8]) {
        if self.limit == 0 || bytes.is_empty() || bytes.len() as u64 > self.limit {
            return;
        }
        let end = start + bytes.len() as u64;
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        if inner.objects.get(key).is_some_and(|o| o.size != size) {
            inner.objects.remove(key);
            self.forget(key);
        }
        if !inner.objects.contains_key(key) {
            let made = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(self.data_path(key))
                .and_then(|f| f.set_len(size).map(|()| f));
            let Ok(file) = made else { return };
            inner.objects.insert(
                key.to_string(),
                Object {
                    file,
                    size,
                    extents: BTreeMap::new(),
                    dirty: false,
                },
            );
        }
        let object = inner.objects.get_mut(key).expect("made above");
        // Only the parts no extent covers yet: extents never overlap.
        let mut pieces = Vec::new();
        let mut at = start;
        let first = object
            .extents
            .range(..=start)
            .next_back()
            .map(|(s, _)| *s)
            .unwrap_or(start);
        for (s, e) in object.extents.range(first..end) {
            if e.end <= at {
                continue;
            }
            if *s > at {
                pieces.push(at..*s);
            }
            at = at.max(e.end);
        }
        if at < end {
            pieces.push(at..end);
        }
        let mut added = 0;
        for p in pieces {
            let part = &bytes[(p.start - start) as usize..(p.end - start) as usize];
            if object.file.write_all_at(part, p.start).is_err() {
                continue;
            }
            object.extents.insert(
                p.start,
                Extent {
                    end: p.end,
                    used: clock,
                    digest: blake3::hash(part),
                    checked: true,
                },
            );
            added += p.end - p.start;
        }
        if added > 0 {
            // The index is written once per read ([`Cache::commit`]), not once per piece.
            object.dirty = true;
            inner.total += added;
            self.evict(&mut inner);
        }
    }

    /// Writes the index of every object that gained extents since its last write (a read
    /// calls this once, at its end; dropping the cache does too).
    pub fn commit(&self) {
        let mut inner = self.lock();
        for (key, object) in inner.objects.iter_mut().filter(|(_, o)| o.dirty) {
            self.save(key, object);
            object.dirty = false;
        }
    }

    /// Drops the least recently used extents until the cache fits its limit.
    fn evict(&self, inner: &mut Inner) {
        if inner.total <= self.limit {
            return;
        }
        let mut all: Vec<(u64, String, u64)> = inner
            .objects
            .iter()
            .flat_map(|(k, o)| o.extents.iter().map(move |(s, e)| (e.used, k.clone(), *s)))
            .collect();
        all.sort_unstable();
        let mut touched = Vec::new();
        for (_, key, start) in all {
            if inner.total <= self.limit {
                break;
            }
            let object = inner.objects.get_mut(&key).expect("listed");
            let Some(e) = object.extents.remove(&start) else {
                continue;
            };
            punch_hole(&object.file, start, e.end - start);
            inner.total -= e.end - start;
            touched.push(key);
        }
        touched.sort();
        touched.dedup();
        for key in touched {
            if inner.objects[&key].extents.is_empty() {
                inner.objects.remove(&key);
                self.forget(&key);
            } else {
                let object = inner.objects.get_mut(&key).expect("listed");
                self.save(&key, object);
                object.dirty = false;
            }
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.commit();
    }
}

/// Takes the folder's lock without waiting; `false` when another process holds it.
fn try_lock(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on an open descriptor; the lock ends with the descriptor.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Sorts and joins touching ranges.
pub fn merge(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges.into_iter().filter(|r| !r.is_empty()) {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Gives a dropped extent's disk space back (the file keeps its size; the hole reads as zeros
/// and no index entry points at it).
#[cfg(target_os = "linux")]
fn punch_hole(file: &File, start: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on an open descriptor; failure only keeps the space.
    unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            start as libc::off_t,
            len as libc::off_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn punch_hole(_file: &File, _start: u64, _len: u64) {}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;

//! Models that live elsewhere: `http(s)://` and `s3://` objects read by range through the
//! `object_store` crate (its HTTP and S3 stores), behind the on-disk [`cache::Cache`].
//!
//! A remote file is pinned to the version it had when opened (size, ETag, Last-Modified):
//! every later read asks the server for that version only (`If-Match`), so a file replaced on
//! the server is refused with [`StoreError::RemoteChanged`], never mixed with the old bytes.
//! Transient failures (5xx, dropped connections, a body cut short) are retried with backoff by
//! the store; a server that is gone fails within seconds, not a hang.

pub mod cache;
mod progress;
mod stores;

use progress::UnderWay;
pub use progress::{reads_under_way, report_progress_with, Reporter};
use stores::{explain, locate};

use crate::error::{Result, StoreError};
use cache::Cache;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Requests in flight at once for one read of large ranges.
const CONCURRENCY: usize = 8;
/// Requests in flight at once when the ranges are small (a view's rows): latency, not
/// bandwidth, bounds them.
const SMALL_CONCURRENCY: usize = 32;
/// Two wanted ranges closer than this are fetched as one (the gap is read and dropped).
const COALESCE_GAP: u64 = 512;
/// Large reads are split in ranges of this size, fetched in parallel.
const PART: u64 = 8 << 20;
/// The default cache size.
pub const DEFAULT_CACHE_BYTES: u64 = 4 << 30;

/// Whether `location` names a remote model rather than a local path.
pub fn is_url(location: &str) -> bool {
    ["http://", "https://", "s3://"]
        .iter()
        .any(|s| location.starts_with(s))
}

/// Where the cache lives and how big it may grow; set once at start-up (before the first
/// remote model opens), else the defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    pub cache_dir: PathBuf,
    pub cache_bytes: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            cache_dir: crate::cache_root().join("remote"),
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static CACHE: OnceLock<std::result::Result<Arc<Cache>, Arc<StoreError>>> = OnceLock::new();

/// Sets the cache's folder and size; refused once a remote model has been opened.
pub fn configure(settings: Settings) -> Result<()> {
    SETTINGS
        .set(settings)
        .map_err(|_| StoreError::CacheConfigured)
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

fn cache() -> Result<Arc<Cache>> {
    CACHE
        .get_or_init(|| {
            let s = settings();
            let cache = Cache::open(&s.cache_dir, s.cache_bytes).map_err(Arc::new)?;
            if let Some(note) = &cache.note {
                eprintln!("note: {note}");
            }
            Ok(Arc::new(cache))
        })
        .clone()
        .map_err(StoreError::CacheUnusable)
}

/// The runtime the stores' I/O runs on: its own, so reads work the same from a command, a
/// blocking task or an async handler.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("remote-io")
            .enable_all()
            .build()
            .expect("a tokio runtime starts")
    })
}

/// Runs `f` on the I/O runtime and waits for it.
fn run<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .expect("the I/O runtime runs every task it is given")
}

/// The version of a remote object its reads are pinned to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: String,
}

impl Version {
    fn of(meta: &object_store::ObjectMeta) -> Version {
        Version {
            size: meta.size,
            etag: meta.e_tag.clone(),
            last_modified: meta.last_modified.to_rfc3339(),
        }
    }

    /// How the version is shown and recorded: the ETag, else the modification time.
    pub fn tag(&self) -> String {
        self.etag
            .clone()
            .unwrap_or_else(|| format!("modified {}", self.last_modified))
    }
}

/// One remote object, pinned to a version.
pub struct RemoteFile {
    pub url: String,
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    pub version: Version,
    /// Its name in the cache: the URL and the version.
    key: String,
}

impl std::fmt::Debug for RemoteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.url, self.version.tag())
    }
}

impl RemoteFile {
    /// Opens a remote `.safetensors` file: its version and its header bytes (the 8-byte
    /// length, then the JSON), in two range requests.
    pub async fn open_safetensors(url: String) -> Result<(RemoteFile, Vec<u8>)> {
        let (store, path) = locate(&url)?;
        let first = get(
            &store,
            &path,
            &url,
            GetOptions::new().with_range(Some(0..8)),
        )
        .await?;
        let version = Version::of(&first.0);
        let prefix = first.1;
        let file = RemoteFile {
            key: cache_key(&url, &version),
            url,
            store,
            path,
            version,
        };
        if tensor_surgeon_core::gguf::is_gguf(&prefix) {
            let header = file.gguf_header().await?;
            return Ok((file, header));
        }
        let n = tensor_surgeon_core::header::json_len(&prefix, file.version.size).map_err(|e| {
            StoreError::Remote {
                url: file.url.clone(),
                reason: e.to_string(),
            }
        })?;
        let mut header = prefix.to_vec();
        if n > 0 {
            let json = file.get_pinned(8..8 + n).await?;
            header.extend_from_slice(&json);
        }
        Ok((file, header))
    }

    /// A GGUF file's header, through the end of its padding (where the data starts): read in
    /// growing prefixes, since its length is known only once it is parsed.
    async fn gguf_header(&self) -> Result<Vec<u8>> {
        let size = self.version.size;
        let mut want = GGUF_FIRST_READ.min(size);
        loop {
            let prefix = self.get_pinned(0..want).await?;
            match tensor_surgeon_core::gguf::parse(&prefix, size) {
                Ok(h) => return Ok(prefix[..h.data_start.min(want) as usize].to_vec()),
                Err(tensor_surgeon_core::gguf::GgufError::Truncated { needed, .. })
                    if want < size =>
                {
                    want = needed.max(want * 2).min(size);
                }
                Err(source) => {
                    return Err(StoreError::Gguf {
                        path: self.url.clone().into(),
                        source,
                    })
                }
            }
        }
    }

    /// A whole small file (an index, a config, a tokenizer); `None` when the server has none.
    pub async fn fetch_small(url: String) -> Result<Option<Vec<u8>>> {
        let (store, path) = locate(&url)?;
        match get(&store, &path, &url, GetOptions::new()).await {
            Ok((_, bytes)) => Ok(Some(bytes.to_vec())),
            Err(StoreError::RemoteNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_pinned(&self, range: Range<u64>) -> Result<bytes::Bytes> {
        let options = GetOptions::new()
            .with_range(Some(GetRange::Bounded(range.clone())))
            .with_if_match(self.version.etag.clone());
        let (meta, bytes) = get(&self.store, &self.path, &self.url, options).await?;
        // Servers without If-Match support: the answer's own version must still agree.
        let now = Version::of(&meta);
        if now.size != self.version.size
            || (now.etag.is_some() && now.etag != self.version.etag)
            || (now.etag.is_none() && now.last_modified != self.version.last_modified)
        {
            return Err(StoreError::RemoteChanged {
                url: self.url.clone(),
                reason: format!(
                    "it was {} ({} bytes) when opened, it is {} ({} bytes) now",
                    self.version.tag(),
                    self.version.size,
                    now.tag(),
                    now.size
                ),
            });
        }
        if bytes.len() as u64 != range.end - range.start {
            return Err(StoreError::Remote {
                url: self.url.clone(),
                reason: format!(
                    "asked for bytes {}..{}, got {}",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            });
        }
        Ok(bytes)
    }

    /// Reads `ranges` (sorted and apart, as `cache::merge` leaves them; each within the file),
    /// from the cache where it can and
    /// from the server for the rest: nearby gaps coalesced, large ones split, fetched in
    /// parallel, kept in the cache. `progress` hears the bytes fetched so far and in all.
    pub fn read(
        self: &Arc<Self>,
        ranges: &[Range<u64>],
        progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    ) -> Result<Vec<Vec<u8>>> {
        debug_assert!(
            ranges.windows(2).all(|w| w[0].end <= w[1].start),
            "sorted, apart"
        );
        let cache = cache()?;
        let size = self.version.size;
        let mut outs: Vec<Vec<u8>> = Vec::with_capacity(ranges.len());
        let mut missing = Vec::new();
        for r in ranges {
            if r.start > r.end || r.end > size {
                return Err(StoreError::Remote {
                    url: self.url.clone(),
                    reason: format!("bytes {}..{} are past its end ({size})", r.start, r.end),
                });
            }
            let mut out = vec![0u8; (r.end - r.start) as usize];
            missing.extend(cache.fill(&self.key, size, r.clone(), &mut out).missing);
            outs.push(out);
        }
        let fetches = plan(missing);
        if fetches.is_empty() {
            return Ok(outs);
        }
        let total: u64 = fetches.iter().map(|r| r.end - r.start).sum();
        let concurrency = if total / (fetches.len() as u64) < 1 << 20 {
            SMALL_CONCURRENCY
        } else {
            CONCURRENCY
        };
        let this = Arc::clone(self);
        let (tx, rx) = std::sync::mpsc::channel::<Result<(u64, bytes::Bytes)>>();
        runtime().spawn(async move {
            let mut results = stream::iter(fetches)
                .map(|r| {
                    let this = Arc::clone(&this);
                    async move { this.get_pinned(r.clone()).await.map(|b| (r.start, b)) }
                })
                .buffer_unordered(concurrency);
            while let Some(got) = results.next().await {
                let failed = got.is_err();
                if tx.send(got).is_err() || failed {
                    break;
                }
            }
        });
        let under_way = UnderWay::start(&self.url, total);
        let received = self.receive(rx, ranges, &mut outs, total, progress, &under_way);
        cache.commit();
        received?;
        Ok(outs)
    }

    /// Lays each fetched piece into the ranges it overlaps and keeps it in the cache.
    fn receive(
        &self,
        rx: std::sync::mpsc::Receiver<Result<(u64, bytes::Bytes)>>,
        ranges: &[Range<u64>],
        outs: &mut [Vec<u8>],
        total: u64,
        progress: Option<&(dyn Fn(u64, u64) + Sync)>,
        under_way: &UnderWay,
    ) -> Result<()> {
        let cache = cache()?;
        let size = self.version.size;
        let mut done = 0;
        for got in rx {
            let (start, bytes) = got?;
            let end = start + bytes.len() as u64;
            // The ranges are sorted and apart: the overlapping ones are a run.
            let first = ranges.partition_point(|r| r.end <= start);
            for (r, out) in ranges[first..]
                .iter()
                .zip(&mut outs[first..])
                .take_while(|(r, _)| r.start < end)
            {
                let (from, to) = (r.start.max(start), r.end.min(end));
                if from < to {
                    out[(from - r.start) as usize..(to - r.start) as usize]
                        .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
                }
            }
            cache.insert(&self.key, size, start, &bytes);
            done += bytes.len() as u64;
            if let Some(p) = progress {
                p(done, total);
            }
            under_way.advance(done);
        }
        if done < total {
            return Err(StoreError::Remote {
                url: self.url.clone(),
                reason: "the read stopped before it was complete".into(),
            });
        }
        Ok(())
    }
}

/// The requests for the missing ranges: merged when close, split when large.
fn plan(missing: Vec<Range<u64>>) -> Vec<Range<u64>> {
    let mut joined: Vec<Range<u64>> = Vec::new();
    for r in cache::merge(missing) {
        match joined.last_mut() {
            Some(last) if r.start - last.end <= COALESCE_GAP => last.end = r.end,
            _ => joined.push(r),
        }
    }
    joined
        .into_iter()
        .flat_map(|r| {
            let parts = (r.end - r.start).div_ceil(PART);
            (0..parts).map(move |i| r.start + i * PART..(r.start + (i + 1) * PART).min(r.end))
        })
        .collect()
}

/// One GET, with its body read.
async fn get(
    store: &Arc<dyn ObjectStore>,
    path: &ObjectPath,
    url: &str,
    options: GetOptions,
) -> Result<(object_store::ObjectMeta, bytes::Bytes)> {
    let result = store
        .get_opts(path, options)
        .await
        .map_err(|e| explain(url, e))?;
    let meta = result.meta.clone();
    let bytes = result.bytes().await.map_err(|e| explain(url, e))?;
    Ok((meta, bytes))
}

fn cache_key(url: &str, v: &Version) -> String {
    let id = format!("{url}\n{}\n{}\n{}", v.size, v.tag(), v.last_modified);
    blake3::hash(id.as_bytes()).to_hex()[..32].to_string()
}

/// Opens many remote `.safetensors` files at once (a sharded model's shards).
/// The first read of a GGUF file's header (tokenizer arrays make headers of a few MiB).
const GGUF_FIRST_READ: u64 = 4 << 20;

pub fn open_all(urls: Vec<String>) -> Result<Vec<(RemoteFile, Vec<u8>)>> {
    run(async move {
        stream::iter(urls)
            .map(RemoteFile::open_safetensors)
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    })
}

/// Checks that every file still has the version it was opened at (one small request each, at
/// once): [`StoreError::RemoteChanged`] when one does not. Cached bytes never tell.
pub fn check_unchanged(files: Vec<Arc<RemoteFile>>) -> Result<()> {
    run(async move {
        stream::iter(files)
            .map(|f| async move { f.get_pinned(0..8).await.map(|_| ()) })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    })
}

/// A whole small file, or `None` when the server has none (see [`RemoteFile::fetch_small`]).
pub fn fetch_small(url: &str) -> Result<Option<Vec<u8>>> {
    run(RemoteFile::fetch_small(url.to_string()))
}

/// Several small files at once (see [`fetch_small`]).
pub fn fetch_all_small(urls: Vec<String>) -> Result<Vec<Option<Vec<u8>>>> {
    run(async move {
        stream::iter(urls)
            .map(RemoteFile::fetch_small)
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    })
}

/// `name` next to the file at `url` (`https://h/a/b.json` + `c` = `https://h/a/c`).
pub fn sibling(url: &str, name: &str) -> String {
    match url.rfind('/') {
        Some(i) => format!("{}/{name}", &url[..i]),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests;

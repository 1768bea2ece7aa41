//! The `object_store` stores behind URLs (HTTP per host, S3 per bucket), and their errors as a
//! user should read them.

use crate::error::{Result, StoreError};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The store and object path of a URL; stores are shared per host (or bucket), so their
/// connections are reused.
pub(super) fn locate(url: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let bad = |reason: String| StoreError::Remote {
        url: url.to_string(),
        reason,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("not a URL".into()))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || path.is_empty() {
        return Err(bad("a URL names a host (or bucket) and a file".into()));
    }
    let path = ObjectPath::from_url_path(path.split(['?', '#']).next().unwrap_or(""))
        .map_err(|e| bad(e.to_string()))?;
    let base = format!("{scheme}://{authority}");
    // TLS (https, S3) through rustls on ring; an error means a provider is already set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(s) = stores.get(&base) {
        return Ok((Arc::clone(s), path));
    }
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(20),
    };
    let options = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
        .with_allow_http(true);
    let store: Arc<dyn ObjectStore> = match scheme {
        "http" | "https" => Arc::new(
            object_store::http::HttpBuilder::new()
                .with_url(&base)
                .with_client_options(options)
                .with_retry(retry)
                .build()
                .map_err(|e| bad(e.to_string()))?,
        ),
        "s3" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(authority)
                .with_client_options(options)
                .with_retry(retry)
                .build()
                .map_err(|e| bad(e.to_string()))?,
        ),
        other => {
            return Err(bad(format!(
                "{other}:// is not supported (http, https, s3)"
            )))
        }
    };
    stores.insert(base, Arc::clone(&store));
    Ok((store, path))
}

/// A store error as the user should read it.
pub(super) fn explain(url: &str, e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::Precondition { .. } => StoreError::RemoteChanged {
            url: url.to_string(),
            reason: "the server no longer has the version this session opened".into(),
        },
        object_store::Error::NotFound { .. } => StoreError::RemoteNotFound {
            url: url.to_string(),
        },
        other => {
            // The causes too: "error sending request" alone does not say a certificate was
            // refused or the connection reset.
            let mut reason = other.to_string();
            let mut cause = std::error::Error::source(&other);
            while let Some(c) = cause {
                let text = c.to_string();
                if !reason.contains(&text) {
                    reason.push_str(": ");
                    reason.push_str(&text);
                }
                cause = c.source();
            }
            StoreError::Remote {
                url: url.to_string(),
                reason,
            }
        }
    }
}

//! Who may use the server: a secret token, as Jupyter does. The server prints its address with
//! `?token=…`; the first visit exchanges the token for an HttpOnly, SameSite=Strict cookie
//! (and is redirected to the same address without it, so the token leaves the address bar and
//! the history). Every later request — pages, assets, the API, `/mcp` — needs that cookie or an
//! `Authorization: Bearer TOKEN` header. `--no-auth` turns the check off.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// The server's access rule.
#[derive(Clone)]
pub enum Auth {
    /// Anyone who can reach the port may use the server (`--no-auth`).
    Off,
    /// Requests must carry the token; only its hash is kept (compared in constant time).
    Token {
        hash: blake3::Hash,
        /// The cookie's name, per port: two servers on one host keep their own cookies.
        cookie: String,
    },
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// A valid `?token=` on a page load: set the cookie to it and redirect to `location`
    /// (the same address without the token).
    Exchange {
        location: String,
        token: String,
    },
    Deny,
}

impl Auth {
    /// Token auth for a server on `port`.
    pub fn token(token: &str, port: u16) -> Auth {
        Auth::Token {
            hash: blake3::hash(token.as_bytes()),
            cookie: format!("tensor-surgeon-{port}"),
        }
    }

    /// A fresh random token (256 bits, hex).
    pub fn random_token() -> std::io::Result<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        Ok(hex::encode(bytes))
    }

    /// The verdict on a request.
    pub fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Verdict {
        let Auth::Token { hash, cookie } = self else {
            return Verdict::Pass;
        };
        let matches = |given: &str| blake3::hash(given.as_bytes()) == *hash;
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| matches(t.trim()));
        let cookie_ok = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == cookie && matches(value));
        let (in_query, rest) = split_token(uri.query().unwrap_or(""));
        let query_ok = in_query.is_some_and(matches);
        if query_ok && matches!(*method, Method::GET | Method::HEAD) {
            let location = match rest.is_empty() {
                true => uri.path().to_string(),
                false => format!("{}?{rest}", uri.path()),
            };
            return Verdict::Exchange {
                location,
                token: in_query.unwrap_or_default().to_string(),
            };
        }
        if bearer || cookie_ok || query_ok {
            Verdict::Pass
        } else {
            Verdict::Deny
        }
    }

    /// The answer to a request `check` did not pass.
    pub fn respond(&self, verdict: Verdict, headers: &HeaderMap) -> Response {
        let (Auth::Token { cookie, .. }, Verdict::Exchange { location, token }) = (self, verdict)
        else {
            return denied(headers);
        };
        let set_cookie = format!("{cookie}={token}; Path=/; HttpOnly; SameSite=Strict");
        match (
            HeaderValue::from_str(&location),
            HeaderValue::from_str(&set_cookie),
        ) {
            (Ok(location), Ok(set_cookie)) => {
                let mut response = StatusCode::SEE_OTHER.into_response();
                let h = response.headers_mut();
                h.insert(header::LOCATION, location);
                h.insert(header::SET_COOKIE, set_cookie);
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            _ => denied(headers),
        }
    }
}

/// The `token` parameter of a query string, and the query without it.
fn split_token(query: &str) -> (Option<&str>, String) {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("token=") {
            Some(t) => token = Some(t),
            None => rest.push(pair),
        }
    }
    (token, rest.join("&"))
}

/// 401: what to do to get in (a page for browsers, one line for scripts).
fn denied(headers: &HeaderMap) -> Response {
    const WHY: &str = "This Tensor Surgeon server needs its access token. Open the address it \
                       printed when it started (http://HOST:PORT/?token=…), or send the header \
                       'Authorization: Bearer TOKEN'.";
    let wants_page = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    let mut response = if wants_page {
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Tensor Surgeon: token needed</title></head><body><main>\
             <h1>Token needed</h1><p>{WHY}</p></main></body></html>"
        );
        (StatusCode::UNAUTHORIZED, axum::response::Html(page)).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, WHY).into_response()
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tensor-surgeon\""),
    );
    response
}

//! The request checks, and the whole router driven with `oneshot`: the real app, no socket.

use super::*;

#[test]
fn host_and_origin_checks() {
    let allowed = allowed_hosts("127.0.0.1:3000".parse().unwrap(), &[]);
    let h = |pairs: &[(&str, &str)]| {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    };
    assert!(check_request(&Method::GET, &h(&[("host", "localhost:3000")]), &allowed).is_ok());
    assert!(
        check_request(&Method::GET, &h(&[("host", "evil.example:3000")]), &allowed).is_err(),
        "DNS rebinding"
    );
    assert!(check_request(
        &Method::POST,
        &h(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "http://127.0.0.1:3000")
        ]),
        &allowed
    )
    .is_ok());
    assert!(check_request(
        &Method::POST,
        &h(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "https://evil.example")
        ]),
        &allowed
    )
    .is_err());
    assert!(check_request(
        &Method::POST,
        &h(&[("host", "127.0.0.1:3000"), ("sec-fetch-site", "cross-site")]),
        &allowed
    )
    .is_err());
    assert!(
        check_request(&Method::POST, &h(&[("host", "127.0.0.1:3000")]), &allowed).is_ok(),
        "scripts send no Origin"
    );
    assert!(
        check_request(
            &Method::GET,
            &h(&[
                ("host", "127.0.0.1:3000"),
                ("origin", "https://evil.example")
            ]),
            &allowed
        )
        .is_ok(),
        "reads are guarded by CORS"
    );
}

mod router {
    //! The real router (app, server functions, `/mcp`, assets) answering requests in process.

    use super::super::*;
    use axum::body::to_bytes;
    use tower::ServiceExt;

    const TOKEN: &str = "router-test-token-0123456789";
    const HOST: &str = "127.0.0.1:3999";

    struct App {
        router: Router,
        dir: tempfile::TempDir,
    }

    /// The app over a fresh demo model; `token: None` is `--no-auth`.
    fn app(token: Option<&str>, allow_dirs: Vec<PathBuf>) -> App {
        let dir = tempfile::tempdir().unwrap();
        let model = tensor_surgeon_store::demo::write_demo(&dir.path().join("model")).unwrap();
        let args = ServeArgs {
            model: Some(model),
            session: crate::session::SessionArgs {
                allow_dir: allow_dirs,
                ..Default::default()
            },
            access: AccessArgs {
                token: token.map(str::to_string),
                no_auth: token.is_none(),
                ..Default::default()
            },
        };
        let options = LeptosOptions::builder()
            .output_name("tensor-surgeon")
            .site_addr(HOST.parse::<SocketAddr>().unwrap())
            .site_root(dir.path().join("site").to_string_lossy().into_owned())
            .build();
        let (state, given, _) = build_state(&args, options).unwrap();
        assert_eq!(given.as_deref(), token);
        App {
            router: router(state),
            dir,
        }
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: String,
    }

    async fn send(
        app: &App,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", HOST);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::from(body.to_string())).unwrap();
        let res = app.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = to_bytes(res.into_body(), 1 << 24).await.unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    const BEARER: (&str, &str) = ("authorization", "Bearer router-test-token-0123456789");

    #[tokio::test]
    async fn without_the_token_nothing_is_served() {
        let app = app(Some(TOKEN), Vec::new());
        for uri in [
            "/",
            "/api/model",
            "/pkg/tensor-surgeon.wasm",
            "/mcp",
            "/api/session",
        ] {
            let a = send(&app, "GET", uri, &[], "").await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}");
            assert!(
                a.body.contains("?token="),
                "{uri}: says how to get in: {}",
                a.body
            );
        }
        let page = send(&app, "GET", "/", &[("accept", "text/html")], "").await;
        assert!(page.body.contains("<h1>Token needed</h1>"), "{}", page.body);
        let wrong = send(
            &app,
            "GET",
            "/api/model",
            &[("authorization", "Bearer nope")],
            "",
        )
        .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        let edit = r#"{"request":{"tensor":"model.norm.weight","spec":"0","op":{"op":"set","value":"2"}}}"#;
        let a = send(
            &app,
            "POST",
            "/api/edit",
            &[("content-type", "application/json")],
            edit,
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        let s = send(&app, "GET", "/api/session", &[BEARER], "").await;
        let s: serde_json::Value = serde_json::from_str(&s.body).unwrap();
        assert_eq!(s["steps"], serde_json::json!([]), "nothing was edited");
    }

    #[tokio::test]
    async fn the_token_in_the_address_becomes_a_strict_http_only_cookie() {
        let app = app(Some(TOKEN), Vec::new());
        let a = send(&app, "GET", &format!("/?tensor=x&token={TOKEN}"), &[], "").await;
        assert_eq!(a.status, StatusCode::SEE_OTHER);
        assert_eq!(
            a.headers[header::LOCATION],
            "/?tensor=x",
            "the token leaves the address"
        );
        let cookie = a.headers[header::SET_COOKIE].to_str().unwrap().to_string();
        assert!(
            cookie.starts_with(&format!("tensor-surgeon-3999={TOKEN};")),
            "{cookie}"
        );
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap();
        let model = send(&app, "GET", "/api/model", &[("cookie", pair)], "").await;
        assert_eq!(model.status, StatusCode::OK, "{}", model.body);
        assert!(model.body.contains("model.norm.weight"));
        // Another server's cookie (another port) does not open this one.
        let other = format!("tensor-surgeon-4000={TOKEN}");
        let a = send(&app, "GET", "/api/model", &[("cookie", &other)], "").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        let wrong = send(&app, "GET", "/?token=not-the-token", &[], "").await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.headers.get(header::SET_COOKIE).is_none());
    }

    #[tokio::test]
    async fn a_bearer_header_opens_the_api_and_mcp() {
        let app = app(Some(TOKEN), Vec::new());
        let model = send(&app, "GET", "/api/model", &[BEARER], "").await;
        assert_eq!(model.status, StatusCode::OK);
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
        let headers = [
            BEARER,
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        let a = send(&app, "POST", "/mcp", &headers, init).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(a.body.contains("tensor-surgeon"), "{}", a.body);
    }

    #[tokio::test]
    async fn the_host_and_origin_checks_hold_with_the_token() {
        let app = app(Some(TOKEN), Vec::new());
        let rebound = Request::builder()
            .uri("/api/model")
            .header("host", "evil.example:3999")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let res = app.router.clone().oneshot(rebound).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let headers = [
            BEARER,
            ("origin", "https://evil.example"),
            ("content-type", "application/json"),
        ];
        let a = send(&app, "POST", "/api/undo", &headers, "{}").await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn no_auth_serves_without_a_token() {
        let app = app(None, Vec::new());
        let a = send(&app, "GET", "/api/model", &[], "").await;
        assert_eq!(a.status, StatusCode::OK);
    }

    fn app_with(allow_dirs: Vec<PathBuf>) -> App {
        app(Some(TOKEN), allow_dirs)
    }

    #[tokio::test]
    async fn compare_reads_only_under_the_allowed_folders() {
        let outside = tempfile::tempdir().unwrap();
        let other = tensor_surgeon_store::demo::write_demo(&outside.path().join("other")).unwrap();
        let compare = |path: &std::path::Path| serde_json::json!({ "other": path }).to_string();
        let headers = [BEARER, ("content-type", "application/json")];
        let app = app(Some(TOKEN), Vec::new());
        let a = send(&app, "POST", "/api/compare", &headers, &compare(&other)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
        assert!(a.body.contains("--allow-dir"), "{}", a.body);
        // `..` and links are resolved before the check.
        let sneaky = app
            .dir
            .path()
            .join("model")
            .join("..")
            .join("..")
            .join(outside.path().file_name().unwrap())
            .join("other");
        let a = send(&app, "POST", "/api/compare", &headers, &compare(&sneaky)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
        std::os::unix::fs::symlink(&other, app.dir.path().join("model").join("link")).unwrap();
        let a = send(
            &app,
            "POST",
            "/api/compare",
            &headers,
            &compare(&app.dir.path().join("model").join("link")),
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
        // A FIFO in an allowed folder is refused at once, not waited on.
        let fifo = app.dir.path().join("model").join("pipe.safetensors");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let a = send(&app, "POST", "/api/compare", &headers, &compare(&fifo)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        // Allowed: the folder given with --allow-dir.
        let allowing = app_with(vec![outside.path().to_path_buf()]);
        let a = send(
            &allowing,
            "POST",
            "/api/compare",
            &headers,
            &compare(&other),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
}

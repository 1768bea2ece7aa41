//! The remote layer's tests that need no server: request planning, URLs, a refused
//! connection.

use super::*;

#[test]
fn plans_few_requests_for_exactly_the_bytes() {
    // Rows of a narrow view: far apart, each its own request.
    let rows: Vec<_> = (0..4u64).map(|i| i * 8192..i * 8192 + 1024).collect();
    assert_eq!(plan(rows.clone()), rows);
    // Close ranges are one request; a large one is parts.
    assert_eq!(plan(vec![0..100, 300..400]), vec![0..400]);
    let big = plan(vec![0..2 * PART + 5]);
    assert_eq!(big, vec![0..PART, PART..2 * PART, 2 * PART..2 * PART + 5]);
}

#[test]
fn names_siblings_and_urls() {
    assert!(is_url("s3://b/m.safetensors") && is_url("https://h/m.safetensors"));
    assert!(!is_url("/models/m.safetensors") && !is_url("ftp://h/m"));
    assert_eq!(
        sibling(
            "http://h:8/a/model.safetensors.index.json",
            "s-1.safetensors"
        ),
        "http://h:8/a/s-1.safetensors"
    );
}

#[test]
fn a_server_that_is_not_there_is_a_clear_error_soon() {
    // Port 9 on loopback: nothing listens; the connection is refused at once.
    let err = open_all(vec!["http://127.0.0.1:9/m.safetensors".into()]).unwrap_err();
    assert!(matches!(err, StoreError::Remote { .. }), "{err}");
    assert!(
        err.to_string().contains("http://127.0.0.1:9/m.safetensors"),
        "{err}"
    );
}

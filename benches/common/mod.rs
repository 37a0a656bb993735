//! Load generation shared by the benches that drive a running hookrelay over HTTP.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use serde_json::{json, Value};

/// The admin token the benches start hookrelay with.
pub const TOKEN: &str = "bench-admin-token-0123456789abcdefghij";

/// Creates an endpoint to `url` in the default tenant.
pub async fn create_endpoint(http: &reqwest::Client, base: &str, url: &str) {
    let resp = http
        .post(format!("{base}/v1/tenants/default/endpoints"))
        .bearer_auth(TOKEN)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
}

/// Posts `events` copies of `body` from `producers` concurrent tasks, as fast as they go;
/// returns when every one was accepted.
pub async fn produce(
    http: &reqwest::Client,
    base: &str,
    producers: usize,
    events: usize,
    body: Value,
) {
    let ingest = format!("{base}/v1/tenants/default/events");
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let (http, ingest, next, body) =
                (http.clone(), ingest.clone(), next.clone(), body.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < events {
                    let r = http
                        .post(&ingest)
                        .bearer_auth(TOKEN)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

//! A webhook receiver that verifies Standard Webhooks signatures and prints what arrives.
//!
//! `cargo run --example receiver -- 127.0.0.1:9000 whsec_…` (the secret is the endpoint's,
//! as `POST …/endpoints` returned it). Answers 204 to a valid request, 401 otherwise.

use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, Router};

async fn receive(State(secret): State<String>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verdict = hookrelay::signing::verify(
        &[secret.as_str()],
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        chrono::Utc::now().timestamp(),
    );
    match verdict {
        Ok(()) => {
            println!(
                "verified {}: {}",
                header("webhook-id").unwrap_or("?"),
                String::from_utf8_lossy(&body)
            );
            StatusCode::NO_CONTENT
        }
        Err(e) => {
            println!("REJECTED ({e}): {}", String::from_utf8_lossy(&body));
            StatusCode::UNAUTHORIZED
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(secret)) = (args.next(), args.next()) else {
        eprintln!("usage: receiver ADDR SECRET   (e.g. 127.0.0.1:9000 whsec_…)");
        std::process::exit(2);
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}/ (any path)");
    axum::serve(listener, Router::new().fallback(receive).with_state(secret)).await?;
    Ok(())
}

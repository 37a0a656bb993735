//! Credentials: admin tokens, sealing at rest, what lists show, dashboard sessions.

use reqwest::StatusCode;

use crate::helpers::*;

async fn status_with(app: &TestApp, token: &str) -> StatusCode {
    app.http
        .get(app.url("/v1/tenants"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn a_configured_admin_token_revokes_the_generated_one(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.admin_token = None).await;
    let generated = app
        .generated_admin_token
        .clone()
        .expect("generated on first start");
    assert_eq!(status_with(&app, &generated).await, StatusCode::OK);
    // Still the admin token after a plain restart, and not generated again.
    let app = app.restart().await;
    assert!(app.generated_admin_token.is_none());
    assert_eq!(status_with(&app, &generated).await, StatusCode::OK);

    // Once a token is configured, the generated one stops working.
    let app = app
        .restart_with(|c| c.admin_token = Some(ADMIN.into()))
        .await;
    assert_eq!(
        status_with(&app, &generated).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(&app, ADMIN).await, StatusCode::OK);
    assert!(!app.store.has_admin_token().await.unwrap());

    // Rotation: another configured token replaces it; neither older one works.
    let rotated = "rotated-admin-token-0123456789abcdefghij";
    let app = app
        .restart_with(|c| c.admin_token = Some(rotated.into()))
        .await;
    assert_eq!(status_with(&app, ADMIN).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_with(&app, &generated).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(&app, rotated).await, StatusCode::OK);

    // Unset again: a new token is generated; the revoked one stays revoked.
    let app = app.restart_with(|c| c.admin_token = None).await;
    let fresh = app.generated_admin_token.clone().expect("generated again");
    assert_ne!(fresh, generated);
    assert_eq!(status_with(&app, &fresh).await, StatusCode::OK);
    assert_eq!(
        status_with(&app, &generated).await,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

crate::both_stores!(a_configured_admin_token_revokes_the_generated_one);

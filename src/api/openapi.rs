//! The OpenAPI document, generated from the handlers and types (served at `/openapi.json`).

use axum::response::IntoResponse;
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use super::{deliveries, endpoints, events, inbox, ops, tenants};

#[derive(OpenApi)]
#[openapi(
    info(title = "hookrelay", description = "Webhook and event delivery: signed, retried, logged."),
    paths(
        tenants::create_tenant, tenants::list_tenants, tenants::get_tenant,
        tenants::delete_tenant, tenants::create_token, tenants::list_tokens,
        tenants::revoke_token,
        tenants::create_event_type, tenants::list_event_types,
        endpoints::create_endpoint, endpoints::list_endpoints, endpoints::get_endpoint,
        endpoints::update_endpoint, endpoints::delete_endpoint, endpoints::rotate_secret,
        endpoints::replay_endpoint, events::replay_event,
        events::create_event, events::list_events, events::get_event,
        deliveries::list_deliveries, deliveries::get_delivery, deliveries::retry_delivery,
        ops::health, ops::test_endpoint,
        inbox::create_inbox, inbox::list_inboxes, inbox::get_inbox, inbox::delete_inbox,
        inbox::list_messages,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "tenants"), (name = "event-types"), (name = "endpoints"),
        (name = "events"), (name = "deliveries"), (name = "operations"), (name = "inbox"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub async fn serve() -> impl IntoResponse {
    axum::Json(document())
}

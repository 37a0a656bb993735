//! The OpenAPI document, generated from the handlers and types (served at `/openapi.json`).

use axum::response::IntoResponse;
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use super::{audit, deliveries, endpoints, events, inbox, ops, portal, sources, tenants};

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
        endpoints::replay_endpoint, endpoints::endpoint_stats, events::replay_event,
        events::create_event, events::list_events, events::get_event,
        deliveries::list_deliveries, deliveries::get_delivery, deliveries::retry_delivery,
        ops::health, ops::status, ops::test_endpoint,
        inbox::create_inbox, inbox::list_inboxes, inbox::get_inbox, inbox::delete_inbox,
        inbox::list_messages,
        sources::create_source, sources::list_sources, sources::get_source,
        sources::delete_source, sources::list_rejections,
        audit::list_all, audit::list_tenant,
        portal::create_portal_link, portal::list_portal_links, portal::revoke_portal_link,
    ),
    modifiers(&BearerAuth, &CommonErrors),
    tags(
        (name = "tenants"), (name = "event-types"), (name = "endpoints"),
        (name = "events"), (name = "deliveries"), (name = "operations"), (name = "inbox"), (name = "sources"), (name = "audit"), (name = "portal"),
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

/// The errors every route can answer through its extractors, documented on each operation
/// that can produce them (found by schemathesis: undocumented 400, 401, 413 and 415):
/// 401 where a bearer token is required, 400 where there are parameters or a body (a bad
/// query, path or JSON), 413 and 415 where there is a body.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{path::Operation, ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let add = |op: &mut Operation, code: &str, description: &str| {
            op.responses
                .responses
                .entry(code.to_owned())
                .or_insert_with(|| error(description).into());
        };
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add(op, "401", "missing or invalid bearer token");
                }
                let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                if has_params || op.request_body.is_some() {
                    add(op, "400", "invalid request");
                }
                if op.request_body.is_some() {
                    add(op, "413", "request body is larger than the limit");
                    add(
                        op,
                        "415",
                        "the body is not JSON (Content-Type: application/json)",
                    );
                }
            }
        }
    }
}

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub async fn serve() -> impl IntoResponse {
    axum::Json(document())
}

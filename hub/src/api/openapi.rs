//! The API's OpenAPI 3.1 document, served at `GET /api/v1/openapi.json`
//! (no token: it describes the API and holds no data).
//!
//! It is derived from the code: each handler's `#[utoipa::path]` gives its
//! method, path, parameters, body and its own answers; the types' `ToSchema`
//! give the schemas; the route declarations (`routing`) give who may call
//! each operation and the body limit. What every route of a kind can answer
//! is added here from those facts, not written by hand on each handler:
//!
//! - a token route: `security` (bearer, the roles as the requirement's
//!   list, as OpenAPI 3.1 allows for non-OAuth schemes), `x-roles`, the
//!   roles in the description, 401, 403 and 500;
//! - a body: 400 (not JSON), 413 (over the limit), 415 (not
//!   `application/json`), 422 (a field wrong);
//! - query or path parameters: 400;
//! - every route: 503 (no answer within `api.request_timeout_ms`);
//! - every error answer: `application/problem+json`, a `Problem`.

use std::collections::btree_map::Entry;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use protocol::api::{Problem, PROBLEM_JSON};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr,
    ResponseBuilder,
};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::routing::{may, operations_mut, Allowed, Endpoint, Parts, Routes};

pub(super) fn routes() -> Routes {
    Routes::group("api").route(may::ANYONE, routes!(openapi_json))
}

/// The document, rendered once.
static RENDERED: OnceLock<String> = OnceLock::new();

/// This document: every route of the API, its parameters, bodies, answers
/// and the roles that may call it.
#[utoipa::path(get, path = "/api/v1/openapi.json",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    let text = RENDERED.get_or_init(|| {
        // invariant: the document is plain data (maps, strings, numbers);
        // serializing it cannot fail.
        document().to_json().expect("the document serializes")
    });
    ([(header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

/// The security scheme every token route names.
const BEARER: &str = "bearer";

/// The document of every route `super::all_routes` declares.
pub fn document() -> OpenApi {
    build(super::all_routes().into_parts())
}

fn build(parts: Parts) -> OpenApi {
    let Parts {
        mut paths,
        schemas,
        endpoints,
        ..
    } = parts;
    for endpoint in &endpoints {
        let Some(item) = paths.paths.get_mut(&endpoint.path) else {
            continue;
        };
        for (method, operation) in operations_mut(item) {
            if method == endpoint.method {
                complete(operation, endpoint);
            }
        }
    }
    let bearer = Http::builder()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "A token of a role the operation admits (`x-roles`): the configuration's admin or \
             metrics token, or one an admin created (`POST /api/v1/tokens`).",
        ))
        .build();
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .schema_from::<Problem>()
        .security_scheme(BEARER, SecurityScheme::Http(bearer))
        .build();
    let info = InfoBuilder::new()
        .title("Yizhan hub API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "The HTTP API of one service center's hub: devices, commands, residents, rooms, \
             resources, bookings, tokens and the audit log. Every error is an RFC 9457 problem \
             (`application/problem+json`); its `type` URIs are listed in docs/api.md.",
        ))
        .build();
    OpenApiBuilder::new()
        .info(info)
        .paths(paths)
        .components(Some(components))
        .build()
}

/// Adds what `endpoint`'s declaration implies to its operation.
fn complete(operation: &mut Operation, endpoint: &Endpoint) {
    let roles = match endpoint.allowed {
        Allowed::Anyone => Vec::new(),
        Allowed::Roles(roles) => roles.iter().map(|role| role.as_str()).collect(),
    };
    let who = if roles.is_empty() {
        "No token needed.".to_string()
    } else {
        format!("Roles: {}.", roles.join(", "))
    };
    let description = operation.description.take().unwrap_or_default();
    operation.description = Some(format!("{description}\n\n{who}").trim().to_string());
    operation.extensions = Some(
        ExtensionsBuilder::new()
            .add("x-roles", roles.clone())
            .build(),
    );
    let mut implied = vec![(
        "503",
        "no answer within `api.request_timeout_ms` (a change asked for may still be made)",
    )];
    if !roles.is_empty() {
        operation.security = Some(vec![SecurityRequirement::new(BEARER, roles)]);
        implied.extend([
            ("401", "no bearer token, or one the hub does not know"),
            ("403", "the token's role may not call this route"),
            ("500", "a store failure; the hub's log says more"),
        ]);
    }
    if operation.request_body.is_some() {
        implied.extend([
            ("400", "the body is not JSON"),
            ("413", "the body is over the route's limit"),
            ("415", "no `Content-Type: application/json`"),
            (
                "422",
                "a body field is missing, unknown or invalid (`detail` names it)",
            ),
        ]);
    }
    if takes_parameters(operation) {
        implied.push(("400", "a parameter is invalid (`detail` names it)"));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in implied {
        match responses.entry(status.to_string()) {
            Entry::Vacant(place) => {
                place.insert(ResponseBuilder::new().description(description).into());
            }
            Entry::Occupied(mut place) => {
                if let RefOr::T(response) = place.get_mut() {
                    if !response.description.contains(description) {
                        response.description = format!("{}; {description}", response.description);
                    }
                }
            }
        }
    }
    for (status, response) in responses.iter_mut() {
        if let RefOr::T(response) = response {
            if status.as_str() >= "400" && response.content.is_empty() {
                response
                    .content
                    .insert(PROBLEM_JSON.to_string(), RefOr::T(problem_content()));
            }
        }
    }
}

/// Whether the operation takes query or path parameters.
fn takes_parameters(operation: &Operation) -> bool {
    operation
        .parameters
        .iter()
        .flatten()
        .any(|parameter| match parameter {
            RefOr::T(p) => matches!(p.parameter_in, ParameterIn::Query | ParameterIn::Path),
            RefOr::Ref(_) => true,
        })
}

fn problem_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(Problem::name())))
        .build()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use super::*;

    fn json() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    /// Every route the router serves is in the document with the same
    /// method, and nothing else is: they come from the same declarations,
    /// and this keeps it so.
    #[test]
    fn the_document_holds_every_route_of_the_router_and_no_other() {
        let routes: BTreeSet<(String, String)> = super::super::endpoints()
            .into_iter()
            .map(|e| (e.method.to_lowercase(), e.path))
            .collect();
        let doc = json();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        assert_eq!(routes, documented);
        assert!(routes.contains(&("get".into(), "/api/v1/openapi.json".into())));
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn operations_name_their_roles_and_answer_problems() {
        let doc = json();
        let mut ids = BTreeSet::new();
        for endpoint in super::super::endpoints() {
            let op = &doc["paths"][&endpoint.path][endpoint.method.to_lowercase()];
            let at = format!("{} {}", endpoint.method, endpoint.path);
            assert!(
                ids.insert(op["operationId"].as_str().unwrap().to_string()),
                "{at}: operationId twice"
            );
            let roles: Vec<String> = match endpoint.allowed {
                Allowed::Anyone => vec![],
                Allowed::Roles(roles) => roles.iter().map(|r| r.as_str().to_string()).collect(),
            };
            assert_eq!(op["x-roles"], serde_json::json!(roles), "{at}");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{at}: no success"
            );
            if !roles.is_empty() {
                assert_eq!(op["security"][0][BEARER], serde_json::json!(roles), "{at}");
                for status in ["401", "403"] {
                    assert!(responses.contains_key(status), "{at}: {status}");
                }
            }
            if op.get("requestBody").is_some() {
                for status in ["413", "415", "422"] {
                    assert!(responses.contains_key(status), "{at}: {status}");
                }
            }
            for (status, response) in responses {
                if status.as_str() >= "400" {
                    let schema = &response["content"][PROBLEM_JSON]["schema"]["$ref"];
                    assert!(is_problem(&doc, schema), "{at} {status}: {schema}");
                }
            }
        }
    }

    #[test]
    fn links_lead_to_operations_that_exist() {
        let doc = json();
        let mut ids = BTreeSet::new();
        let mut targets = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                ids.insert(op["operationId"].as_str().unwrap().to_string());
                for response in op["responses"].as_object().unwrap().values() {
                    for link in response["links"].as_object().into_iter().flatten() {
                        targets.push(link.1["operationId"].as_str().unwrap().to_string());
                    }
                }
            }
        }
        assert!(targets.len() >= 5, "{targets:?}");
        for target in targets {
            assert!(
                ids.contains(&target),
                "a link to {target}, which is no operation"
            );
        }
    }

    /// Whether `reference` names `Problem`, or a schema that is a
    /// `Problem` with members of its own.
    fn is_problem(doc: &Value, reference: &Value) -> bool {
        let problem = "#/components/schemas/Problem";
        let Some(name) = reference
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
        else {
            return false;
        };
        reference == problem || doc["components"]["schemas"][name]["allOf"][0]["$ref"] == problem
    }

    /// Two types of one name would share one schema in the document.
    #[test]
    fn schema_names_are_unique() {
        let parts = super::super::all_routes().into_parts();
        let mut by_name: BTreeMap<String, Value> = BTreeMap::new();
        for (name, schema) in parts.schemas {
            let schema = serde_json::to_value(schema).unwrap();
            if let Some(seen) = by_name.insert(name.clone(), schema.clone()) {
                assert_eq!(seen, schema, "two schemas named {name}");
            }
        }
        let doc = json();
        let defined = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(
                defined.contains_key(name),
                "{name} is referenced, not defined"
            );
        }
    }
}

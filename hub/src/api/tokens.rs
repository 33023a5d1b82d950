//! Tokens an admin creates and revokes: `POST /api/v1/tokens {role, name}`
//! answers the token once (only its SHA-256 is kept), `GET` lists them
//! without secrets, `DELETE /api/v1/tokens/{id}` revokes one at once. The
//! configuration's admin and metrics tokens are not listed and cannot be
//! revoked here.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::keys::KeysError;
use super::routing::{may, Routes};
use super::{
    blocking, check_label, error, internal, json_body, unprocessable, ApiState, HttpError,
};
use crate::clock::unix_ms;
use crate::records::{ApiToken, Role};

/// A token the path names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct TokenPath {
    /// The token's id (not the token).
    id: String,
}

pub(super) fn routes() -> Routes {
    Routes::group("tokens")
        .route(may::ADMIN, routes!(list_tokens))
        .route(may::ADMIN, routes!(create_token))
        .route(may::ADMIN, routes!(revoke_token))
}

/// A token to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// What the token may do.
    #[schema(value_type = Role)]
    role: String,
    /// Who or what holds it: 1-64 letters, digits, '-' or '_'.
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "wechat-frontend")]
    name: String,
}

/// A token as listed: never its secret or hash.
#[derive(Serialize, ToSchema)]
struct TokenView {
    id: String,
    name: String,
    role: Role,
    created_at: u64,
}

impl From<ApiToken> for TokenView {
    fn from(token: ApiToken) -> TokenView {
        TokenView {
            id: token.id,
            name: token.name,
            role: token.role,
            created_at: token.created_at,
        }
    }
}

/// The answer to a creation: the token, shown this once.
#[derive(Serialize, ToSchema)]
struct TokenCreated {
    #[serde(flatten)]
    view: TokenView,
    token: String,
}

/// Creates a token of a role; the token is answered this once (only its
/// SHA-256 is kept).
#[utoipa::path(post, path = "/api/v1/tokens",
    request_body = NewToken,
    responses(
        (status = 201, description = "created", body = TokenCreated, links(
            ("revoke" = (operation_id = "revoke_token", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 409, description = "the name is taken, or the hub holds its most tokens"),
        (status = 422, description = "`role` or `name` invalid"),
    ))]
async fn create_token(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<(StatusCode, Json<TokenCreated>), HttpError> {
    let body = json_body(body)?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        unprocessable("`role` must be admin, staff, frontend, readonly or metrics")
    })?;
    check_label("name", &body.name)?;
    let (token, secret) = blocking(&state, move |state| {
        let created = state.keys.create(&state.store, role, &body.name, unix_ms());
        created.map_err(keys_error)
    })
    .await?;
    tracing::info!(token = %token.id, name = %token.name, role = %token.role, "API token created");
    let view = TokenView::from(token);
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            view,
            token: secret,
        }),
    ))
}

/// The tokens created through the API.
#[derive(Serialize, ToSchema)]
struct TokenList {
    tokens: Vec<TokenView>,
}

/// The tokens created through the API, without secrets (the
/// configuration's are not listed).
#[utoipa::path(get, path = "/api/v1/tokens",
    responses((status = 200, description = "every token created", body = TokenList)))]
async fn list_tokens(State(state): State<Arc<ApiState>>) -> Result<Json<TokenList>, HttpError> {
    let tokens = blocking(&state, |state| state.store.api_tokens().map_err(internal)).await?;
    let tokens = tokens.into_iter().map(TokenView::from).collect();
    Ok(Json(TokenList { tokens }))
}

/// A revocation's answer.
#[derive(Serialize, ToSchema)]
struct TokenRevoked {
    #[serde(flatten)]
    view: TokenView,
    revoked: bool,
}

/// Revokes a token: refused from the next request on.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}",
    params(TokenPath),
    responses(
        (status = 200, description = "revoked", body = TokenRevoked),
        (status = 404, description = "no token with this id"),
        (status = 409, description = "a token of the configuration, revoked only there"),
    ))]
async fn revoke_token(
    State(state): State<Arc<ApiState>>,
    Path(TokenPath { id }): Path<TokenPath>,
) -> Result<Json<TokenRevoked>, HttpError> {
    let token = blocking(&state, move |state| {
        state.keys.revoke(&state.store, &id).map_err(keys_error)
    })
    .await?;
    tracing::info!(token = %token.id, name = %token.name, role = %token.role, "API token revoked");
    let view = TokenView::from(token);
    Ok(Json(TokenRevoked {
        view,
        revoked: true,
    }))
}

fn keys_error(e: KeysError) -> HttpError {
    match e {
        KeysError::NameTaken(_) | KeysError::Full | KeysError::Configured(_) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        KeysError::Unknown(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        KeysError::Store(_) => internal(e),
    }
}

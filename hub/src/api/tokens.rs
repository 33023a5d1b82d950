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

use super::keys::KeysError;
use super::routing::{delete, get, may, Routes};
use super::{
    blocking, check_label, error, internal, json_body, unprocessable, ApiState, HttpError,
};
use crate::clock::unix_ms;
use crate::records::{ApiToken, Role};

pub(super) fn routes() -> Routes {
    Routes::default()
        .route(
            "/api/v1/tokens",
            get(may::ADMIN, list).post(may::ADMIN, create),
        )
        .route("/api/v1/tokens/{id}", delete(may::ADMIN, revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    role: String,
    name: String,
}

/// A token as listed: never its secret or hash.
#[derive(Serialize)]
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
#[derive(Serialize)]
struct Created {
    #[serde(flatten)]
    view: TokenView,
    token: String,
}

async fn create(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<(StatusCode, Json<Created>), HttpError> {
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
        Json(Created {
            view,
            token: secret,
        }),
    ))
}

#[derive(Serialize)]
struct TokenList {
    tokens: Vec<TokenView>,
}

async fn list(State(state): State<Arc<ApiState>>) -> Result<Json<TokenList>, HttpError> {
    let tokens = blocking(&state, |state| state.store.api_tokens().map_err(internal)).await?;
    let tokens = tokens.into_iter().map(TokenView::from).collect();
    Ok(Json(TokenList { tokens }))
}

#[derive(Serialize)]
struct Revoked {
    #[serde(flatten)]
    view: TokenView,
    revoked: bool,
}

async fn revoke(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, HttpError> {
    let token = blocking(&state, move |state| {
        state.keys.revoke(&state.store, &id).map_err(keys_error)
    })
    .await?;
    tracing::info!(token = %token.id, name = %token.name, role = %token.role, "API token revoked");
    let view = TokenView::from(token);
    Ok(Json(Revoked {
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

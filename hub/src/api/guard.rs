//! The one place every request's token is checked: a layer around every
//! route that reads the matched route's declared roles (`routing::Policy`),
//! recognises the bearer token (`keys`), answers 401 (no token, or one it
//! does not know) or 403 (a known token whose role the route does not
//! admit, naming the roles it needs), and hands every change asked by a
//! token — any method but GET and HEAD, allowed or refused — to the audit
//! log with its answer's status — or 499 when the request was dropped
//! before its answer (the client left mid-request; the change may still
//! have been made). Handlers take no token extractor: a handler runs only
//! for a caller its route admits.

use std::sync::Arc;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::RequestExt;

use super::audit::AuditLog;
use super::keys::{Caller, Keys};
use super::routing::{Allowed, Policy};
use super::{error, HttpError};
use crate::clock::unix_ms;
use crate::records::AuditEntry;

/// What the guard needs: the routes' roles, the tokens, the audit log.
pub(super) struct Guard {
    pub(super) policy: Policy,
    pub(super) keys: Arc<Keys>,
    pub(super) audit: AuditLog,
}

/// Longest object (the path's parameters) an audit entry keeps.
const MAX_OBJECT_CHARS: usize = 256;
/// The status an audit entry gets when its request was dropped before it
/// was answered (nginx's "client closed request").
pub(super) const NO_ANSWER: u16 = 499;

/// The layer: authenticate, authorise, run, audit.
pub(super) async fn guard(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(route) = request.extensions().get::<MatchedPath>().cloned() else {
        // No route matched: the fallback's 404, which reveals nothing.
        return next.run(request).await;
    };
    let method = request.method().clone();
    let allowed = match guard.policy.allowed(route.as_str(), &method) {
        Some(Allowed::Anyone) => return next.run(request).await,
        Some(allowed) => allowed,
        None => return not_allowed(&guard.policy, route.as_str()),
    };
    let caller = match caller(&guard.keys, request.headers()) {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    let object = path_object(&mut request).await;
    let pending = is_change(&method).then(|| Pending {
        audit: guard.audit.clone(),
        entry: Some(AuditEntry {
            id: 0,
            at: 0,
            token: caller.id.clone(),
            name: caller.name.clone(),
            role: caller.role,
            method: method.to_string(),
            route: route.as_str().to_string(),
            object,
            status: NO_ANSWER,
        }),
    });
    let response = if allowed.admits(caller.role) {
        next.run(request).await
    } else {
        forbidden(&caller, allowed).into_response()
    };
    if let Some(pending) = pending {
        pending.answered(response.status().as_u16());
    }
    response
}

/// A change's audit entry until its answer: recorded with the answer's
/// status, or with `NO_ANSWER` if the request is dropped first.
struct Pending {
    audit: AuditLog,
    entry: Option<AuditEntry>,
}

impl Pending {
    fn answered(mut self, status: u16) {
        self.record(status);
    }

    fn record(&mut self, status: u16) {
        if let Some(mut entry) = self.entry.take() {
            entry.status = status;
            entry.at = unix_ms();
            self.audit.record(entry);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.record(NO_ANSWER);
    }
}

/// The caller whose bearer token the request carries; 401 when it carries
/// none or one no one holds.
fn caller(keys: &Keys, headers: &HeaderMap) -> Result<Caller, HttpError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <token>`",
            )
        })?;
    keys.caller(token)
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "invalid bearer token"))
}

/// 403 naming the roles the route needs and the caller's.
fn forbidden(caller: &Caller, allowed: Allowed) -> HttpError {
    error(
        StatusCode::FORBIDDEN,
        format!(
            "this route needs the {} role; the {} token may not call it",
            allowed.roles_text(),
            caller.role
        ),
    )
}

/// 405 naming the methods the route takes (before any token is read: the
/// answer is the same for everyone).
fn not_allowed(policy: &Policy, route: &str) -> Response {
    let methods = policy.methods_of(route).join(", ");
    let reason = format!("{route} takes {methods}");
    (
        [(header::ALLOW, methods)],
        error(StatusCode::METHOD_NOT_ALLOWED, reason),
    )
        .into_response()
}

/// Whether `method` asks for a change (everything but GET and HEAD).
fn is_change(method: &Method) -> bool {
    method != Method::GET && method != Method::HEAD
}

/// The path's parameters in order, joined by `/` (`D1/c7`): the object a
/// change names. Truncated to `MAX_OBJECT_CHARS`.
async fn path_object(request: &mut Request) -> Option<String> {
    let params = request.extract_parts::<RawPathParams>().await.ok()?;
    let values: Vec<&str> = params.iter().map(|(_, value)| value).collect();
    if values.is_empty() {
        return None;
    }
    Some(values.join("/").chars().take(MAX_OBJECT_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Role;

    #[test]
    fn refusals_name_what_the_route_needs_and_what_the_token_is() {
        let caller = Caller {
            id: "t".into(),
            name: "n".into(),
            role: Role::Metrics,
        };
        let refusal = forbidden(&caller, super::super::routing::may::READ);
        assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            refusal.detail(),
            "this route needs the admin, staff or readonly role; the metrics token may not call it"
        );
        assert!(is_change(&Method::DELETE) && !is_change(&Method::HEAD));
    }

    #[tokio::test]
    async fn a_change_dropped_before_its_answer_is_recorded_as_499() {
        let (audit, queue) = AuditLog::channel();
        let mut received = queue.into_receiver();
        let entry = |route: &str| AuditEntry {
            id: 0,
            at: 0,
            token: "t".into(),
            name: "n".into(),
            role: Role::Frontend,
            method: "POST".into(),
            route: route.into(),
            object: None,
            status: NO_ANSWER,
        };
        let answered = Pending {
            audit: audit.clone(),
            entry: Some(entry("/answered")),
        };
        answered.answered(201);
        drop(Pending {
            audit,
            entry: Some(entry("/dropped")),
        });
        let first = received.recv().await.unwrap();
        let second = received.recv().await.unwrap();
        assert_eq!((first.route.as_str(), first.status), ("/answered", 201));
        assert_eq!((second.route.as_str(), second.status), ("/dropped", 499));
        assert!(second.at > 0);
        assert!(received.recv().await.is_none(), "each entry once");
    }
}

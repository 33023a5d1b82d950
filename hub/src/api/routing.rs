//! How route groups declare their routes:
//! `Routes::group("devices").route(may::READ, routes!(list_devices))`
//! takes the operation a handler's `#[utoipa::path]` declares (method,
//! path, parameters, bodies, answers) and who may call it, and builds from
//! them axum's router, the list of `(method, path, who may call it)` and
//! the OpenAPI paths (`openapi`) side by side — axum's router cannot be
//! asked for its routes, and a list or a document kept apart from it would
//! fall behind. The guard (`guard`) enforces the list for every request in
//! one place (`Policy`); `hub print-routes` prints it; the tests walk it.
//! An operation also declares the largest body it reads (`SMALL_BODY`
//! unless it says otherwise).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::Router;
use serde::Serialize;
use utoipa::openapi::path::{Operation, PathItem, Paths};
use utoipa::openapi::{RefOr, Schema};
use utoipa_axum::router::UtoipaMethodRouter;

use super::ApiState;
use crate::records::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// No token needed (`/healthz`, `/readyz`).
    Anyone,
    /// A token of one of these roles.
    Roles(&'static [Role]),
}

impl Allowed {
    /// Whether a token of `role` may call the route.
    pub fn admits(self, role: Role) -> bool {
        match self {
            Allowed::Anyone => true,
            Allowed::Roles(roles) => roles.contains(&role),
        }
    }

    /// `admin, staff or readonly`: the roles a refusal names.
    pub fn roles_text(self) -> String {
        let Allowed::Roles(roles) = self else {
            return "anyone".to_string();
        };
        let names: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
        match names.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => "no".to_string(),
        }
    }
}

impl std::fmt::Display for Allowed {
    /// `anyone`, or the roles joined by commas (`hub print-routes`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allowed::Anyone => f.write_str("anyone"),
            Allowed::Roles(roles) => {
                let names: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

impl Serialize for Allowed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The sets of roles routes declare (docs/security.md has the table). The
/// admin may call every route; the metrics token only `/metrics`.
pub(super) mod may {
    use super::Allowed;
    use crate::records::Role::{Admin, Frontend, Metrics, Readonly, Staff};

    pub const ANYONE: Allowed = Allowed::Anyone;
    /// Devices, certificates, resources, rooms, residents, tokens, the
    /// clock, the audit log.
    pub const ADMIN: Allowed = Allowed::Roles(&[Admin]);
    pub const SCRAPE: Allowed = Allowed::Roles(&[Admin, Metrics]);
    /// What the center runs on: devices, commands, residents, centers,
    /// rooms.
    pub const READ: Allowed = Allowed::Roles(&[Admin, Staff, Readonly]);
    /// Commands, check-ins, alarm acknowledgement.
    pub const STAFF: Allowed = Allowed::Roles(&[Admin, Staff]);
    /// Bookings and waitlists.
    pub const BOOK: Allowed = Allowed::Roles(&[Admin, Staff, Frontend]);
    /// What a booking front end shows: resources, availability,
    /// bookings, notifications, the schedule's clock.
    pub const SEE_BOOKINGS: Allowed = Allowed::Roles(&[Admin, Staff, Frontend, Readonly]);
}

/// The largest request body a route reads unless it declares more: every
/// body the API takes is a small JSON object (a command's `args` is at
/// most 4 KiB).
pub const SMALL_BODY: usize = 16 * 1024;

/// One route the API serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub method: &'static str,
    /// axum's template, e.g. `/api/v1/devices/{id}`.
    pub path: String,
    pub allowed: Allowed,
    /// The largest body the route reads (larger: 413).
    pub body_limit: usize,
}

/// One handler's operation as `utoipa_axum::routes!(handler)` gives it:
/// the schemas it names, its path and method, and the handler.
pub(super) type Declared = UtoipaMethodRouter<Arc<ApiState>>;

/// A group of routes: the router, the list, the document's paths and
/// schemas.
#[derive(Default)]
pub(super) struct Routes {
    router: Router<Arc<ApiState>>,
    endpoints: Vec<Endpoint>,
    paths: Paths,
    schemas: Vec<(String, RefOr<Schema>)>,
    /// The tag the group's operations carry in the document.
    tag: Option<&'static str>,
}

/// What all route groups declared, taken apart.
pub(super) struct Parts {
    pub(super) router: Router<Arc<ApiState>>,
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) paths: Paths,
    pub(super) schemas: Vec<(String, RefOr<Schema>)>,
}

impl Routes {
    /// A route group whose operations the document tags `tag`.
    pub(super) fn group(tag: &'static str) -> Routes {
        Routes {
            tag: Some(tag),
            ..Routes::default()
        }
    }

    /// The operation `routes!(handler)` declares, callable by `allowed`,
    /// reading bodies up to `SMALL_BODY`. One handler per call: its
    /// `#[utoipa::path]` names one method and one path.
    pub(super) fn route(self, allowed: Allowed, declared: Declared) -> Routes {
        self.route_reading(allowed, SMALL_BODY, declared)
    }

    /// As `route`, reading bodies up to `bytes` (larger: 413).
    pub(super) fn route_reading(
        mut self,
        allowed: Allowed,
        bytes: usize,
        (schemas, mut paths, handler): Declared,
    ) -> Routes {
        let handler = handler.layer(DefaultBodyLimit::max(bytes));
        for (path, item) in paths.paths.iter_mut() {
            self.router = self.router.route(path, handler.clone());
            for (method, operation) in operations_mut(item) {
                if let Some(tag) = self.tag {
                    operation
                        .tags
                        .get_or_insert_with(Vec::new)
                        .push(tag.to_string());
                }
                self.endpoints.push(Endpoint {
                    method,
                    path: path.clone(),
                    allowed,
                    body_limit: bytes,
                });
            }
        }
        self.paths.merge(paths);
        self.schemas.extend(schemas);
        self
    }

    pub(super) fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.endpoints.extend(other.endpoints);
        self.paths.merge(other.paths);
        self.schemas.extend(other.schemas);
        self
    }

    pub(super) fn into_parts(self) -> Parts {
        Parts {
            router: self.router,
            endpoints: self.endpoints,
            paths: self.paths,
            schemas: self.schemas,
        }
    }
}

/// The operations a path item holds, by method name.
pub(super) fn operations_mut(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("GET", &mut item.get),
        ("POST", &mut item.post),
        ("PUT", &mut item.put),
        ("PATCH", &mut item.patch),
        ("DELETE", &mut item.delete),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|op| (method, op)))
    .collect()
}

/// Who may call each route's methods: the list the routes declared, as
/// the guard looks it up.
pub(super) struct Policy {
    by_route: HashMap<String, Vec<(&'static str, Allowed)>>,
}

impl Policy {
    pub(super) fn of(endpoints: &[Endpoint]) -> Policy {
        let mut by_route: HashMap<String, Vec<(&'static str, Allowed)>> = HashMap::new();
        for e in endpoints {
            by_route
                .entry(e.path.clone())
                .or_default()
                .push((e.method, e.allowed));
        }
        Policy { by_route }
    }

    /// Who may call `method` on the route `path` (a template); `None` when
    /// the route does not take the method. HEAD is GET without the body
    /// (axum answers it with the GET handler), so it is allowed as GET.
    pub(super) fn allowed(&self, path: &str, method: &Method) -> Option<Allowed> {
        let method = if method == Method::HEAD {
            "GET"
        } else {
            method.as_str()
        };
        let methods = self.by_route.get(path)?;
        methods
            .iter()
            .find(|(m, _)| *m == method)
            .map(|(_, allowed)| *allowed)
    }

    /// The methods `path` takes (a 405's reason).
    pub(super) fn methods_of(&self, path: &str) -> Vec<&'static str> {
        let mut methods: Vec<&'static str> = self
            .by_route
            .get(path)
            .into_iter()
            .flatten()
            .map(|(method, _)| *method)
            .collect();
        methods.sort_unstable();
        methods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_roles_and_heads_are_gets() {
        assert_eq!(may::READ.roles_text(), "admin, staff or readonly");
        assert_eq!(may::ADMIN.roles_text(), "admin");
        assert_eq!(may::SCRAPE.to_string(), "admin,metrics");
        assert!(may::BOOK.admits(Role::Frontend) && !may::READ.admits(Role::Frontend));
        assert!(may::ANYONE.admits(Role::Metrics));
        let endpoints = [
            Endpoint {
                method: "GET",
                path: "/a".into(),
                allowed: may::READ,
                body_limit: SMALL_BODY,
            },
            Endpoint {
                method: "POST",
                path: "/a".into(),
                allowed: may::ADMIN,
                body_limit: SMALL_BODY,
            },
        ];
        let policy = Policy::of(&endpoints);
        assert_eq!(policy.allowed("/a", &Method::HEAD), Some(may::READ));
        assert_eq!(policy.allowed("/a", &Method::POST), Some(may::ADMIN));
        assert_eq!(policy.allowed("/a", &Method::PUT), None);
        assert_eq!(policy.allowed("/b", &Method::GET), None);
        assert_eq!(policy.methods_of("/a"), ["GET", "POST"]);
    }
}

//! How route groups declare their routes:
//! `Routes::route(path, get(may::READ, h).post(may::ADMIN, g))` builds
//! axum's router and, beside it, the list of `(method, path, who may call
//! it)` — axum's router cannot be asked for its routes, and a list kept
//! apart from it would fall behind. The guard (`guard`) enforces that list
//! for every request in one place (`Policy`); `hub print-routes` prints it;
//! the tests walk it. A path also declares the largest body it reads
//! (`SMALL_BODY` unless it says otherwise).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use serde::Serialize;

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
    pub path: &'static str,
    pub allowed: Allowed,
}

/// A group of routes and their list.
#[derive(Default)]
pub(super) struct Routes {
    router: Router<Arc<ApiState>>,
    endpoints: Vec<Endpoint>,
}

impl Routes {
    pub(super) fn route(mut self, path: &'static str, methods: Methods) -> Routes {
        let router = methods
            .router
            .layer(DefaultBodyLimit::max(methods.body_limit));
        self.router = self.router.route(path, router);
        self.endpoints
            .extend(methods.names.into_iter().map(|(method, allowed)| Endpoint {
                method,
                path,
                allowed,
            }));
        self
    }

    pub(super) fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.endpoints.extend(other.endpoints);
        self
    }

    pub(super) fn into_parts(self) -> (Router<Arc<ApiState>>, Vec<Endpoint>) {
        (self.router, self.endpoints)
    }
}

/// One path's handlers by method, who may call each, and the largest body
/// the path reads.
pub(super) struct Methods {
    router: MethodRouter<Arc<ApiState>>,
    names: Vec<(&'static str, Allowed)>,
    body_limit: usize,
}

impl Methods {
    fn on<H, T>(mut self, verb: Verb, allowed: Allowed, h: H) -> Methods
    where
        H: Handler<T, Arc<ApiState>>,
        T: 'static,
    {
        self.router = self.router.on(verb.1, h);
        self.names.push((verb.0, allowed));
        self
    }

    pub(super) fn post<H: Handler<T, Arc<ApiState>>, T: 'static>(
        self,
        allowed: Allowed,
        handler: H,
    ) -> Methods {
        self.on(POST, allowed, handler)
    }

    pub(super) fn put<H: Handler<T, Arc<ApiState>>, T: 'static>(
        self,
        allowed: Allowed,
        handler: H,
    ) -> Methods {
        self.on(PUT, allowed, handler)
    }

    pub(super) fn delete<H: Handler<T, Arc<ApiState>>, T: 'static>(
        self,
        allowed: Allowed,
        handler: H,
    ) -> Methods {
        self.on(DELETE, allowed, handler)
    }

    /// The path reads bodies up to `bytes` (larger: 413).
    pub(super) fn body_limit(mut self, bytes: usize) -> Methods {
        self.body_limit = bytes;
        self
    }
}

/// A method's name and axum's filter for it.
type Verb = (&'static str, MethodFilter);
const GET: Verb = ("GET", MethodFilter::GET);
const POST: Verb = ("POST", MethodFilter::POST);
const PUT: Verb = ("PUT", MethodFilter::PUT);
const DELETE: Verb = ("DELETE", MethodFilter::DELETE);

fn no_methods() -> Methods {
    Methods {
        router: MethodRouter::new(),
        names: Vec::new(),
        body_limit: SMALL_BODY,
    }
}

pub(super) fn get<H: Handler<T, Arc<ApiState>>, T: 'static>(allowed: Allowed, h: H) -> Methods {
    no_methods().on(GET, allowed, h)
}

pub(super) fn post<H: Handler<T, Arc<ApiState>>, T: 'static>(allowed: Allowed, h: H) -> Methods {
    no_methods().on(POST, allowed, h)
}

pub(super) fn put<H: Handler<T, Arc<ApiState>>, T: 'static>(allowed: Allowed, h: H) -> Methods {
    no_methods().on(PUT, allowed, h)
}

pub(super) fn delete<H: Handler<T, Arc<ApiState>>, T: 'static>(allowed: Allowed, h: H) -> Methods {
    no_methods().on(DELETE, allowed, h)
}

/// Who may call each route's methods: the list the routes declared, as
/// the guard looks it up.
pub(super) struct Policy {
    by_route: HashMap<(&'static str, &'static str), Allowed>,
}

impl Policy {
    pub(super) fn of(endpoints: &[Endpoint]) -> Policy {
        let by_route = endpoints
            .iter()
            .map(|e| ((e.path, e.method), e.allowed))
            .collect();
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
        self.by_route.get(&(path, method)).copied()
    }

    /// The methods `path` takes (a 405's reason).
    pub(super) fn methods_of(&self, path: &str) -> Vec<&'static str> {
        let mut methods: Vec<&'static str> = self
            .by_route
            .keys()
            .filter(|(p, _)| *p == path)
            .map(|(_, method)| *method)
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
                path: "/a",
                allowed: may::READ,
            },
            Endpoint {
                method: "POST",
                path: "/a",
                allowed: may::ADMIN,
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

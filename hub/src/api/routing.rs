//! How route groups declare their routes: `Routes::route(path, get(h).post(g))`
//! builds axum's router and, beside it, the list of `(method, path)` it
//! serves — axum's router cannot be asked for its routes, and a list kept
//! apart from it would fall behind. `hub print-routes` prints the list; the
//! tests walk it (every route but `/metrics` refuses the metrics token).

use std::sync::Arc;

use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use serde::Serialize;

use super::ApiState;

/// One route the API serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub method: &'static str,
    /// axum's template, e.g. `/api/v1/devices/{id}`.
    pub path: &'static str,
}

/// A group of routes and their list.
#[derive(Default)]
pub(super) struct Routes {
    router: Router<Arc<ApiState>>,
    endpoints: Vec<Endpoint>,
}

impl Routes {
    pub(super) fn route(mut self, path: &'static str, methods: Methods) -> Routes {
        self.router = self.router.route(path, methods.router);
        self.endpoints.extend(
            methods
                .names
                .into_iter()
                .map(|method| Endpoint { method, path }),
        );
        self
    }

    pub(super) fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.endpoints.extend(other.endpoints);
        self
    }

    pub(super) fn into_router(self) -> Router<Arc<ApiState>> {
        self.router
    }

    pub(super) fn endpoints(self) -> Vec<Endpoint> {
        self.endpoints
    }
}

/// One path's handlers by method, and the methods' names.
pub(super) struct Methods {
    router: MethodRouter<Arc<ApiState>>,
    names: Vec<&'static str>,
}

impl Methods {
    fn on<H, T>(mut self, name: &'static str, filter: MethodFilter, handler: H) -> Methods
    where
        H: Handler<T, Arc<ApiState>>,
        T: 'static,
    {
        self.router = self.router.on(filter, handler);
        self.names.push(name);
        self
    }

    pub(super) fn post<H: Handler<T, Arc<ApiState>>, T: 'static>(self, handler: H) -> Methods {
        self.on("POST", MethodFilter::POST, handler)
    }

    pub(super) fn put<H: Handler<T, Arc<ApiState>>, T: 'static>(self, handler: H) -> Methods {
        self.on("PUT", MethodFilter::PUT, handler)
    }

    pub(super) fn delete<H: Handler<T, Arc<ApiState>>, T: 'static>(self, handler: H) -> Methods {
        self.on("DELETE", MethodFilter::DELETE, handler)
    }
}

fn no_methods() -> Methods {
    Methods {
        router: MethodRouter::new(),
        names: Vec::new(),
    }
}

pub(super) fn get<H: Handler<T, Arc<ApiState>>, T: 'static>(handler: H) -> Methods {
    no_methods().on("GET", MethodFilter::GET, handler)
}

pub(super) fn post<H: Handler<T, Arc<ApiState>>, T: 'static>(handler: H) -> Methods {
    no_methods().on("POST", MethodFilter::POST, handler)
}

pub(super) fn put<H: Handler<T, Arc<ApiState>>, T: 'static>(handler: H) -> Methods {
    no_methods().on("PUT", MethodFilter::PUT, handler)
}

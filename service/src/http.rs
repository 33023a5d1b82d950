//! The HTTP request histogram's labels and the middleware that fills it.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::HistogramVec;

/// The `method` label of the HTTP request metrics: the standard methods,
/// else `other` (bounded whatever a client sends).
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// Times a request into `histogram` (labels `route`, `method`, `code`):
/// the route's template (`unmatched` when no route matched), its method
/// (`method_label`) and the status code. A layer:
/// `from_fn_with_state(histogram, track)`.
pub async fn track(
    State(histogram): State<HistogramVec>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(request.method().as_str());
    let response = next.run(request).await;
    histogram
        .with_label_values(&[&route, method, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::method_label;

    #[test]
    fn methods_beyond_the_standard_ones_are_other() {
        for (method, label) in [
            ("GET", "GET"),
            ("OPTIONS", "OPTIONS"),
            ("get", "other"),
            ("BREW", "other"),
        ] {
            assert_eq!(method_label(method), label, "{method}");
        }
    }
}

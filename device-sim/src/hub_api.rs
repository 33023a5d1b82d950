//! The hub's HTTP API as the simulator calls it with the admin token: a
//! JSON body in, the status and the JSON answer out. Setting up the
//! district and the residents' bookings go through it (provisioning keeps
//! its own client, `provision`, for its 201/409 credentials logic).

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

/// A call that got no answer, or an answer the caller cannot go on with.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    #[error("{method} {url}: {source}")]
    Http {
        method: Method,
        url: String,
        source: reqwest::Error,
    },
    #[error("{method} {url} answered {status}: {body}")]
    Refused {
        method: Method,
        url: String,
        status: StatusCode,
        body: Value,
    },
}

/// An answer: its status and JSON body (`null` when it had none).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The `detail` of a refusal (an RFC 9457 problem), or "".
    pub fn reason(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }
}

/// The hub's API at one base URL, with the admin token.
#[derive(Debug, Clone)]
pub struct HubApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl HubApi {
    /// `base` is the API's base URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str, token: &str) -> HubApi {
        HubApi {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// Sends `method path` with `body` (if any) and returns whatever the
    /// hub answered; an error only when no answer came.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Answer, ApiCallError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let failed = |source| ApiCallError::Http {
            method: method.clone(),
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let text = response.text().await.map_err(failed)?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// `call`, and an error unless the answer is a success.
    pub async fn expect_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Value, ApiCallError> {
        let answer = self.call(method.clone(), path, body).await?;
        if !answer.status.is_success() {
            return Err(ApiCallError::Refused {
                method,
                url: format!("{}{path}", self.base),
                status: answer.status,
                body: answer.body,
            });
        }
        Ok(answer.body)
    }

    pub async fn get(&self, path: &str) -> Result<Answer, ApiCallError> {
        self.call(Method::GET, path, None::<&Value>).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<Answer, ApiCallError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Answer, ApiCallError> {
        self.call(Method::DELETE, path, None::<&Value>).await
    }
}

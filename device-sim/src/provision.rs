//! Getting every device an identity from the hub's HTTP API
//! (`POST /api/v1/devices`) and keeping it in the credential directory, and
//! registering the gym members whose credentials the gates present
//! (`POST /api/v1/residents`).
//!
//! The hub is asked first: 201 means fresh credentials (stored, replacing any
//! stale file from a hub that was since wiped); 409 means the hub already
//! knows the id, so the stored file is the only copy and must exist.

use std::sync::Arc;

use protocol::api::{Problem, ProvisionRequest, Provisioned, ResidentRequest};
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::plan::DeviceSpec;
use crate::store::{CredentialStore, StoreError};
use crate::unix_ms;

/// Why a device could not get credentials.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("POST {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("the hub refused the admin token ({status}): {message}")]
    Unauthorized { status: StatusCode, message: String },
    #[error("the hub refused `{id}` ({status}): {message}")]
    Refused {
        id: String,
        status: StatusCode,
        message: String,
    },
    #[error(
        "`{id}` is already provisioned on the hub but {path} is missing; \
         its key was shown only once: revoke the device on the hub or restore the file"
    )]
    MissingCredentials { id: String, path: String },
    #[error("stored credentials of `{id}` expired at {not_after} (unix ms)")]
    Expired { id: String, not_after: u64 },
    #[error("the hub answered 201 with credentials for `{found}`, not `{expected}`")]
    WrongDevice { expected: String, found: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("provisioning task failed: {0}")]
    Task(String),
}

/// Provisions devices against one hub and stores their credentials.
#[derive(Debug, Clone)]
pub struct Provisioner {
    http: reqwest::Client,
    url: String,
    residents_url: String,
    admin_token: String,
    store: CredentialStore,
}

impl Provisioner {
    /// `api_url` is the hub's API base, e.g. `http://127.0.0.1:8080`.
    pub fn new(api_url: &str, admin_token: &str, store: CredentialStore) -> Self {
        let api = api_url.trim_end_matches('/');
        Provisioner {
            http: reqwest::Client::new(),
            url: format!("{api}/api/v1/devices"),
            residents_url: format!("{api}/api/v1/residents"),
            admin_token: admin_token.to_owned(),
            store,
        }
    }

    /// Credentials of `spec`'s device: fresh from the hub, or the stored
    /// ones if the hub already knows the id.
    pub async fn ensure(&self, spec: &DeviceSpec) -> Result<Provisioned, ProvisionError> {
        let request = ProvisionRequest {
            id: spec.id.clone(),
            center: spec.center.clone(),
            room: spec.room.clone(),
            kind: spec.kind,
        };
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.admin_token)
            .json(&request)
            .send()
            .await
            .map_err(|source| self.http_error(source))?;
        match response.status() {
            StatusCode::CREATED => self.store_fresh(&spec.id, response).await,
            StatusCode::CONFLICT => self.load_stored(&spec.id).await,
            status => Err(refusal(&spec.id, status, response).await),
        }
    }

    /// Provisions every spec, `concurrency` requests at a time; the result
    /// is in `specs` order. Stops at the first failure.
    pub async fn ensure_all(
        &self,
        specs: &[DeviceSpec],
        concurrency: usize,
    ) -> Result<Vec<Provisioned>, ProvisionError> {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for (index, spec) in specs.iter().cloned().enumerate() {
            let this = self.clone();
            let permits = Arc::clone(&permits);
            tasks.spawn(async move {
                // invariant: the semaphore is never closed.
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                this.ensure(&spec).await.map(|creds| (index, creds))
            });
        }
        let mut slots: Vec<Option<Provisioned>> = vec![None; specs.len()];
        while let Some(joined) = tasks.join_next().await {
            let (index, creds) = joined.map_err(|e| ProvisionError::Task(e.to_string()))??;
            slots[index] = Some(creds);
        }
        // invariant: every task filled its own slot or returned early above.
        Ok(slots.into_iter().map(|c| c.expect("slot filled")).collect())
    }

    /// Registers `residents` (id, credential), `concurrency` at a time; one
    /// the hub already knows (409) is left as it is. Returns how many are
    /// new.
    pub async fn register_residents(
        &self,
        residents: Vec<(String, String)>,
        concurrency: usize,
    ) -> Result<usize, ProvisionError> {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for (id, credential) in residents {
            let this = self.clone();
            let permits = Arc::clone(&permits);
            tasks.spawn(async move {
                // invariant: the semaphore is never closed.
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                this.register_resident(id, credential).await
            });
        }
        let mut created = 0;
        while let Some(joined) = tasks.join_next().await {
            created += usize::from(joined.map_err(|e| ProvisionError::Task(e.to_string()))??);
        }
        Ok(created)
    }

    /// `true` if the hub created the resident, `false` if it knew it.
    async fn register_resident(
        &self,
        id: String,
        credential: String,
    ) -> Result<bool, ProvisionError> {
        let request = ResidentRequest {
            id: id.clone(),
            credential,
            group: Some("adult".into()),
        };
        let response = self
            .http
            .post(&self.residents_url)
            .bearer_auth(&self.admin_token)
            .json(&request)
            .send()
            .await
            .map_err(|source| ProvisionError::Http {
                url: self.residents_url.clone(),
                source,
            })?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::CONFLICT => Ok(false),
            status => Err(refusal(&id, status, response).await),
        }
    }

    fn http_error(&self, source: reqwest::Error) -> ProvisionError {
        ProvisionError::Http {
            url: self.url.clone(),
            source,
        }
    }

    async fn store_fresh(
        &self,
        id: &str,
        response: reqwest::Response,
    ) -> Result<Provisioned, ProvisionError> {
        let creds: Provisioned = response
            .json()
            .await
            .map_err(|source| self.http_error(source))?;
        if creds.id != id {
            return Err(ProvisionError::WrongDevice {
                expected: id.to_owned(),
                found: creds.id,
            });
        }
        let path = self.store.save(&creds).await?;
        tracing::info!(device = id, path = %path.display(), "provisioned");
        Ok(creds)
    }

    async fn load_stored(&self, id: &str) -> Result<Provisioned, ProvisionError> {
        let creds =
            self.store
                .load(id)
                .await?
                .ok_or_else(|| ProvisionError::MissingCredentials {
                    id: id.to_owned(),
                    path: self
                        .store
                        .path(id)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                })?;
        check_not_expired(&creds, unix_ms())?;
        tracing::debug!(device = id, "reusing stored credentials");
        Ok(creds)
    }
}

/// Stored credentials are useless once their certificate expired.
fn check_not_expired(creds: &Provisioned, now_ms: u64) -> Result<(), ProvisionError> {
    if creds.not_after <= now_ms {
        return Err(ProvisionError::Expired {
            id: creds.id.clone(),
            not_after: creds.not_after,
        });
    }
    Ok(())
}

/// The error for an answer other than 201 or 409, with the problem's
/// `detail` when the hub answered one.
async fn refusal(id: &str, status: StatusCode, response: reqwest::Response) -> ProvisionError {
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Problem>(&text)
        .map(|problem| problem.detail)
        .unwrap_or(text);
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return ProvisionError::Unauthorized { status, message };
    }
    ProvisionError::Refused {
        id: id.to_owned(),
        status,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{creds, temp_dir};
    use protocol::DeviceKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn expired_credentials_are_refused() {
        let c = creds("a");
        assert!(check_not_expired(&c, c.not_after - 1).is_ok());
        assert!(matches!(
            check_not_expired(&c, c.not_after),
            Err(ProvisionError::Expired { .. })
        ));
    }

    /// A one-shot HTTP server answering every request with `status` and
    /// `body`; returns its base URL and the request it received.
    async fn fake_hub(
        status: &'static str,
        body: String,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and a body of Content-Length bytes.
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (url, handle)
    }

    fn spec(id: &str) -> DeviceSpec {
        DeviceSpec {
            id: id.into(),
            center: "center01".into(),
            room: "music".into(),
            kind: DeviceKind::Piano,
            number: 1,
            seed: 1,
        }
    }

    #[tokio::test]
    async fn created_credentials_are_stored_and_the_request_is_authorized() {
        let dir = temp_dir("prov-created");
        let body = serde_json::to_string(&creds("c01piano01")).unwrap();
        let (url, server) = fake_hub("201 Created", body).await;
        let p = Provisioner::new(&format!("{url}/"), "T0KEN", CredentialStore::new(&dir));
        let got = p.ensure(&spec("c01piano01")).await.unwrap();
        assert_eq!(got.mqtt_password, "secret");
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /api/v1/devices HTTP/1.1"),
            "{request}"
        );
        assert!(request
            .to_ascii_lowercase()
            .contains("authorization: bearer t0ken"));
        assert!(request.contains(r#""kind":"piano""#), "{request}");
        assert!(dir.join("c01piano01.json").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A problem's body as the hub answers it.
    fn problem(status: u16, kind: &str, detail: &str) -> String {
        serde_json::json!({
            "type": format!("{}{kind}", protocol::api::PROBLEM_BASE),
            "title": kind, "status": status, "detail": detail,
        })
        .to_string()
    }

    #[tokio::test]
    async fn conflict_uses_the_stored_file_or_says_it_is_missing() {
        let dir = temp_dir("prov-conflict");
        let store = CredentialStore::new(&dir);
        let conflict = || fake_hub("409 Conflict", problem(409, "conflict", "exists"));

        let (url, _server) = conflict().await;
        let p = Provisioner::new(&url, "t", store.clone());
        let err = p.ensure(&spec("c01piano02")).await.unwrap_err();
        assert!(
            matches!(err, ProvisionError::MissingCredentials { ref id, .. } if id == "c01piano02")
        );
        assert!(err.to_string().contains("c01piano02.json"), "{err}");

        store.save(&creds("c01piano02")).await.unwrap();
        let (url, _server) = conflict().await;
        let p = Provisioner::new(&url, "t", store);
        assert_eq!(
            p.ensure(&spec("c01piano02")).await.unwrap().id,
            "c01piano02"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_bad_token_is_reported_with_the_hubs_message() {
        let dir = temp_dir("prov-401");
        let (url, _server) = fake_hub(
            "401 Unauthorized",
            problem(401, "unauthorized", "bad token"),
        )
        .await;
        let p = Provisioner::new(&url, "t", CredentialStore::new(&dir));
        match p.ensure(&spec("a")).await {
            Err(ProvisionError::Unauthorized { message, .. }) => assert_eq!(message, "bad token"),
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }
}

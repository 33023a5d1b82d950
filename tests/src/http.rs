//! Reading the answers of the services' APIs in tests.

use anyhow::Result;
use serde::de::DeserializeOwned;

/// The JSON body of a successful answer to `request` (`what` names the
/// request when it fails).
pub async fn json_of<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T> {
    let response = request.send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{what}: {}",
        response.status()
    );
    Ok(response.json().await?)
}

/// The text of a successful answer to `request` (a `/metrics` scrape).
pub async fn text_of(request: reqwest::RequestBuilder) -> Result<String> {
    Ok(request.send().await?.error_for_status()?.text().await?)
}

//! Configuration errors, the default config, and the API's refusals.

use std::process::Command;

use protocol::DeviceKind;
use serde_json::json;
use tests::*;

#[test]
fn an_invalid_config_file_fails_with_exit_code_2_naming_the_field() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (text, field) in [
        ("[api]\nlisten = \"not an address\"\n", "api.listen"),
        ("[broker]\nsegmnt_count = 3\n", "segmnt_count"),
        ("[ingest]\nbatch_max = 0\n", "ingest.batch_max"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text)?;
        let output = Command::new(workspace_binary("hub"))
            .arg("--config")
            .arg(&path)
            .output()?;
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(field), "{stderr} should name {field}");
    }
    Ok(())
}

#[test]
fn print_default_config_prints_a_complete_file() -> anyhow::Result<()> {
    let output = Command::new(workspace_binary("hub"))
        .arg("print-default-config")
        .output()?;
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout)?;
    for section in ["[broker]", "[broker.plain]", "[ingest]", "[api]", "[log]"] {
        assert!(text.contains(section), "missing {section}");
    }
    Ok(())
}

#[tokio::test]
async fn the_api_refuses_bad_requests_with_a_reason() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let http = reqwest::Client::new();
    let devices = format!("{}/api/v1/devices", hub.api);

    let anonymous = http.get(&devices).send().await?;
    assert_eq!(anonymous.status(), 401);
    let body: serde_json::Value = anonymous.json().await?;
    assert!(body["detail"]
        .as_str()
        .is_some_and(|e| e.contains("Bearer")));
    assert_eq!(body["type"], "https://yizhan.dev/problems/unauthorized");
    let wrong = http.get(&devices).bearer_auth("wrong-token").send().await?;
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        http.get(format!("{}/metrics", hub.api))
            .send()
            .await?
            .status(),
        401
    );
    assert_eq!(
        http.get(format!("{}/healthz", hub.api))
            .send()
            .await?
            .status(),
        200
    );

    let check = |status: u16, body: serde_json::Value| {
        let hub = &hub;
        async move {
            let response = hub.post("/api/v1/devices").json(&body).send().await?;
            assert_eq!(response.status(), status, "{body}");
            let reply: serde_json::Value = response.json().await?;
            anyhow::Ok(reply)
        }
    };
    let reply = check(
        422,
        json!({"id":"bad-id","center":"c","room":"r","kind":"piano"}),
    )
    .await?;
    assert!(reply["detail"].as_str().is_some_and(|e| e.contains("`id`")));
    check(
        422,
        json!({"id":"dév1","center":"c","room":"r","kind":"piano"}),
    )
    .await?;
    check(
        422,
        json!({"id":"ok1","center":"c","room":"r","kind":"toaster"}),
    )
    .await?;
    check(
        422,
        json!({"id":"ok1","center":"","room":"r","kind":"piano"}),
    )
    .await?;
    let response = hub
        .post("/api/v1/devices")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    hub.provision("ok1", DeviceKind::Piano).await?;
    check(
        409,
        json!({"id":"ok1","center":"c","room":"r","kind":"piano"}),
    )
    .await?;
    assert_eq!(
        hub.get("/api/v1/devices/nobody").send().await?.status(),
        404
    );
    assert_eq!(
        hub.delete("/api/v1/devices/nobody").send().await?.status(),
        404
    );
    assert_eq!(
        hub.get("/api/v1/devices?kind=toaster")
            .send()
            .await?
            .status(),
        400
    );
    let listed: serde_json::Value = hub
        .get("/api/v1/devices?kind=piano&online=false")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["devices"].as_array().map(Vec::len), Some(1));
    Ok(())
}

//! Roles and the audit log (issue 13, item 1): every route `hub
//! print-routes` lists, called by every role, answers as its declared roles
//! say, and those are the roles docs/security.md documents; tokens an admin
//! creates work until revoked (refused at once) and across a restart; every
//! change a token asks is in the audit log with who, role, route, object
//! and status, paged, without a body's secret.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use tests::*;

/// The document whose roles table the routes must match.
const SECURITY: &str = include_str!("../../docs/security.md");

/// The routes as docs/security.md's table gives them
/// (`| GET | \`/path\` | admin, staff |`).
fn documented_routes() -> Vec<ListedRoute> {
    SECURITY
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let method = *cells.get(1)?;
            if !["GET", "POST", "PUT", "DELETE"].contains(&method) {
                return None;
            }
            let path = cells.get(2)?.trim_matches('`');
            let roles = cells.get(3)?.split(',').map(|r| r.trim().to_string());
            Some(ListedRoute {
                method: method.to_string(),
                path: path.to_string(),
                roles: roles.collect(),
            })
        })
        .collect()
}

/// Creates a token of `role` named `name` as the admin; the token.
async fn create_token(hub: &HubProcess, role: &str, name: &str) -> Result<String> {
    let (status, body) = hub
        .post_json("/api/v1/tokens", &json!({ "role": role, "name": name }))
        .await?;
    ensure!(status == 201, "creating a {role} token: {status} {body}");
    Ok(body["token"].as_str().context("token")?.to_string())
}

/// A request with no body (harmless: ids that do not exist, no JSON), its
/// status and body.
async fn call(
    hub: &HubProcess,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let mut request = reqwest::Client::new().request(
        Method::from_bytes(method.as_bytes())?,
        format!("{}{path}", hub.api),
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// The status `call` answers.
async fn status_of(hub: &HubProcess, method: &str, path: &str, token: Option<&str>) -> Result<u16> {
    Ok(call(hub, method, path, token).await?.0)
}

#[tokio::test]
async fn every_route_answers_every_role_as_declared_and_documented() -> Result<()> {
    let hub = HubProcess::start(HubOptions {
        token_files: true,
        ..HubOptions::default()
    })
    .await?;
    let routes = listed_routes()?;
    assert!(routes.len() >= 38, "{routes:?}");
    let documented: BTreeSet<ListedRoute> = documented_routes().into_iter().collect();
    let listed: BTreeSet<ListedRoute> = routes.iter().cloned().collect();
    assert_eq!(
        listed, documented,
        "hub print-routes and docs/security.md's roles table differ"
    );

    let mut callers = vec![
        ("admin", ADMIN_TOKEN.to_string()),
        ("metrics", METRICS_TOKEN.to_string()),
    ];
    for role in ["admin", "staff", "frontend", "readonly", "metrics"] {
        let token = create_token(&hub, role, &format!("e2e-{role}")).await?;
        callers.push((role, token));
    }
    let mut checked = 0;
    for ListedRoute {
        method,
        path,
        roles,
    } in &routes
    {
        let url = fill_template(path);
        let anyone = roles.contains("anyone");
        for token in [None, Some("not-a-token-of-anyone-0123")] {
            let (status, body) = call(&hub, method, &url, token).await?;
            if anyone {
                assert!((200..300).contains(&status), "{method} {path}: {status}");
            } else {
                assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            }
        }
        for (role, token) in &callers {
            let (status, body) = call(&hub, method, &url, Some(token)).await?;
            if anyone || roles.contains(*role) {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} refused a {role} token: {status} {body}"
                );
            } else {
                assert_eq!(status, 403, "{method} {path} let a {role} token in: {body}");
                let needs = format!("{} token may not call it", role);
                assert!(
                    body.contains("this route needs the") && body.contains(&needs),
                    "{body}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * callers.len());
    // HEAD is GET without a body, for the guard too.
    let staff = &callers
        .iter()
        .find(|(r, _)| *r == "staff")
        .context("staff")?
        .1;
    assert_eq!(
        status_of(&hub, "HEAD", "/api/v1/tokens", Some(staff)).await?,
        403
    );
    assert_eq!(
        status_of(&hub, "HEAD", "/api/v1/tokens", Some(ADMIN_TOKEN)).await?,
        200
    );
    // A method the route does not take: 405 naming those it does, for anyone.
    let (status, body) = call(&hub, "PATCH", "/api/v1/tokens", None).await?;
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("GET, POST"), "{body}");
    Ok(())
}

#[tokio::test]
async fn tokens_are_created_listed_without_secrets_and_revoked_at_once() -> Result<()> {
    let mut hub = HubProcess::start(HubOptions::default()).await?;
    let kiosk = create_token(&hub, "frontend", "kiosk-1").await?;
    let desk = create_token(&hub, "staff", "desk-1").await?;
    assert_eq!(
        status_of(&hub, "GET", "/api/v1/resources", Some(&kiosk)).await?,
        200
    );
    assert_eq!(
        status_of(&hub, "GET", "/api/v1/devices", Some(&kiosk)).await?,
        403
    );

    let bad = [
        (json!({ "role": "root", "name": "x" }), 422, "`role`"),
        (json!({ "role": "staff", "name": "a b" }), 422, "`name`"),
        (json!({ "role": "staff", "name": "desk-1" }), 409, "desk-1"),
        (json!({ "role": "staff" }), 422, "name"),
    ];
    for (body, expected, needle) in bad {
        let (status, answer) = hub.post_json("/api/v1/tokens", &body).await?;
        assert_eq!(status, expected, "{body}: {answer}");
        assert!(answer.to_string().contains(needle), "{body}: {answer}");
    }

    let listed = hub.get_json("/api/v1/tokens").await?;
    let tokens = listed["tokens"].as_array().context("tokens")?;
    let names: Vec<&str> = tokens.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(
        names.contains(&"kiosk-1") && names.contains(&"desk-1"),
        "{listed}"
    );
    let text = listed.to_string();
    assert!(
        !text.contains(&kiosk) && !text.contains("sha256") && !text.contains("\"token\""),
        "{text}"
    );

    let id = |name: &str| -> Result<String> {
        let token = tokens
            .iter()
            .find(|t| t["name"] == name)
            .context("listed")?;
        Ok(token["id"].as_str().context("id")?.to_string())
    };
    let kiosk_id = id("kiosk-1")?;
    let response = hub
        .delete(&format!("/api/v1/tokens/{kiosk_id}"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let (status, body) = call(&hub, "GET", "/api/v1/resources", Some(&kiosk)).await?;
    assert_eq!(status, 401, "a revoked token is refused at once: {body}");
    let again = hub
        .delete(&format!("/api/v1/tokens/{kiosk_id}"))
        .send()
        .await?;
    assert_eq!(again.status(), 404);
    let config = hub.delete("/api/v1/tokens/config-admin").send().await?;
    assert_eq!(
        config.status(),
        409,
        "the configuration's token is changed there"
    );

    // Kept across a restart: the staff token works, the revoked one not.
    hub.restart().await?;
    assert_eq!(
        status_of(&hub, "GET", "/api/v1/devices", Some(&desk)).await?,
        200
    );
    assert_eq!(
        status_of(&hub, "GET", "/api/v1/resources", Some(&kiosk)).await?,
        401
    );
    Ok(())
}

/// Every entry of the audit log, walked `limit` at a time with `next`.
async fn audit_log(hub: &HubProcess, limit: usize) -> Result<(Vec<Value>, usize)> {
    let (mut entries, mut pages, mut after) = (Vec::new(), 0, None::<String>);
    loop {
        let cursor = after
            .as_ref()
            .map(|a| format!("&after={a}"))
            .unwrap_or_default();
        let page = hub
            .get_json(&format!("/api/v1/audit?limit={limit}{cursor}"))
            .await?;
        let batch = page["entries"].as_array().context("entries")?;
        ensure!(batch.len() <= limit, "page over its limit: {page}");
        entries.extend(batch.iter().cloned());
        pages += 1;
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok((entries, pages)),
        }
    }
}

/// An entry as `name role METHOD route object status` (`-`: no object).
fn summary(entry: &Value) -> String {
    let text = |field: &str| entry[field].as_str().unwrap_or("-").to_string();
    let fields = ["name", "role", "method", "route", "object"].map(text);
    format!("{} {}", fields.join(" "), entry["status"])
}

#[tokio::test]
async fn the_audit_log_records_every_change_with_who_and_the_answer_and_pages() -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let staff = create_token(&hub, "staff", "desk-2").await?;
    let frontend = create_token(&hub, "frontend", "wechat").await?;
    let readonly = create_token(&hub, "readonly", "auditor").await?;
    let credential = "qr-credential-never-logged-4711";
    let (status, _) = hub
        .post_json(
            "/api/v1/residents",
            &json!({ "id": "r1", "credential": credential, "group": "senior" }),
        )
        .await?;
    assert_eq!(status, 201);
    let changes = [
        ("POST", "/api/v1/residents/r1/block", &staff, 403),
        ("POST", "/api/v1/devices/d9/alarm/ack", &staff, 404),
        ("DELETE", "/api/v1/bookings/b7", &frontend, 404),
        ("POST", "/api/v1/bookings", &frontend, 415),
    ];
    for (method, path, token, expected) in changes {
        assert_eq!(
            status_of(&hub, method, path, Some(token)).await?,
            expected,
            "{method} {path}"
        );
    }
    // Not changes, or no known token: not in the log.
    call(&hub, "GET", "/api/v1/devices", Some(&readonly)).await?;
    call(&hub, "POST", "/api/v1/residents", None).await?;
    call(
        &hub,
        "POST",
        "/api/v1/residents",
        Some("unknown-token-0123456789"),
    )
    .await?;

    let expected = [
        "configuration admin POST /api/v1/tokens - 201",
        "configuration admin POST /api/v1/tokens - 201",
        "configuration admin POST /api/v1/tokens - 201",
        "configuration admin POST /api/v1/residents - 201",
        "desk-2 staff POST /api/v1/residents/{id}/block r1 403",
        "desk-2 staff POST /api/v1/devices/{id}/alarm/ack d9 404",
        "wechat frontend DELETE /api/v1/bookings/{id} b7 404",
        "wechat frontend POST /api/v1/bookings - 415",
    ];
    // Written moments after each answer, by the audit task.
    let (entries, pages) = eventually(Duration::from_secs(5), "8 audit entries", || async {
        audit_log(&hub, 3)
            .await
            .ok()
            .filter(|(e, _)| e.len() >= expected.len())
    })
    .await?;
    assert_eq!(pages, 3, "8 entries, 3 a page");
    let got: Vec<String> = entries.iter().map(summary).collect();
    assert_eq!(got, expected);
    let ids: Vec<u64> = entries.iter().filter_map(|e| e["id"].as_u64()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let staff_id = entries[4]["token"].as_str().context("token id")?;
    assert_eq!(staff_id.len(), 16, "the token's id, not the token");
    assert_eq!(entries[0]["token"], "config-admin");
    let now = now_ms();
    assert!(entries.iter().all(|e| e["at"]
        .as_u64()
        .is_some_and(|at| at <= now && at + 60_000 > now)));
    let text = serde_json::to_string(&entries)?;
    for secret in [credential, &staff, &frontend] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }
    // Admin only.
    assert_eq!(
        status_of(&hub, "GET", "/api/v1/audit", Some(&readonly)).await?,
        403
    );
    Ok(())
}

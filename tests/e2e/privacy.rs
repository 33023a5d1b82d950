//! Privacy (issue 13, item 8): after a simulated district's residents
//! registered, booked and passed gates, neither the hub's log, nor
//! `/metrics`, nor any error answer names a resident or shows a
//! credential. Every id the simulator gives a resident (`<center>m<5
//! digits>` for gym members, `<center>r<5 digits>` for those who book)
//! and every credential it presents (`qr-<16 hex>`) is looked for.

use std::time::Duration;

use device_sim::crowd::member_credential;
use serde_json::{json, Value};
use tests::*;

const START: &str = "2026-11-28T09:00:00+08:00";
const SEED: u64 = 7;

/// Every resident id and credential of the simulator's shapes in `text`.
fn residents_in(text: &str, centers: &[String]) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for center in centers {
        for (at, _) in text.match_indices(center.as_str()) {
            let rest = &bytes[at + center.len()..];
            let shaped = rest.len() >= 6
                && matches!(rest[0], b'm' | b'r')
                && rest[1..6].iter().all(u8::is_ascii_digit);
            if shaped {
                found.push(text[at..at + center.len() + 6].to_owned());
            }
        }
    }
    for (at, _) in text.match_indices("qr-") {
        let rest = &bytes[at + 3..];
        if rest.len() >= 16 && rest[..16].iter().all(u8::is_ascii_hexdigit) {
            found.push(text[at..at + 19].to_owned());
        }
    }
    found
}

/// Requests that must fail without naming the resident or credential
/// they carry: `(method, path, body)`.
fn bad_requests(real: &str, credential: &str, unknown: &str) -> Vec<(&'static str, String, Value)> {
    let booking = |fields: Value| {
        let mut body =
            json!({"resource": "nope", "slot_start": START, "resident": real, "group": "adult"});
        for (key, value) in fields.as_object().into_iter().flatten() {
            body[key] = value.clone();
        }
        body
    };
    vec![
        (
            "POST",
            "/api/v1/residents".into(),
            json!({"id": real, "credential": "qr-fresh"}),
        ),
        (
            "POST",
            "/api/v1/residents".into(),
            json!({"id": unknown, "credential": credential}),
        ),
        (
            "POST",
            "/api/v1/residents".into(),
            json!({"id": real, "credential": ""}),
        ),
        (
            "POST",
            "/api/v1/residents".into(),
            json!({"id": format!("{real}!"), "credential": credential}),
        ),
        (
            "POST",
            "/api/v1/residents".into(),
            json!({"id": real, "credential": credential, "pin": credential}),
        ),
        ("GET", format!("/api/v1/residents/{unknown}"), Value::Null),
        (
            "POST",
            format!("/api/v1/residents/{unknown}/block"),
            Value::Null,
        ),
        ("POST", "/api/v1/bookings".into(), booking(json!({}))),
        (
            "POST",
            "/api/v1/bookings".into(),
            booking(json!({"slot_start": "soon"})),
        ),
        (
            "POST",
            "/api/v1/bookings".into(),
            booking(json!({"group": "aliens"})),
        ),
        (
            "POST",
            "/api/v1/bookings".into(),
            booking(json!({"resident": format!("{real} x")})),
        ),
        (
            "POST",
            "/api/v1/bookings".into(),
            booking(json!({"credential": credential})),
        ),
        (
            "GET",
            format!("/api/v1/bookings?resident={real}&from=never&to=later"),
            Value::Null,
        ),
        (
            "GET",
            format!("/api/v1/bookings?resident={real}&from=2026-11-28&to=2027-11-28"),
            Value::Null,
        ),
        (
            "GET",
            format!("/api/v1/notifications?resident={real}&limit=0"),
            Value::Null,
        ),
        (
            "GET",
            format!("/api/v1/notifications?resident={real}&after=zz"),
            Value::Null,
        ),
    ]
}

/// A booking for `real` of a slot that is full (filled here by other
/// residents if the district left places): a 409 with an offer.
async fn full_slot_request(hub: &HubProcess, real: &str) -> anyhow::Result<Value> {
    let clock = hub.get_json("/api/v1/schedule/clock").await?;
    let now = clock["now"].as_u64().unwrap_or(u64::MAX);
    let resources = hub.get_json("/api/v1/resources").await?;
    for resource in resources["resources"].as_array().into_iter().flatten() {
        let id = resource["id"].as_str().unwrap_or_default();
        let path = format!(
            "/api/v1/resources/{id}/availability?from={now}&to={}",
            now + 86_400_000
        );
        let slots = hub.get_json(&path).await?;
        let open = slots["slots"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|slot| {
                slot["start"].as_u64().is_some_and(|start| start > now)
                    && slot["held"].as_object().is_none_or(|held| held.is_empty())
                    && slot["free"].as_u64().is_some_and(|free| free <= 20)
                    && slot["blocked"] == false
            });
        let Some(slot) = open else { continue };
        let booking = |resident: String| json!({"resource": id, "slot_start": slot["start"], "resident": resident, "group": "adult"});
        for n in 0..slot["free"].as_u64().unwrap_or(0) {
            let (status, body) = hub
                .post_json("/api/v1/bookings", &booking(format!("filler{n}")))
                .await?;
            anyhow::ensure!(status == 201, "filling {id}: {status} {body}");
        }
        return Ok(booking(real.to_owned()));
    }
    anyhow::bail!("no bookable slot ahead: {resources}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_resident_id_or_credential_in_the_log_metrics_or_error_answers() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions {
        extra_config: format!(
            "{SIMULATED_CLOCKS}[schedule]\nclock = \"fixed:{START}\"\ntick_ms = 20\n"
        ),
        env: vec![(
            "YIZHAN_LOG__FILTER".into(),
            "debug,rumqttd=warn,hyper=info,h2=info".into(),
        )],
        ..HubOptions::default()
    })
    .await?;
    let args = format!(
        "--centers 2 --speed 1800 --seed {SEED} --start {START} --sim-duration 4h --telemetry-interval 500ms"
    );
    let run = run_device_sim(&hub, &args, Duration::from_secs(180)).await?;
    let truth: device_sim::GroundTruth = serde_json::from_value(run.truth)?;
    let centers: Vec<String> = truth.centers.keys().cloned().collect();
    assert!(
        truth.totals.access_opened > 0,
        "residents passed gates: {:?}",
        truth.totals
    );
    assert!(!truth.bookings.is_empty(), "residents booked");

    // The scan finds what is there: a resident's own record names them.
    let real = format!("{}m00000", centers[0]);
    let credential = member_credential(SEED, &centers[0], 0);
    let own = hub.get_json(&format!("/api/v1/residents/{real}")).await?;
    assert_eq!(
        residents_in(&own.to_string(), &centers),
        vec![real.clone()],
        "{own}"
    );
    assert_eq!(
        residents_in(&format!("x{credential}."), &centers),
        vec![credential.clone()]
    );

    let unknown = format!("{}m99999", centers[0]);
    let mut answers = Vec::new();
    let mut requests = bad_requests(&real, &credential, &unknown);
    requests.push((
        "POST",
        "/api/v1/bookings".into(),
        full_slot_request(&hub, &real).await?,
    ));
    for (method, path, body) in requests {
        let request = match method {
            "GET" => hub.get(&path),
            _ => hub.post(&path),
        };
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        assert!(
            (400..500).contains(&status),
            "{method} {path} {body}: {status} {text}"
        );
        answers.push(format!("{method} {path} -> {status} {text}"));
    }
    let metrics = hub.metrics().await?;
    let log = hub.log();
    eprintln!(
        "{} error answers, {} bytes of /metrics, {} bytes of log",
        answers.len(),
        metrics.len(),
        log.len()
    );
    let mut leaks = Vec::new();
    for answer in &answers {
        let hits = residents_in(answer.split_once(" -> ").map_or("", |(_, a)| a), &centers);
        if !hits.is_empty() {
            leaks.push(format!("an error answer names {hits:?}: {answer}"));
        }
    }
    let hits = residents_in(&metrics, &centers);
    if !hits.is_empty() {
        leaks.push(format!("/metrics names {hits:?}"));
    }
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| !residents_in(line, &centers).is_empty())
        .collect();
    if !lines.is_empty() {
        let first: Vec<&str> = lines.iter().take(5).copied().collect();
        leaks.push(format!(
            "{} log lines name residents or credentials, e.g.:\n{}",
            lines.len(),
            first.join("\n")
        ));
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
    assert!(
        log.contains("resident registered"),
        "the registrations were logged (tagged)"
    );
    Ok(())
}

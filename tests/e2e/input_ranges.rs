//! Issue 13, item 4: every time and number the API takes is range-checked.
//! A table of bad requests per route against a real hub: each is answered
//! within a second with a 4xx naming the field (400 for the query string,
//! 422 for a JSON body, as the API answers shapes; the problem's `detail`), nothing panics a
//! thread or walks millions of days, and afterwards the hub is still ready,
//! still books a good request and still renders `/metrics` at once.
//!
//! Before the fix, `slot_start`, `from`/`to` and `now` took any u64: a
//! window near `u64::MAX` walked ~95 million days on a blocking thread, a
//! `now` near it overflowed the desk's and ingest's arithmetic, and a
//! resource with `horizon_days = 4294967295` or a share of `4294967295`
//! percent hung every scrape or overflowed the share's places.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::*;

const CONFIG: &str = include_str!("../fixtures/schedule.toml");

/// Longest a refusal may take: they do no work.
const PROMPT: Duration = Duration::from_secs(1);

/// One bad request and what its answer must say.
struct Case {
    method: &'static str,
    path: String,
    body: Option<Value>,
    status: u16,
    /// A field name (or phrase) the problem's `detail` must contain.
    names: &'static str,
}

fn get(path: &str, status: u16, names: &'static str) -> Case {
    Case {
        method: "GET",
        path: path.into(),
        body: None,
        status,
        names,
    }
}

fn send(method: &'static str, path: &str, body: Value, names: &'static str) -> Case {
    Case {
        method,
        path: path.into(),
        body: Some(body),
        status: 422,
        names,
    }
}

const U64_MAX: u64 = u64::MAX;

fn availability(query: &str) -> String {
    format!("/api/v1/resources/piano1/availability?{query}")
}

fn booking(slot_start: Value) -> Value {
    json!({"resource": "piano1", "slot_start": slot_start, "resident": "r1", "group": "adult"})
}

/// A resource entry (`PUT /api/v1/resources/bad`) with `field` set to `value`.
fn resource_with(field: &str, value: Value) -> Value {
    let mut entry = json!({
        "id": "bad", "center": "c1", "kind": "class", "room": "hall", "capacity": 10,
        "slot_minutes": 60, "hours": "24h", "price": 0.0, "market_price": 10.0
    });
    entry[field] = value;
    entry
}

fn cases() -> Vec<Case> {
    let near_end = format!("from={}&to={U64_MAX}", U64_MAX - 1_000);
    vec![
        // Availability and booking lists: instants in 2000-2199, 31 days.
        get(&availability(&near_end), 400, "`from`"),
        get(&availability("from=0&to=86400000"), 400, "`from`"),
        get(&availability("from=2027-01-04&to=9999-12-31"), 400, "`to`"),
        get(
            &availability("from=2027-01-04&to=2027-06-01"),
            400,
            "31 days",
        ),
        get(&availability("from=2027-01-04&to=2027-01-03"), 400, "`to`"),
        get(
            &availability("from=2027-01-04T00:00:00Z&to=253402300799999"),
            400,
            "`to`",
        ),
        get(
            &format!("/api/v1/bookings?resource=piano1&{near_end}"),
            400,
            "`from`",
        ),
        get(
            "/api/v1/bookings?resident=a%20b&from=2027-01-04&to=2027-01-05",
            400,
            "`resident`",
        ),
        get(
            &format!(
                "/api/v1/bookings?resource={}&from=2027-01-04&to=2027-01-05",
                "x".repeat(100)
            ),
            400,
            "`resource`",
        ),
        // A booking's instant and a child's birth date.
        send(
            "POST",
            "/api/v1/bookings",
            booking(json!(U64_MAX)),
            "`slot_start`",
        ),
        send(
            "POST",
            "/api/v1/bookings",
            booking(json!("9999-12-31T15:00:00Z")),
            "`slot_start`",
        ),
        send(
            "POST",
            "/api/v1/bookings",
            booking(json!(1e300)),
            "`slot_start`",
        ),
        send(
            "POST",
            "/api/v1/bookings",
            booking(json!(-1)),
            "`slot_start`",
        ),
        send(
            "POST",
            "/api/v1/bookings",
            json!({"resource": "childcare", "slot_start": "2027-01-05T08:30:00+08:00",
                   "resident": "r1", "group": "child", "child_birthdate": "0001-01-01"}),
            "`child_birthdate`",
        ),
        // The schedule's clock.
        send(
            "POST",
            "/api/v1/schedule/clock",
            json!({"now": U64_MAX}),
            "`now`",
        ),
        send(
            "POST",
            "/api/v1/schedule/clock",
            json!({"now": "9999-12-31T00:00:00Z"}),
            "`now`",
        ),
        // Days of a center: 2000-2199, at most 366 at once.
        get(
            "/api/v1/centers/c1/visits?from=0001-01-01&to=0001-12-31",
            400,
            "`from`",
        ),
        get(
            "/api/v1/centers/c1/visits?from=2027-01-01&to=2029-01-01",
            400,
            "366 days",
        ),
        get(
            "/api/v1/centers/c1/pianos?from=2199-12-31&to=2200-01-01",
            400,
            "`to`",
        ),
        // Paging.
        get("/api/v1/devices?limit=0", 400, "`limit`"),
        get("/api/v1/devices?limit=10001", 400, "`limit`"),
        get(
            "/api/v1/devices?limit=99999999999999999999999",
            400,
            "limit",
        ),
        // Commands: deadlines and the size of `args`.
        send(
            "POST",
            "/api/v1/devices/piano1/commands",
            json!({"op": "unlock", "expires_at": U64_MAX}),
            "7 days",
        ),
        send(
            "POST",
            "/api/v1/devices/piano1/commands",
            json!({"op": "unlock", "expires_in_ms": U64_MAX}),
            "7 days",
        ),
        send(
            "POST",
            "/api/v1/devices/piano1/commands",
            json!({"op": "unlock", "expires_in_ms": 1000, "args": {"x": "y".repeat(5000)}}),
            "`args`",
        ),
        // Resources: every number of an entry.
        send(
            "PUT",
            "/api/v1/resources/bad",
            resource_with("horizon_days", json!(4_294_967_295u32)),
            "`horizon_days`",
        ),
        send(
            "PUT",
            "/api/v1/resources/bad",
            resource_with("capacity", json!(4_294_967_295u32)),
            "`capacity`",
        ),
        send(
            "PUT",
            "/api/v1/resources/bad",
            resource_with(
                "shares",
                json!([{"group": "senior", "percent": 4_294_967_295u32}]),
            ),
            "`shares`",
        ),
        send(
            "PUT",
            "/api/v1/resources/bad",
            resource_with("slot_minutes", json!(100_000)),
            "`slot_minutes`",
        ),
        send(
            "PUT",
            "/api/v1/resources/bad",
            resource_with("release_before_minutes", json!(4_294_967_295u32)),
            "`release_before_minutes`",
        ),
        send(
            "PUT",
            "/api/v1/resources/bad",
            resource_with("child_age_months", json!([0, 100_000])),
            "`child_age_months`",
        ),
        send(
            "PUT",
            "/api/v1/resources/bad",
            resource_with("per_week", json!(0)),
            "`per_week`",
        ),
        send(
            "PUT",
            "/api/v1/resources/bad",
            resource_with("market_price", json!(1e300)),
            "`market_price`",
        ),
    ]
}

async fn answer(hub: &HubProcess, case: &Case) -> anyhow::Result<(u16, Value)> {
    let request = match case.method {
        "GET" => hub.get(&case.path),
        "POST" => hub.post(&case.path),
        "PUT" => hub.put(&case.path),
        other => anyhow::bail!("no method {other}"),
    };
    let request = match &case.body {
        Some(body) => request.json(body),
        None => request,
    };
    let response = request.timeout(Duration::from_secs(10)).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_requests_are_refused_naming_the_field_and_the_hub_keeps_booking(
) -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions {
        extra_config: CONFIG.into(),
        ..HubOptions::default()
    })
    .await?;
    hub.provision("piano1", protocol::DeviceKind::Piano).await?;
    let mut wrong = Vec::new();
    for case in cases() {
        let started = Instant::now();
        let outcome = answer(&hub, &case).await;
        let took = started.elapsed();
        let said = match &outcome {
            Ok((status, body)) => {
                let error = body["detail"].as_str().unwrap_or_default();
                let ok = *status == case.status && error.contains(case.names) && took < PROMPT;
                (!ok).then(|| format!("{status} in {took:?}: {body}"))
            }
            Err(error) => Some(format!("no answer after {took:?}: {error:#}")),
        };
        if let Some(said) = said {
            wrong.push(format!(
                "{} {} → want {} naming {:?}, got {said}",
                case.method, case.path, case.status, case.names
            ));
        }
    }
    assert!(wrong.is_empty(), "{}\n{}", wrong.join("\n"), hub.log());

    let ready = hub.get("/readyz").send().await?;
    assert_eq!(ready.status(), 200, "{}", hub.log());
    let (status, booked) = hub
        .post_json(
            "/api/v1/bookings",
            &booking(json!("2027-01-04T09:00:00+08:00")),
        )
        .await?;
    assert_eq!(status, 201, "{booked}");
    let started = Instant::now();
    hub.metrics().await?;
    assert!(
        started.elapsed() < PROMPT,
        "scrape took {:?}",
        started.elapsed()
    );
    Ok(())
}

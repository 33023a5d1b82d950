#!/usr/bin/env python3
"""Writes the Grafana dashboards of this folder from the panel lists below.

    python3 dashboards/build.py          # rewrite the JSON files
    python3 dashboards/build.py --check  # exit 1 if a file differs

The JSON files are committed (Grafana's file provider reads them); the
end-to-end tests run `--check`, so they stay what this script writes.
Metric names: docs/metrics.md. Every expression is sent to a real
Prometheus by tests/e2e/prometheus_live.rs.
"""

import json
import sys
from pathlib import Path

SCHEMA_VERSION = 39  # Grafana 11.0 / 11.1
DATASOURCE_UID = "yizhan-prometheus"  # deploy/grafana/provisioning/datasources
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
HUB_JOB = 'job="yizhan-hub"'  # deploy/prometheus/prometheus.yml
WIDTH = 24  # Grafana's grid


def datasource_variable():
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": False, "text": "Yizhan Prometheus", "value": DATASOURCE_UID},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_variable(name, label, metric, multi):
    """A variable listing the values of `label` on `metric` (label_values)."""
    query = f"label_values({metric}, {label})"
    variable = {
        "name": name,
        "label": label.capitalize(),
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "hide": 0,
        "options": [],
        "regex": "",
    }
    if multi:
        variable["allValue"] = ".+"
    return variable


def target(expr, legend="", instant=False, table=False):
    return {"expr": expr, "legend": legend, "instant": instant, "table": table}


def panel(kind, title, description, targets, width=12, height=8, unit="short", **extra):
    return {
        "kind": kind,
        "title": title,
        "description": description,
        "targets": targets,
        "width": width,
        "height": height,
        "unit": unit,
        **extra,
    }


def row(title, *panels):
    return {"row": title, "panels": list(panels)}


def render_target(t, ref):
    out = {
        "refId": ref,
        "datasource": DATASOURCE,
        "expr": t["expr"],
        "legendFormat": t["legend"] or "__auto",
        "range": not t["instant"],
        "instant": t["instant"],
    }
    if t["table"]:
        out["format"] = "table"
    return out


def render_panel(p, pid, x, y):
    defaults = {"unit": p["unit"], "color": {"mode": "palette-classic"}}
    if "max" in p:
        defaults["max"] = p["max"]
    if "min" in p:
        defaults["min"] = p["min"]
    if "thresholds" in p:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": c, "value": v} for v, c in p["thresholds"]],
        }
        defaults["color"] = {"mode": "thresholds"}
    if p.get("style") == "bars":
        defaults["custom"] = {"drawStyle": "bars", "fillOpacity": 80}
    out = {
        "id": pid,
        "type": p["kind"],
        "title": p["title"],
        "description": p["description"],
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": p["width"], "h": p["height"]},
        "targets": [render_target(t, chr(ord("A") + i)) for i, t in enumerate(p["targets"])],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": panel_options(p),
    }
    if "interval" in p:
        out["interval"] = p["interval"]
    return out


def panel_options(p):
    if p["kind"] == "timeseries":
        return {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if p["kind"] in ("stat", "bargauge", "gauge"):
        return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    return {}


def layout(rows):
    """Rows and panels placed left to right, wrapping at the grid's width."""
    panels, pid, y = [], 1, 0
    for r in rows:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": r["row"],
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1},
                "panels": [],
            }
        )
        pid, y, x, height = pid + 1, y + 1, 0, 0
        for p in r["panels"]:
            if x + p["width"] > WIDTH:
                x, y, height = 0, y + height, 0
            panels.append(render_panel(p, pid, x, y))
            pid, x, height = pid + 1, x + p["width"], max(height, p["height"])
        y += height
    return panels


def dashboard(uid, title, description, variables, rows, time_from="now-24h"):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["yizhan"],
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "1m",
        "time": {"from": time_from, "to": "now"},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["yizhan"],
                "title": "Yizhan",
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": layout(rows),
    }


# --- District overview -------------------------------------------------------

C = 'center=~"$center"'


def district_overview():
    no_show = (
        f'sum by (center) (increase(yizhan_bookings_total{{{C}, outcome="no_show"}}[$__range]))'
        f" / clamp_min(sum by (center) (increase(yizhan_bookings_total"
        f'{{{C}, outcome=~"checked_in|no_show"}}[$__range])), 1)'
    )
    rows = [
        row(
            "Foot traffic",
            panel("bargauge", "Visits today", "People counted in at each center's entrance since local midnight.",
                  [target(f'sum by (center) (yizhan_center_visits{{{C}, period="day"}})', "{{center}}", instant=True)],
                  width=8),
            panel("bargauge", "Visits this month", "People counted in since the 1st of the local month.",
                  [target(f'sum by (center) (yizhan_center_visits{{{C}, period="month"}})', "{{center}}", instant=True)],
                  width=8),
            panel("timeseries", "Live headcount", "People inside each center now (entrance counters).",
                  [target(f'sum by (center) (yizhan_room_occupancy{{{C}, room="entrance"}})', "{{center}}")],
                  width=8),
        ),
        row(
            "Rooms and devices",
            panel("bargauge", "Rooms at 90 % of their seats or more", "Rooms of each center whose occupancy is at least 90 % of their seats now.",
                  [target(f"sum by (center) (yizhan_room_occupancy_ratio{{{C}}} >= bool 0.9)", "{{center}}", instant=True)],
                  width=8, thresholds=[(None, "green"), (1, "orange")]),
            panel("timeseries", "Devices online by kind", "Devices with a live session, by kind.",
                  [target(f"sum by (kind) (yizhan_devices_online{{{C}}})", "{{kind}}")],
                  width=8),
            panel("timeseries", "Devices offline by kind", "Provisioned devices without a live session, by kind.",
                  [target(f"sum by (kind) (yizhan_devices{{{C}}}) - sum by (kind) (yizhan_devices_online{{{C}}})", "{{kind}}")],
                  width=8),
        ),
        row(
            "Alarms, bookings and hubs",
            panel("stat", "Active alarms", "Interlock alarms raised and not yet acknowledged by staff.",
                  [target(f"sum by (center) (yizhan_alarms_active{{{C}}})", "{{center}}", instant=True)],
                  width=6, thresholds=[(None, "green"), (1, "red")]),
            panel("timeseries", "Bookings", "Booking outcomes per second across the district's resources.",
                  [target(f"sum by (center, outcome) (rate(yizhan_bookings_total{{{C}}}[$__rate_interval]))", "{{center}} {{outcome}}")],
                  width=6, unit="ops"),
            panel("bargauge", "No-show rate", "No-shows over places that came due (checked in or no-show) in the dashboard's time range.",
                  [target(no_show, "{{center}}", instant=True)],
                  width=6, unit="percentunit", min=0, max=1),
            panel("stat", "Hubs up", "Hubs Prometheus scraped successfully, of all hubs it scrapes.",
                  [target(f"sum(up{{{HUB_JOB}}})", "up", instant=True),
                   target(f"count(up{{{HUB_JOB}}})", "hubs", instant=True)],
                  width=6),
        ),
    ]
    return dashboard(
        "yizhan-district",
        "Yizhan / District overview",
        "Every center of the district: foot traffic, rooms, devices, alarms, bookings, hubs.",
        [query_variable("center", "center", "yizhan_devices", multi=True)],
        rows,
    )


# --- Center detail -----------------------------------------------------------

ONE = 'center="$center"'


def center_detail():
    rows = [
        row(
            "Rooms",
            panel("timeseries", "People per room", "People in each room now; `entrance` is the center's headcount.",
                  [target(f"sum by (room) (yizhan_room_occupancy{{{ONE}}})", "{{room}}")]),
            panel("timeseries", "Occupancy against capacity", "People over each room's seats; saturation is raised at 90 %.",
                  [target(f"max by (room) (yizhan_room_occupancy_ratio{{{ONE}}})", "{{room}}")],
                  unit="percentunit", min=0, thresholds=[(None, "green"), (0.9, "red")]),
            panel("timeseries", "Busiest hours", "Visits per hour at the entrance.",
                  [target(f"sum(increase(yizhan_visits_total{{{ONE}}}[$__interval]))", "visits")],
                  width=24, interval="1h", style="bars"),
        ),
        row(
            "Pianos and therapy robots",
            panel("timeseries", "Pianos in use", "Pianos with a session running.",
                  [target(f"sum(yizhan_pianos_in_use{{{ONE}}})", "in use")],
                  width=8),
            panel("stat", "Minutes played", "Minutes the center's pianos were played in the dashboard's time range (ended sessions).",
                  [target(f"sum(increase(yizhan_piano_usage_seconds_total{{{ONE}}}[$__range])) / 60", "minutes", instant=True)],
                  width=4, unit="m"),
            panel("timeseries", "Therapy robot temperature", "Highest last reported temperature among each room's online therapy robots; the interlock stops a robot above its limit.",
                  [target(f"max by (room) (yizhan_therapy_temperature_max_celsius{{{ONE}}})", "{{room}}")],
                  width=6, unit="celsius"),
            panel("timeseries", "Interlock trips", "Therapy robots stopped by the interlock, by reason.",
                  [target(f"sum by (reason) (increase(yizhan_interlock_trips_total{{{ONE}}}[$__rate_interval]))", "{{reason}}")],
                  width=6),
        ),
        row(
            "Gates",
            panel("timeseries", "Gate decisions", "Gate answers per second by outcome and reason.",
                  [target(f"sum by (outcome, reason) (rate(yizhan_access_decisions_total{{{ONE}}}[$__rate_interval]))", "{{outcome}} {{reason}}")],
                  unit="ops"),
            panel("timeseries", "Gate decision latency", "From an access request's arrival to the open/deny leaving the hub (the hub serving this center).",
                  [target("histogram_quantile(0.5, sum by (le) (rate(yizhan_access_decision_seconds_bucket[$__rate_interval])))", "p50"),
                   target("histogram_quantile(0.99, sum by (le) (rate(yizhan_access_decision_seconds_bucket[$__rate_interval])))", "p99")],
                  unit="s"),
        ),
        row(
            "Bookings",
            panel("timeseries", "Bookings", "Booking outcomes per second by resource kind.",
                  [target(f"sum by (kind, outcome) (rate(yizhan_bookings_total{{{ONE}}}[$__rate_interval]))", "{{kind}} {{outcome}}")],
                  unit="ops"),
            panel("timeseries", "Seats booked today", "Today's booked seat time over the seat time offered, by resource kind.",
                  [target(f'sum by (kind) (yizhan_booking_day_seat_seconds{{{ONE}, state="booked"}}) / sum by (kind) (yizhan_booking_day_seat_seconds{{{ONE}, state="available"}})', "{{kind}}")],
                  unit="percentunit", min=0, max=1),
            panel("bargauge", "Seat utilisation", "Seat time used (checked in) over seat time booked in the dashboard's time range.",
                  [target(f'sum by (kind) (increase(yizhan_booking_seat_seconds_total{{{ONE}, state="used"}}[$__range])) / clamp_min(sum by (kind) (increase(yizhan_booking_seat_seconds_total{{{ONE}, state="booked"}}[$__range])), 1)', "{{kind}}", instant=True)],
                  width=8, unit="percentunit", min=0, max=1),
            panel("timeseries", "Waitlists", "People waiting for a place in slots not yet ended.",
                  [target(f"sum by (kind) (yizhan_booking_waitlist{{{ONE}}})", "{{kind}}")],
                  width=8),
            panel("timeseries", "Slots without a duty manager", "Slots up to the booking horizon in rooms with a duty roster and nobody on duty.",
                  [target(f"sum by (kind) (yizhan_booking_slots_unstaffed{{{ONE}}})", "{{kind}}")],
                  width=8, thresholds=[(None, "green"), (1, "orange")]),
        ),
    ]
    return dashboard(
        "yizhan-center",
        "Yizhan / Center detail",
        "One center: rooms against their seats, busy hours, pianos, therapy robots, gates, bookings.",
        [query_variable("center", "center", "yizhan_devices", multi=False)],
        rows,
    )


# --- Hub internals -----------------------------------------------------------

I = 'instance=~"$instance"'


def quantiles(histogram, by=""):
    group = f"sum by (le{', ' + by if by else ''})"
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        target(f"histogram_quantile({q}, {group} (rate({histogram}_bucket{{{I}}}[$__rate_interval])))", f"{legend}p{int(q * 100)}")
        for q in (0.5, 0.99)
    ]


def hub_internals():
    rows = [
        row(
            "Ingest",
            panel("timeseries", "Ingest rate", "Device messages accepted per second, by channel.",
                  [target(f"sum by (channel) (rate(yizhan_messages_received_total{{{I}}}[$__rate_interval]))", "{{channel}}")],
                  width=8, unit="ops"),
            panel("timeseries", "Rejections by reason", "Device messages rejected per second.",
                  [target(f"sum by (reason) (rate(yizhan_ingest_rejected_total{{{I}}}[$__rate_interval]))", "{{reason}}")],
                  width=8, unit="ops"),
            panel("timeseries", "Seq gaps", "Messages missing between devices and their twins, per second, by center and kind.",
                  [target(f"sum by (center, kind) (rate(yizhan_seq_gaps_total{{{I}}}[$__rate_interval]))", "{{center}} {{kind}}")],
                  width=8, unit="ops"),
        ),
        row(
            "Latency",
            panel("timeseries", "Ingest latency", "A message's arrival at ingest to its twin updated.",
                  quantiles("yizhan_ingest_latency_seconds"), width=8, unit="s"),
            panel("timeseries", "Command round trip", "A command's first publish to the device's answer, by op.",
                  quantiles("yizhan_command_round_trip_seconds", by="op"), width=8, unit="s"),
            panel("timeseries", "Decision latency", "Gate decisions and interlock stops: a message's arrival to the command leaving the hub.",
                  [target(f"histogram_quantile(0.99, sum by (le) (rate(yizhan_access_decision_seconds_bucket{{{I}}}[$__rate_interval])))", "gate p99"),
                   target(f"histogram_quantile(0.99, sum by (le) (rate(yizhan_interlock_reaction_seconds_bucket{{{I}}}[$__rate_interval])))", "interlock p99")],
                  width=8, unit="s"),
        ),
        row(
            "Device edge",
            panel("timeseries", "Connections", "MQTT connections open (in handshake or in session), by listener.",
                  [target(f"sum by (listener) (yizhan_mqtt_connections{{{I}}})", "{{listener}}")],
                  width=8),
            panel("timeseries", "Connects", "CONNECTs answered per second, by outcome.",
                  [target(f"sum by (outcome) (rate(yizhan_mqtt_connect_attempts_total{{{I}}}[$__rate_interval]))", "{{outcome}}")],
                  width=8, unit="ops"),
            panel("timeseries", "Refusals at the edge", "Publishes and subscriptions refused, and connections closed before their session began, per second by reason.",
                  [target(f"sum by (reason) (rate(yizhan_edge_refused_total{{{I}}}[$__rate_interval]))", "refused {{reason}}"),
                   target(f"sum by (reason) (rate(yizhan_edge_handshake_failures_total{{{I}}}[$__rate_interval]))", "handshake {{reason}}")],
                  width=8, unit="ops"),
        ),
        row(
            "Store, commands, components",
            panel("timeseries", "Store size", "sled's size on disk.",
                  [target(f"yizhan_store_size_bytes{{{I}}}", "{{instance}}")],
                  width=6, unit="bytes"),
            panel("timeseries", "Commands open and webhook outbox", "Commands not yet answered; notifications waiting for the booking webhook.",
                  [target(f"sum(yizhan_commands_open{{{I}}})", "commands open"),
                   target(f"sum(yizhan_webhook_outbox_messages{{{I}}})", "webhook outbox")],
                  width=6),
            panel("stat", "Component health", "1 while a supervised component runs; 0 once it went down (the hub then exits and is restarted).",
                  [target(f"min by (component) (yizhan_component_up{{{I}}})", "{{component}}", instant=True)],
                  width=12, thresholds=[(None, "red"), (1, "green")]),
        ),
        row(
            "Process and API",
            panel("timeseries", "CPU", "CPU seconds per second.",
                  [target(f"rate(process_cpu_seconds_total{{{HUB_JOB}, {I}}}[$__rate_interval])", "{{instance}}")],
                  width=6, unit="percentunit"),
            panel("timeseries", "Memory", "Resident memory.",
                  [target(f"process_resident_memory_bytes{{{HUB_JOB}, {I}}}", "{{instance}}")],
                  width=6, unit="bytes"),
            panel("timeseries", "HTTP requests", "API requests per second by route and code.",
                  [target(f"sum by (route, code) (rate(yizhan_http_request_duration_seconds_count{{{I}}}[$__rate_interval]))", "{{route}} {{code}}")],
                  width=6, unit="reqps"),
            panel("table", "Build", "Version and commit of each hub.",
                  [target(f"yizhan_build_info{{{I}}}", "", instant=True, table=True)],
                  width=6),
        ),
    ]
    return dashboard(
        "yizhan-hub",
        "Yizhan / Hub internals",
        "One hub's machinery: ingest, latency, the device edge, the store, commands, components.",
        [query_variable("instance", "instance", f"up{{{HUB_JOB}}}", multi=True)],
        rows,
        time_from="now-6h",
    )


DASHBOARDS = {
    "district-overview.json": district_overview,
    "center-detail.json": center_detail,
    "hub-internals.json": hub_internals,
}


def main():
    check = "--check" in sys.argv[1:]
    here = Path(__file__).resolve().parent
    stale = []
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        path = here / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale: {', '.join(stale)}; run python3 dashboards/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

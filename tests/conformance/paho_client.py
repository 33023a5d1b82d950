"""One MQTT 3.1.1 client over mTLS with paho-mqtt, driven by the e2e tests.

argv[1] is a JSON plan (see `tests/src/stacks/mod.rs`, `Plan`): connect,
subscribe (QoS 1), publish, then leave with DISCONNECT, or stay until
SIGTERM (DISCONNECT) or SIGKILL (none). Every step is printed on stdout as
one JSON line: connack (with the MQTT 3.1.1 return code), suback, puback,
sent (QoS 0), message, closed (the connection was lost), failed.
The client never reconnects.
"""

import json
import os
import signal
import sys
import threading

import paho.mqtt.client as mqtt

# paho reports 3.1.1 return codes as MQTT 5 reason codes; the tests compare
# the codes on the wire.
RETURN_CODES = {
    "Success": 0,
    "Unsupported protocol version": 1,
    "Client identifier not valid": 2,
    "Server unavailable": 3,
    "Bad user name or password": 4,
    "Not authorized": 5,
}
STEP_TIMEOUT_S = 10


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def main():
    plan = json.loads(sys.argv[1])
    connected, subscribed, stop = threading.Event(), threading.Event(), threading.Event()
    leaving = threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=plan["client_id"],
        clean_session=plan["clean_session"],
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set(plan["username"], plan["password"])
    client.tls_set(ca_certs=plan["ca"], certfile=plan["cert"], keyfile=plan["key"])
    will = plan.get("will")
    if will:
        client.will_set(will["topic"], will["payload"], will["qos"], will["retain"])

    def on_connect(_client, _userdata, flags, reason, _properties):
        code = RETURN_CODES.get(reason.getName(), 255)
        emit("connack", code=code, session_present=bool(flags.session_present))
        if code != 0:
            os._exit(0)
        connected.set()

    def on_disconnect(_client, _userdata, _flags, reason, _properties):
        if not leaving.is_set():
            emit("closed", reason=str(reason))
            os._exit(0)

    def on_message(_client, _userdata, message):
        payload = message.payload.decode("utf-8", "replace")
        emit("message", topic=message.topic, payload=payload, retain=bool(message.retain))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = lambda *_: (emit("suback"), subscribed.set())
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    try:
        client.connect(plan["host"], plan["port"], plan["keepalive"])
    except Exception as error:  # TLS or socket errors: the test reads them
        emit("failed", error=f"{type(error).__name__}: {error}")
        return 0
    client.loop_start()
    step(connected, "CONNACK")
    if plan["subscribe"]:
        client.subscribe([(topic, 1) for topic in plan["subscribe"]])
        step(subscribed, "SUBACK")
    for message in plan["publish"]:
        info = client.publish(message["topic"], message["payload"], message["qos"], message["retain"])
        info.wait_for_publish(STEP_TIMEOUT_S)
        emit("puback" if message["qos"] else "sent")
    while plan["stay"] and not stop.wait(0.1):
        pass
    leaving.set()
    client.disconnect()
    client.loop_stop()
    return 0


def step(event, what):
    if not event.wait(STEP_TIMEOUT_S):
        emit("failed", error=f"no {what} within {STEP_TIMEOUT_S} s")
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main())

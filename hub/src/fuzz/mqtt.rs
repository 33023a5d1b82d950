//! Fuzz targets for the edge's packet front: bytes split anywhere through
//! the `Framer` (rumqttd's decoder behind it), each packet's topics through
//! the edge's policy, and CONNECT handling (`take_connect`, the tools
//! listener's client ids, a will's topic).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use rumqttd::protocol::Packet;

use super::{bytes_like, corpus, run, Bytes};
use crate::edge::auth;
use crate::edge::connect::take_connect;
use crate::edge::framing::{FrameError, Framer};
use crate::edge::policy::{self, Scope};
use crate::records::device::record;
use crate::records::Twin;
use crate::store::Store;

/// Small, so that oversize packets are among the inputs.
const MAX_PACKET: usize = 1024;

/// The packets `bytes` decode into when fed in pieces cut at `cuts`, and
/// the error that ended them (its label), if any.
fn feed(bytes: &[u8], cuts: &[Index]) -> (Vec<Packet>, Result<(), FrameError>) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut framer = Framer::new(MAX_PACKET);
    let mut packets = Vec::new();
    let mut start = 0;
    for point in points {
        if let Err(error) = framer.feed(&bytes[start..point], &mut packets) {
            return (packets, Err(error));
        }
        start = point;
    }
    (packets, Ok(()))
}

/// rumqttd's decoder panicking is contained by the framer as a malformed
/// packet; the fuzz target counts it as a failure all the same.
fn no_decoder_panic(outcome: &Result<(), FrameError>) -> Result<(), TestCaseError> {
    if let Err(FrameError::Malformed(why)) = outcome {
        prop_assert!(!why.contains("panicked"), "rumqttd's decoder panicked");
    }
    Ok(())
}

/// Every topic and filter of `packet` through the policy of a device and
/// of a tool.
fn police(packet: &Packet) {
    let scopes = [Scope::Device("piano1".into()), Scope::Tool];
    match packet {
        Packet::Publish(publish, _) => {
            if let Ok(topic) = std::str::from_utf8(&publish.topic) {
                for scope in &scopes {
                    let _ = policy::check_publish(scope, topic, publish.retain);
                }
            }
        }
        Packet::Subscribe(subscribe, _) => {
            for filter in &subscribe.filters {
                for scope in &scopes {
                    let _ = policy::check_filter(scope, &filter.path);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn mqtt_bytes_split_anywhere_never_panic_and_frame_alike() {
    let strategy = (bytes_like(corpus("mqtt_frames")), vec(any::<Index>(), 0..6));
    run("mqtt_frames", strategy, |(Bytes(bytes), cuts)| {
        let (whole, ended) = feed(&bytes, &[]);
        let (pieces, pieces_ended) = feed(&bytes, &cuts);
        no_decoder_panic(&ended)?;
        no_decoder_panic(&pieces_ended)?;
        prop_assert_eq!(&whole, &pieces, "framing depends on where reads end");
        let label = |e: &Result<(), FrameError>| e.as_ref().err().map(FrameError::label);
        prop_assert_eq!(label(&ended), label(&pieces_ended));
        whole.iter().for_each(police);
        Ok(ended.is_ok() && !whole.is_empty())
    });
}

/// A store with device `piano1` provisioned (a tool may not take its id).
fn store_with_a_device() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let record = record("piano1", "c1", "r1", protocol::DeviceKind::Piano);
    store
        .provision(&record, &Twin::provisioned(&record))
        .expect("provisioned");
    (store, dir)
}

#[test]
fn connects_never_panic_and_a_device_will_stays_in_its_tenant() {
    let (store, _dir) = store_with_a_device();
    run("connect", bytes_like(corpus("connect")), |Bytes(bytes)| {
        let (mut packets, _) = feed(&bytes, &[]);
        if packets.is_empty() {
            return Ok(false);
        }
        let connect = match take_connect(&mut packets) {
            Ok(connect) => connect,
            Err(failed) => {
                prop_assert_eq!(failed.label(), "not_connect");
                return Ok(false);
            }
        };
        let tool = auth::tool_client_id(&store, &connect.client_id, connect.clean_session);
        if let Ok(id) = &tool {
            prop_assert!(id != "piano1" && !id.contains(['.', '/', '+', '#', '$']));
        }
        let Some(will) = &connect.will else {
            return Ok(true);
        };
        let Ok(topic) = std::str::from_utf8(&will.topic) else {
            return Ok(true);
        };
        let device = Scope::Device(connect.client_id.clone());
        if policy::check_publish(&device, topic, will.retain).is_ok() {
            let tenant = format!("/tenants/{}/", connect.client_id);
            prop_assert!(topic.starts_with(&tenant), "{} outside {}", topic, tenant);
        }
        let _ = policy::check_publish(&Scope::Tool, topic, will.retain);
        Ok(true)
    });
}

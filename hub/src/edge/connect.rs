//! From a connected stream to a session: read the CONNECT, check it, take
//! over a live session with the same id, build the router link, answer
//! CONNACK. Everything here runs within the connection's handshake
//! deadline.

use std::sync::Arc;
use std::time::Duration;

use rumqttd::protocol::{ConnAck, ConnectReturnCode, LastWill, Login, Packet};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::accept::OverTcp;
use super::auth::{self, Admitted, Denied};
use super::framing::{read_packets, write_packets, FrameError, Framer};
use super::policy;
use super::session::{Parts, Session};
use super::tls::PeerDevice;
use super::{Listener, Shared};

/// How long a new session waits for the one it takes over to close.
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);

/// Why a connection never became a session; the `reason` label of
/// `yizhan_edge_handshake_failures_total`.
#[derive(Debug)]
pub enum Failed {
    Timeout,
    Frame(FrameError),
    NotConnect,
    Denied(Denied),
    /// The will names a topic the client may not publish on.
    WillRefused,
    /// The router refused the link (at `max_connections`).
    RouterFull,
}

impl Failed {
    pub fn label(&self) -> &'static str {
        match self {
            Failed::Timeout => "timeout",
            Failed::Frame(error) => error.label(),
            Failed::NotConnect => "not_connect",
            Failed::Denied(denied) => denied.label(),
            Failed::WillRefused => "will_refused",
            Failed::RouterFull => "router_full",
        }
    }
}

/// The fields of a CONNECT the edge uses.
pub(crate) struct Connect {
    pub(crate) client_id: String,
    pub(crate) clean_session: bool,
    pub(crate) keepalive_secs: u16,
    pub(crate) will: Option<LastWill>,
    pub(crate) login: Option<Login>,
}

/// Reads and checks the CONNECT on `stream`; on success the session, and
/// the packets the client sent right after its CONNECT.
pub async fn establish<S: AsyncRead + AsyncWrite + Unpin + OverTcp>(
    mut stream: S,
    shared: &Arc<Shared>,
    listener: &Arc<Listener>,
    device: Option<&PeerDevice>,
    deadline: Instant,
) -> Result<(Box<Session<S>>, Vec<Packet>), Failed> {
    let mut framer = Framer::new(shared.limits.max_packet_bytes);
    let first = tokio::time::timeout_at(deadline, first_packets(&mut stream, &mut framer))
        .await
        .map_err(|_| Failed::Timeout)?;
    let mut packets = match first {
        Ok(packets) => packets,
        Err(failed) => {
            refuse(&mut stream, &failed, deadline).await;
            return Err(failed);
        }
    };
    let connect = take_connect(&mut packets)?;
    let checked = tokio::time::timeout_at(deadline, admit(shared, listener, device, &connect))
        .await
        .map_err(|_| Failed::Timeout)?;
    let admitted = match checked {
        Ok(admitted) => admitted,
        Err(failed) => {
            refuse(&mut stream, &failed, deadline).await;
            return Err(failed);
        }
    };
    let claim = shared
        .registry
        .claim(
            &admitted.session_key,
            admitted.certificate_sha256.as_deref(),
            &shared.shutdown,
            TAKEOVER_WAIT,
        )
        .await;
    // A revoke stores the revocation, then kicks the live session: one
    // that registered after the kick sees the revocation here (and a
    // renewal's grace that ended meanwhile).
    if let Some(Err(denied)) = device.map(|device| auth::device_allowed(&shared.store, device)) {
        let failed = Failed::Denied(denied);
        refuse(&mut stream, &failed, deadline).await;
        return Err(failed);
    }
    let filters = shared
        .registry
        .resume_filters(&admitted.session_key, connect.clean_session);
    let link = shared
        .links
        .build(
            admitted.client_id.clone(),
            tenant_of(&admitted),
            connect.clean_session,
        )
        .await;
    let (tx, rx, connack) = match link {
        Ok(link) => link,
        Err(error) => {
            tracing::warn!(%error, client = %admitted.client_id, "the router refused a link");
            let failed = Failed::RouterFull;
            refuse(&mut stream, &failed, deadline).await;
            return Err(failed);
        }
    };
    if let Some(connack) = Option::<Packet>::from(connack) {
        tokio::time::timeout_at(deadline, write_packets(&mut stream, [connack]))
            .await
            .map_err(|_| Failed::Timeout)?
            .map_err(Failed::Frame)?;
    }
    let parts = Parts {
        stream,
        framer,
        tx,
        rx,
        admitted,
        claim,
        clean_session: connect.clean_session,
        keepalive_secs: connect.keepalive_secs,
        will: connect.will,
        filters,
    };
    let session = Box::new(Session::new(parts, shared.clone(), listener.clone()));
    Ok((session, packets))
}

async fn first_packets<S: AsyncRead + Unpin>(
    stream: &mut S,
    framer: &mut Framer,
) -> Result<Vec<Packet>, Failed> {
    let mut packets = Vec::new();
    while packets.is_empty() {
        read_packets(stream, framer, &mut packets)
            .await
            .map_err(Failed::Frame)?;
    }
    Ok(packets)
}

pub(crate) fn take_connect(packets: &mut Vec<Packet>) -> Result<Connect, Failed> {
    match packets.remove(0) {
        Packet::Connect(connect, _, will, _, login) => Ok(Connect {
            client_id: connect.client_id,
            clean_session: connect.clean_session,
            keepalive_secs: connect.keep_alive,
            will,
            login,
        }),
        _ => Err(Failed::NotConnect),
    }
}

async fn admit(
    shared: &Shared,
    listener: &Listener,
    device: Option<&PeerDevice>,
    connect: &Connect,
) -> Result<Admitted, Failed> {
    let admitted = match (device, &listener.tool_users) {
        (Some(device), _) => auth::admit_device(
            &shared.store,
            device,
            &connect.client_id,
            connect.login.as_ref(),
        ),
        (None, Some(users)) => {
            let client_id =
                auth::tool_client_id(&shared.store, &connect.client_id, connect.clean_session)
                    .map_err(Failed::Denied)?;
            users
                .check(connect.login.as_ref())
                .await
                .map(|()| auth::admitted_tool(client_id))
        }
        (None, None) => Err(Denied::NotAuthorized),
    }
    .map_err(Failed::Denied)?;
    if let Some(will) = &connect.will {
        let topic = std::str::from_utf8(&will.topic).map_err(|_| Failed::WillRefused)?;
        policy::check_publish(&admitted.scope, topic, will.retain)
            .map_err(|_| Failed::WillRefused)?;
    }
    Ok(admitted)
}

fn tenant_of(admitted: &Admitted) -> Option<String> {
    match &admitted.scope {
        policy::Scope::Device(id) => Some(id.clone()),
        policy::Scope::Tool => None,
    }
}

/// Answers a refused CONNECT with the return code that says why.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, failed: &Failed, deadline: Instant) {
    let code = match failed {
        Failed::Denied(denied) => denied.return_code(),
        Failed::WillRefused => ConnectReturnCode::NotAuthorized,
        Failed::RouterFull => ConnectReturnCode::ServiceUnavailable,
        Failed::Frame(FrameError::UnsupportedProtocol) => ConnectReturnCode::RefusedProtocolVersion,
        _ => return,
    };
    let connack = Packet::ConnAck(
        ConnAck {
            session_present: false,
            code,
        },
        None,
    );
    let _ = tokio::time::timeout_at(deadline, write_packets(stream, [connack])).await;
}

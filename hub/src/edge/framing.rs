//! MQTT 3.1.1 framing on a byte stream, with per-connection buffers that
//! cost nothing while a connection is idle.
//!
//! Reads land in a scratch buffer owned by the worker thread; only a
//! packet that arrived in part is copied into the connection's `Framer`,
//! which gives the memory back once the packet is whole. Each complete
//! packet is copied into its own exact-size buffer before decoding, because
//! rumqttd's decoder keeps slices of it (topic, payload) in the router's
//! log: a slice of a shared read buffer would keep the whole buffer alive.
//! A packet larger than `max_packet` is refused from its fixed header,
//! before any of it is buffered.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{Error as ProtocolError, Packet, Protocol};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Scratch read buffer per worker thread.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("packet of {0} bytes is over the limit")]
    Oversize(usize),
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// A CONNECT of another protocol version than MQTT 3.1.1.
    #[error("unsupported protocol version")]
    UnsupportedProtocol,
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// The `reason` label when this error ends a connection.
    pub fn label(&self) -> &'static str {
        match self {
            FrameError::Oversize(_) => "oversize_packet",
            FrameError::Malformed(_) => "malformed_packet",
            FrameError::UnsupportedProtocol => "unsupported_protocol",
            FrameError::Closed => "closed",
            FrameError::Io(_) => "io_error",
        }
    }
}

/// The bytes of a packet that has arrived in part.
#[derive(Debug)]
pub struct Framer {
    partial: Vec<u8>,
    max_packet: usize,
}

impl Framer {
    pub fn new(max_packet: usize) -> Framer {
        Framer {
            partial: Vec::new(),
            max_packet,
        }
    }

    /// Splits `data` (appended to what is pending) into whole packets,
    /// decoded into `out`; keeps an incomplete tail for the next call.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Packet>) -> Result<(), FrameError> {
        if self.partial.is_empty() {
            let used = self.split(data, out)?;
            self.partial.extend_from_slice(&data[used..]);
            return Ok(());
        }
        self.partial.extend_from_slice(data);
        let partial = std::mem::take(&mut self.partial);
        let used = self.split(&partial, out)?;
        if used < partial.len() {
            self.partial = partial;
            self.partial.drain(..used);
        }
        Ok(())
    }

    fn split(&self, mut data: &[u8], out: &mut Vec<Packet>) -> Result<usize, FrameError> {
        let total = data.len();
        while let Some(len) = frame_len(data, self.max_packet)? {
            if len > data.len() {
                break;
            }
            out.push(decode(&data[..len], self.max_packet)?);
            data = &data[len..];
        }
        Ok(total - data.len())
    }
}

/// The whole length of the packet `data` starts with, once its fixed
/// header is complete.
fn frame_len(data: &[u8], max_packet: usize) -> Result<Option<usize>, FrameError> {
    let mut remaining = 0usize;
    for (i, byte) in data.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let len = 1 + (i + 1) + remaining;
            if len > max_packet {
                return Err(FrameError::Oversize(len));
            }
            return Ok(Some(len));
        }
    }
    if data.len() >= 5 {
        return Err(FrameError::Malformed(
            "remaining length over 4 bytes".into(),
        ));
    }
    Ok(None)
}

/// MQTT 3.1.1 §2.2.2: every packet type but PUBLISH has fixed flags
/// (PUBREL, SUBSCRIBE, UNSUBSCRIBE `0010`, the others `0000`), and a
/// PUBLISH may not set both QoS bits. rumqttd's decoder ignores most of
/// them; invalid flags make the packet malformed [MQTT-2.2.2-2].
fn check_flags(first: u8) -> Result<(), FrameError> {
    let flags = first & 0x0f;
    let valid = match first >> 4 {
        3 => flags & 0b0110 != 0b0110,
        6 | 8 | 10 => flags == 0b0010,
        _ => flags == 0,
    };
    match valid {
        true => Ok(()),
        false => Err(FrameError::Malformed(format!(
            "invalid flags in fixed header {first:#04x}"
        ))),
    }
}

/// Decodes one whole packet. rumqttd's decoder is not ours: should it
/// panic on some input, that input is a malformed packet, not a dead task.
fn decode(frame: &[u8], max_packet: usize) -> Result<Packet, FrameError> {
    check_flags(frame[0])?;
    let mut own = BytesMut::from(frame);
    let decoded = std::panic::catch_unwind(move || V4.read_mut(&mut own, max_packet))
        .map_err(|_| FrameError::Malformed("the decoder panicked".into()))?;
    decoded.map_err(|error| match error {
        ProtocolError::InvalidProtocol | ProtocolError::InvalidProtocolLevel(_) => {
            FrameError::UnsupportedProtocol
        }
        other => FrameError::Malformed(format!("{other:?}")),
    })
}

/// Reads once from `stream` and decodes every packet completed by what
/// arrived into `out` (possibly none). `Closed` at end of stream.
pub async fn read_packets<S: AsyncRead + Unpin>(
    stream: &mut S,
    framer: &mut Framer,
    out: &mut Vec<Packet>,
) -> Result<(), FrameError> {
    poll_fn(|cx| {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(error)) => Poll::Ready(Err(FrameError::Io(error))),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    Poll::Ready(Err(FrameError::Closed))
                }
                Poll::Ready(Ok(())) => Poll::Ready(framer.feed(buf.filled(), out)),
            }
        })
    })
    .await
}

/// Encodes `packets` and writes them with one flush. The buffer is freed
/// afterwards: an idle connection holds no write buffer.
pub async fn write_packets<S: AsyncWrite + Unpin>(
    stream: &mut S,
    packets: impl IntoIterator<Item = Packet>,
) -> Result<(), FrameError> {
    let mut buf = BytesMut::new();
    for packet in packets {
        V4.write(packet, &mut buf)
            .map_err(|error| FrameError::Malformed(format!("encoding: {error:?}")))?;
    }
    if buf.is_empty() {
        return Ok(());
    }
    stream.write_all(&buf).await?;
    stream.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::{PingReq, Publish};

    fn encoded(packets: Vec<Packet>) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for packet in packets {
            V4.write(packet, &mut buf).expect("encodes");
        }
        buf.to_vec()
    }

    fn publish(payload: &[u8]) -> Packet {
        Packet::Publish(
            Publish::new(b"/tenants/a/telemetry".to_vec(), payload.to_vec(), false),
            None,
        )
    }

    #[test]
    fn packets_split_anywhere_come_out_whole_and_the_buffer_is_freed() {
        let bytes = encoded(vec![
            publish(b"one"),
            Packet::PingReq(PingReq),
            publish(b"two"),
        ]);
        for cut in 0..bytes.len() {
            let mut framer = Framer::new(1024);
            let mut out = Vec::new();
            framer.feed(&bytes[..cut], &mut out).expect("first part");
            framer.feed(&bytes[cut..], &mut out).expect("second part");
            assert_eq!(out.len(), 3, "cut at {cut}");
            assert_eq!(framer.partial.capacity(), 0, "cut at {cut}");
        }
    }

    #[test]
    fn an_oversize_packet_is_refused_from_its_header() {
        let bytes = encoded(vec![publish(&[b'x'; 2000])]);
        let mut framer = Framer::new(1024);
        let error = framer.feed(&bytes[..3], &mut Vec::new()).unwrap_err();
        assert!(matches!(error, FrameError::Oversize(_)), "{error}");
    }

    #[test]
    fn fixed_header_flags_are_checked() {
        for (first, valid) in [
            (0x30, true),  // PUBLISH QoS 0
            (0x3b, true),  // PUBLISH dup, QoS 1, retain
            (0x36, false), // PUBLISH with both QoS bits
            (0x62, true),  // PUBREL
            (0x60, false),
            (0x82, true), // SUBSCRIBE
            (0x80, false),
            (0xa2, true), // UNSUBSCRIBE
            (0xa0, false),
            (0xc0, true), // PINGREQ
            (0xc1, false),
            (0xe0, true), // DISCONNECT
            (0xe8, false),
            (0x40, true), // PUBACK
            (0x42, false),
        ] {
            assert_eq!(check_flags(first).is_ok(), valid, "{first:#04x}");
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let mut framer = Framer::new(1024);
        let error = framer
            .feed(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], &mut Vec::new())
            .unwrap_err();
        assert!(matches!(error, FrameError::Malformed(_)), "{error}");
        let error = Framer::new(1024)
            .feed(&[0x30, 0x02, 0x00, 0x09, 0x00, 0x00], &mut Vec::new())
            .unwrap_err();
        assert!(matches!(error, FrameError::Malformed(_)), "{error}");
    }
}

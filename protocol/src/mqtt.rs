//! MQTT client plumbing shared by the hub's uplink and the district's
//! command publisher (feature `mqtt`): a rumqttc event loop polled in a
//! task of its own, since its `poll` is not to be dropped half-way (as a
//! `select!` branch would), its events passed on through a channel until
//! the first error. The task ends when the `Poller` is dropped.

use rumqttc::{ConnectionError, Event, EventLoop};
use tokio::sync::mpsc;

/// The events of one connection, in order.
pub type Events = mpsc::UnboundedReceiver<Result<Event, ConnectionError>>;

/// The polling task; aborted on drop, so a session's end ends it.
pub struct Poller(tokio::task::JoinHandle<()>);

impl Drop for Poller {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls `eventloop` in a task of its own until its first error.
pub fn poll_in_background(mut eventloop: EventLoop) -> (Events, Poller) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if tx.send(event).is_err() || failed {
                return;
            }
        }
    });
    (rx, Poller(task))
}

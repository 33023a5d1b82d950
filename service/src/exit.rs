//! The exit statuses a process manager reads (any non-zero one makes
//! systemd or Kubernetes restart the service; these say why).

/// The configuration is invalid (the message names the field), or the
/// start was refused for what an operator must fix.
pub const INVALID_CONFIGURATION: u8 = 2;

/// The service stopped by itself: a part it needs went down.
pub const STOPPED_BY_ITSELF: u8 = 3;

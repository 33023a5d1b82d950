//! `promtool check metrics` (Debian's prometheus package) on a scrape.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

/// What `promtool check metrics` prints about `exposition` (stdout and
/// stderr), and whether it exited 0.
pub fn check(exposition: &str) -> Result<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("promtool is missing: ./scripts/test.sh installs Debian's prometheus")?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(exposition.as_bytes())?;
    let output = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), said))
}

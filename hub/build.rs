//! Build script: the git commit the hub is built from, for `hub --version`
//! and `yizhan_build_info{commit}`, as `HUB_BUILD_COMMIT` (not `YIZHAN_…`:
//! cargo also sets it when it runs tests, and the configuration reads every
//! `YIZHAN_*` variable); `unknown` when the source is not a git checkout or
//! git is missing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HUB_BUILD_COMMIT={commit}");
    // Rebuilt when HEAD moves: HEAD itself (a checkout), the branch it
    // names (a commit) and packed refs. Without git: when this file changes.
    println!("cargo:rerun-if-changed=build.rs");
    for path in watched() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The trimmed output of a successful `git` command, if any.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn watched() -> Vec<PathBuf> {
    let Some(git_dir) = git(&["rev-parse", "--git-dir"]) else {
        return Vec::new();
    };
    let mut paths = vec![PathBuf::from(git_dir).join("HEAD")];
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        let common = PathBuf::from(common);
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            paths.push(common.join(branch));
        }
        paths.push(common.join("packed-refs"));
    }
    paths.into_iter().filter(|p| p.exists()).collect()
}

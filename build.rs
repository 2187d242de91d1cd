//! Records the git revision the broker is built from, for
//! `sluice_build_info{revision}` ("unknown" outside a git checkout, e.g. a
//! source tarball or a Docker context without `.git`).

use std::process::Command;

fn main() {
    // A build without `.git` (the Docker context leaves it out) can name
    // its revision itself: `docker build --build-arg REVISION=$(git rev-parse --short=12 HEAD)`.
    println!("cargo:rerun-if-env-changed=SLUICE_REVISION");
    if let Some(r) = std::env::var("SLUICE_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
    {
        println!("cargo:rustc-env=SLUICE_REVISION={r}");
        return;
    }
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SLUICE_REVISION={revision}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}

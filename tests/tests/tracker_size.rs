//! The browser tracker stays tiny and its committed build is current: at most 2,500 bytes
//! gzipped (level 9), the figure docs/benchmarks.md states is the real one, the committed
//! dataplane/tracker/zori.js is what `npm run build` produces from src/zori.js, and the script
//! reports the crate version zori-ingest serves it under.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use zori_e2e::tracker::tracker_path;

/// The budget: the original documents about 2.5 KB gzipped (and really weighs about 4.6 KB).
const BUDGET: usize = 2500;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn gzipped_size(bytes: &[u8]) -> usize {
    let mut gzip = Command::new("gzip")
        .args(["-9", "-c", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the gzip binary");
    gzip.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = gzip.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout.len()
}

#[test]
fn tracker_is_within_its_size_budget_and_documented() {
    let source = std::fs::read(tracker_path()).unwrap();
    let size = gzipped_size(&source);
    assert!(
        size <= BUDGET,
        "dataplane/tracker/zori.js is {size} bytes gzipped, over the {BUDGET} byte budget"
    );
    let doc = std::fs::read_to_string(root().join("docs/benchmarks.md")).unwrap();
    let section = doc
        .split("## Tracker size")
        .nth(1)
        .expect("docs/benchmarks.md has a \"## Tracker size\" section");
    let section = section.split("\n## ").next().unwrap();
    let stated = format!("{size} bytes gzipped");
    assert!(
        section.contains(&stated) && section.contains(&format!("{} bytes minified", source.len())),
        "docs/benchmarks.md must state the real size: {size} bytes gzipped, {} bytes minified",
        source.len()
    );
}

#[test]
fn tracker_reports_the_crate_version() {
    let source = std::fs::read_to_string(tracker_path()).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        source.contains(&format!("version:\"{version}\"")),
        "ZoriHQ.version is {version}"
    );
    assert!(
        source.contains(&format!("&v={version}")),
        "requests carry v={version}"
    );
}

#[test]
fn committed_tracker_is_the_build_output() {
    let dir = root().join("dataplane/tracker");
    assert!(
        dir.join("node_modules/terser/package.json").exists(),
        "the tracker's build toolchain is not installed: run `npm ci` in dataplane/tracker \
         (scripts/tracker.sh does; scripts/test.sh runs it), then `npm run build` there if \
         this test then reports zori.js as stale"
    );
    let out = Command::new("node")
        .arg("build.mjs")
        .arg("--check")
        .current_dir(&dir)
        .output()
        .expect("node (scripts/tracker.sh installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Helpers shared by the operator tests.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use zori_operator::{
    builders::secret::Randomness,
    config::{self, Platform, ProjectConfig},
    crd::ZoriProject,
    naming::legacy_tenant_id,
};

/// The repository's `examples/` folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// An example ZoriProject as a user would apply it, plus the uid and generation the API
/// server would give it.
pub fn example(file: &str) -> ZoriProject {
    let path = examples_dir().join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut project: ZoriProject =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    project.metadata.uid = Some(format!(
        "uid-{}",
        project.metadata.name.clone().unwrap_or_default()
    ));
    project.metadata.generation = Some(1);
    project
}

pub fn minimal() -> ZoriProject {
    example("zoriproject-minimal.yaml")
}

pub fn production() -> ZoriProject {
    example("zoriproject-production.yaml")
}

/// The checked config of a project with its derived tenant id.
pub fn config_of(project: &ZoriProject, platform: &Platform) -> ProjectConfig {
    let id = legacy_tenant_id(
        project.metadata.namespace.as_deref().unwrap_or_default(),
        project.metadata.name.as_deref().unwrap_or_default(),
    );
    config::validate(project, &id, platform).expect("the example is valid")
}

/// Deterministic "random" hex: `n` bytes of a counter.
#[derive(Debug, Default)]
pub struct CountingRandomness(AtomicU64);

impl Randomness for CountingRandomness {
    fn hex(&self, bytes: usize) -> String {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        let digit = char::from_digit((n % 16) as u32, 16).unwrap_or('0');
        std::iter::repeat_n(digit, bytes * 2).collect()
    }
}

/// A short random suffix for names of real backend objects.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let mut bytes = [0u8; 5];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

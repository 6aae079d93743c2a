//! The tenant's JetStream stream: `ZORI_<ID>` on `zori.<id>.>`, limits from the spec.

use async_nats::jetstream::stream::Config;
use zori_service::jetstream::desired_config;

use crate::config::ProjectConfig;

/// The desired stream configuration (file storage, discard new, dedup window from the spec).
pub fn desired_stream(config: &ProjectConfig) -> Config {
    let subjects = &config.names.subjects;
    let mut stream = desired_config(
        &subjects.stream,
        vec![subjects.wildcard.clone()],
        &config.stream_limits,
    );
    stream.description = Some(format!(
        "Zori tenant {} (ZoriProject {}/{}) {}{}",
        config.names.tenant_id,
        config.namespace,
        config.name,
        crate::backends::OWNER_MARKER,
        config.uid
    ));
    stream
}

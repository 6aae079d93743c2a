//! The `<name>-ingest` and `<name>-api` Services (ClusterIP, port 80 to the container's `http`).

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::{
    builders::{deployment::PORT_NAME, object_meta, selector_labels},
    config::ProjectConfig,
    naming::Component,
};

/// Port the Services listen on.
pub const SERVICE_PORT: i32 = 80;

/// The Service of a workload.
pub fn build_service(config: &ProjectConfig, component: Component) -> Service {
    Service {
        metadata: object_meta(config, component.object_name(&config.name), Some(component)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(config, component)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_owned()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// In-cluster base URL of a workload: `http://<name>-ingest.<namespace>.svc.<domain>`.
pub fn cluster_url(config: &ProjectConfig, component: Component, cluster_domain: &str) -> String {
    format!(
        "http://{}.{}.svc.{cluster_domain}",
        component.object_name(&config.name),
        config.namespace
    )
}

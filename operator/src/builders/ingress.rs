//! The optional Ingress: one host, the tracking paths to `<name>-ingest`, the reports API, the
//! webhooks and the dashboard (`/` exactly, `/assets/…`, `/session…`) to `<name>-api`. Nothing
//! else is routed (no `/metrics`, no `/readyz`, no `/healthz`).

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use crate::{
    builders::{deployment::PORT_NAME, object_meta},
    config::ProjectConfig,
    naming::{ingress_name, Component},
};

/// Path prefixes served by `zori-ingest`.
pub const INGEST_PATHS: [&str; 5] = ["/ingest", "/identify", "/batch", "/zori.js", "/v"];
/// Exact paths served by `zori-api`: the dashboard's page. `Exact`, so `/` routes nothing else
/// (a `Prefix` `/` would expose `/metrics`, `/readyz` and `/healthz`).
pub const API_EXACT_PATHS: [&str; 1] = ["/"];
/// Path prefixes served by `zori-api`: the reports (`/api/v1/…`), Stripe webhooks, and the
/// dashboard's assets and sign-in (`/assets/…`, `/session`, `/session/logout`).
pub const API_PATHS: [&str; 4] = ["/api", "/webhooks", "/assets", "/session"];

const PREFIX: &str = "Prefix";
const EXACT: &str = "Exact";

fn path(
    config: &ProjectConfig,
    path: &str,
    path_type: &str,
    component: Component,
) -> HTTPIngressPath {
    HTTPIngressPath {
        path: Some(path.to_owned()),
        path_type: path_type.to_owned(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: component.object_name(&config.name),
                port: Some(ServiceBackendPort {
                    name: Some(PORT_NAME.to_owned()),
                    number: None,
                }),
            }),
            resource: None,
        },
    }
}

/// The Ingress, when the spec asks for one.
pub fn build_ingress(config: &ProjectConfig) -> Option<Ingress> {
    let spec = config.ingress.as_ref()?;
    let mut paths: Vec<HTTPIngressPath> = INGEST_PATHS
        .iter()
        .map(|p| path(config, p, PREFIX, Component::Ingest))
        .collect();
    paths.extend(
        API_EXACT_PATHS
            .iter()
            .map(|p| path(config, p, EXACT, Component::Api)),
    );
    paths.extend(
        API_PATHS
            .iter()
            .map(|p| path(config, p, PREFIX, Component::Api)),
    );
    let mut metadata = object_meta(config, ingress_name(&config.name), None);
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue { paths }),
            }]),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    })
}

/// The public base URL the Ingress serves: `https://host` with TLS, else `http://host`.
pub fn public_url(config: &ProjectConfig) -> Option<String> {
    let spec = config.ingress.as_ref()?;
    let scheme = if spec.tls_secret_name.is_some() {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{}", spec.host))
}

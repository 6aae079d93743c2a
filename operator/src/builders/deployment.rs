//! The `<name>-ingest` and `<name>-api` Deployments: probes, resources, a restricted security
//! context, settings from the Secret.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction,
            PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
            SeccompProfile, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use crate::{
    builders::{env, labels, object_meta, selector_labels},
    config::{Platform, ProjectConfig},
    naming::Component,
};

/// Annotation on the pod template with a hash of the Secrets the pods read.
pub const CONFIG_HASH_ANNOTATION: &str = "zori.dev/config-hash";
/// Name of the container port (and of the Service's target).
pub const PORT_NAME: &str = "http";
/// Unprivileged user and group the binaries run as.
const RUN_AS: i64 = 65532;

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

/// The restricted container security context (Pod Security Standards, `restricted`).
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

fn resources(config: &ProjectConfig, component: Component) -> ResourceRequirements {
    let r = &config.workload(component).resources;
    let mut limits = BTreeMap::from([("memory".to_owned(), Quantity(r.limits_memory.clone()))]);
    if let Some(cpu) = &r.limits_cpu {
        limits.insert("cpu".to_owned(), Quantity(cpu.clone()));
    }
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(r.requests_cpu.clone())),
            ("memory".to_owned(), Quantity(r.requests_memory.clone())),
        ])),
        limits: Some(limits),
        claims: None,
    }
}

/// The container of a workload.
pub fn container(config: &ProjectConfig, platform: &Platform, component: Component) -> Container {
    let workload = config.workload(component);
    Container {
        name: component.as_str().to_owned(),
        image: Some(workload.image.clone()),
        image_pull_policy: workload.image_pull_policy.map(str::to_owned),
        env: Some(match component {
            Component::Ingest => env::ingest_env(config, platform),
            Component::Api => env::api_env(config, platform),
        }),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: component.port(),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        startup_probe: Some(probe("/healthz", 2, 30)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        resources: Some(resources(config, component)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// The Deployment of a workload. `config_hash` (from [`super::secret::config_hash`]) rolls the
/// pods when a credential changes.
pub fn build_deployment(
    config: &ProjectConfig,
    platform: &Platform,
    component: Component,
    config_hash: &str,
) -> Deployment {
    let selector = selector_labels(config, component);
    Deployment {
        metadata: object_meta(config, component.object_name(&config.name), Some(component)),
        spec: Some(DeploymentSpec {
            replicas: Some(config.desired_replicas(component)),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(config, Some(component))),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(config, platform, component)],
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        when_unsatisfiable: "ScheduleAnyway".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector),
                            match_expressions: None,
                        }),
                        ..TopologySpreadConstraint::default()
                    }]),
                    volumes: Some(vec![Volume {
                        name: "tmp".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            medium: None,
                            size_limit: Some(Quantity("64Mi".to_owned())),
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// Whether a live Deployment has rolled out: `(available, message)`.
pub fn rollout_state(live: &Deployment) -> (bool, String) {
    let want = live.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let generation = live.metadata.generation.unwrap_or(0);
    let Some(status) = &live.status else {
        return (
            false,
            format!("0/{want} replicas available; the rollout has not started"),
        );
    };
    let observed = status.observed_generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if observed < generation {
        return (
            false,
            format!("{available}/{want} replicas available; the new spec is not observed yet"),
        );
    }
    if updated < want || available < want {
        return (
            false,
            format!("{available}/{want} replicas available, {updated} updated"),
        );
    }
    (true, format!("{available}/{want} replicas available"))
}

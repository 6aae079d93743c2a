//! PodDisruptionBudgets: at most one pod of each workload is evicted at a time.

use k8s_openapi::{
    api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use crate::{
    builders::{object_meta, selector_labels},
    config::ProjectConfig,
    naming::Component,
};

/// The PodDisruptionBudget of a workload. `maxUnavailable: 1` keeps drains possible with a
/// single replica while never taking down two pods of a workload at once.
pub fn build_pdb(config: &ProjectConfig, component: Component) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: object_meta(config, component.object_name(&config.name), Some(component)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(config, component)),
                match_expressions: None,
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

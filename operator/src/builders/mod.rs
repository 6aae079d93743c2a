//! Build: pure functions from a checked [`ProjectConfig`] to the objects that should exist.
//! Nothing here talks to an API; everything is unit-tested on the example specs.

pub mod deployment;
pub mod env;
pub mod ingress;
pub mod pdb;
pub mod secret;
pub mod service;
pub mod stream;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;
use serde_json::Value;

use crate::{
    api::ObjectKey,
    config::{Platform, ProjectConfig},
    crd,
    naming::Component,
};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "zori-operator";
/// Label naming the ZoriProject a child belongs to; children no longer desired are found by it.
pub const PROJECT_LABEL: &str = "zori.dev/project";
/// `app.kubernetes.io/managed-by` value of every child.
pub const MANAGED_BY: &str = "zori-operator";

/// Labels every child carries.
pub fn labels(config: &ProjectConfig, component: Option<Component>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/instance".to_owned(), config.name.clone()),
        ("app.kubernetes.io/part-of".to_owned(), "zori".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
        (PROJECT_LABEL.to_owned(), config.name.clone()),
    ]);
    match component {
        Some(c) => {
            labels.insert("app.kubernetes.io/name".to_owned(), c.binary().to_owned());
            labels.insert(
                "app.kubernetes.io/component".to_owned(),
                c.as_str().to_owned(),
            );
        }
        None => {
            labels.insert("app.kubernetes.io/name".to_owned(), "zori".to_owned());
        }
    }
    labels
}

/// The labels a workload's pods are selected by (immutable in a Deployment: no version here).
pub fn selector_labels(config: &ProjectConfig, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_owned(), config.name.clone()),
        (
            "app.kubernetes.io/name".to_owned(),
            component.binary().to_owned(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            component.as_str().to_owned(),
        ),
    ])
}

/// Labels that find every child of one project (for pruning).
pub fn ownership_selector(project: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PROJECT_LABEL.to_owned(), project.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
    ])
}

/// The controller owner reference to the ZoriProject: deleting it deletes the children.
pub fn owner_reference(config: &ProjectConfig) -> OwnerReference {
    OwnerReference {
        api_version: crd::API_VERSION.to_owned(),
        kind: crd::KIND.to_owned(),
        name: config.name.clone(),
        uid: config.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata of a child: name, namespace, labels, owner reference.
pub fn object_meta(
    config: &ProjectConfig,
    name: String,
    component: Option<Component>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(config.namespace.clone()),
        labels: Some(labels(config, component)),
        owner_references: Some(vec![owner_reference(config)]),
        ..ObjectMeta::default()
    }
}

/// One object to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub key: ObjectKey,
    pub object: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("failed to serialise {kind} {name}: {source}")]
    Serialise {
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Serialises a typed object (k8s-openapi writes `apiVersion` and `kind`).
pub fn desired<K>(object: &K) -> Result<Desired, BuildError>
where
    K: Serialize + kube::Resource<DynamicType = ()>,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let value = serde_json::to_value(object).map_err(|source| BuildError::Serialise {
        kind: K::kind(&()).into_owned(),
        name: name.clone(),
        source,
    })?;
    Ok(Desired {
        key: ObjectKey {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            namespace: object.meta().namespace.clone(),
            name,
        },
        object: value,
    })
}

/// Inputs read before building (the dereference step).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dereferenced {
    /// Data of the tenant Secret the builders will write (existing values kept).
    pub secret_data: BTreeMap<String, String>,
    /// Hash of the Stripe webhook secret value, when it was found.
    pub stripe_secret_hash: Option<String>,
}

/// Every Kubernetes object the project should have, in apply order: the Secret, the workloads,
/// their Services and disruption budgets, and the Ingress when asked for.
pub fn desired_children(
    config: &ProjectConfig,
    platform: &Platform,
    inputs: &Dereferenced,
) -> Result<Vec<Desired>, BuildError> {
    let mut out = vec![desired(&secret::build_secret(config, &inputs.secret_data))?];
    for component in Component::ALL {
        let config_hash = pod_config_hash(config, platform, component, inputs);
        out.push(desired(&deployment::build_deployment(
            config,
            platform,
            component,
            &config_hash,
        ))?);
        out.push(desired(&service::build_service(config, component))?);
        out.push(desired(&pdb::build_pdb(config, component))?);
    }
    if let Some(ingress) = ingress::build_ingress(config) {
        out.push(desired(&ingress)?);
    }
    Ok(out)
}

/// A hash of the Secret values one workload's pods read: a change rolls exactly the pods that
/// use the changed value.
pub fn pod_config_hash(
    config: &ProjectConfig,
    platform: &Platform,
    component: Component,
    inputs: &Dereferenced,
) -> String {
    let vars = match component {
        Component::Ingest => env::ingest_env(config, platform),
        Component::Api => env::api_env(config, platform),
    };
    let tenant_secret = crate::naming::secret_name(&config.name);
    let mut used = BTreeMap::new();
    let mut stripe = None;
    for selector in vars.iter().filter_map(|v| {
        v.value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
    }) {
        if selector.name == tenant_secret {
            if let Some(value) = inputs.secret_data.get(&selector.key) {
                used.insert(selector.key.clone(), value.clone());
            }
        } else {
            stripe = inputs.stripe_secret_hash.as_deref();
        }
    }
    secret::config_hash(&used, stripe)
}

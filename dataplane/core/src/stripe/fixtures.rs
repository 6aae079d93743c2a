//! Stripe webhook payloads built from Stripe's own published example objects (the `testing`
//! feature; tests only).
//!
//! `fixtures/<api version>.json` holds the objects of `openapi/fixtures3.json` of
//! <https://github.com/stripe/openapi> at a named commit, cut out unchanged by
//! `scripts/stripe-fixtures.py`. A test starts from one of them and overrides fields; setting a
//! field the object does not have is refused, so no test passes on a field Stripe never sends.
//! Two kinds of path are allowed beyond the example's own keys: keys under a `metadata` map (the
//! schema's `additionalProperties`), and the few optional fields the example omits that
//! `spec3.json` of the same version defines, listed in [`SCHEMA_ONLY_FIELDS`].
//!
//! The files name the API version current at their commit's date: the acacia file (tag v1500,
//! 2025-02-20) has the Invoice `payment_intent`/`charge`/`subscription_details` fields basil
//! removed, the basil file (tag v1660, 2025-04-04) has `Invoice.parent` and the
//! `invoice_payment` object and no `invoice` on Charge or PaymentIntent. (`spec3.json` itself is
//! too large for the mirror these were cut from; the schema-only paths were checked against
//! code generated from it.)

use serde_json::{json, Map, Value};

/// A Stripe API version whose example objects are stored here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// `2025-01-27.acacia`, the last shape before basil: Invoice carries `payment_intent`,
    /// `charge` and `subscription`; Charge and PaymentIntent carry `invoice`.
    Acacia,
    /// `2025-03-31.basil`: Invoice has `parent.subscription_details` and no payment intent or
    /// charge; `invoice_payment` objects link invoices to payments.
    Basil,
}

impl ApiVersion {
    pub const ALL: [ApiVersion; 2] = [ApiVersion::Acacia, ApiVersion::Basil];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::Acacia => "2025-01-27.acacia",
            ApiVersion::Basil => "2025-03-31.basil",
        }
    }

    fn document(self) -> &'static str {
        match self {
            ApiVersion::Acacia => include_str!("fixtures/2025-01-27.acacia.json"),
            ApiVersion::Basil => include_str!("fixtures/2025-03-31.basil.json"),
        }
    }

    /// Stripe's example object of type `name` (`charge`, `checkout.session`, …).
    pub fn object(self, name: &str) -> Result<StripeObject, FixtureError> {
        let document: Value = serde_json::from_str(self.document())
            .map_err(|e| FixtureError::Unreadable(self.as_str(), e.to_string()))?;
        let value = document
            .get("objects")
            .and_then(|o| o.get(name))
            .cloned()
            .ok_or_else(|| FixtureError::NoObject(self.as_str(), name.to_owned()))?;
        Ok(StripeObject {
            version: self,
            kind: name.to_owned(),
            value,
        })
    }

    /// The commit of stripe/openapi the objects come from.
    pub fn source_commit(self) -> Result<String, FixtureError> {
        let document: Value = serde_json::from_str(self.document())
            .map_err(|e| FixtureError::Unreadable(self.as_str(), e.to_string()))?;
        document["source"]["commit"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| FixtureError::NoObject(self.as_str(), "source.commit".to_owned()))
    }
}

/// Optional fields that `spec3.json` defines but the example objects omit, per API version:
/// (object, dotted path).
const SCHEMA_ONLY_FIELDS: &[(ApiVersion, &str, &str)] = &[
    // invoices_payments_invoice_payment_associated_payment: charge, payment_intent, type.
    (
        ApiVersion::Basil,
        "invoice_payment",
        "payment.payment_intent",
    ),
    (ApiVersion::Basil, "invoice_payment", "payment.charge"),
    // billing_bill_resource_invoicing_parents_invoice_parent (Invoice.parent is null in the
    // example): type, quote_details, subscription_details { metadata, subscription }.
    (ApiVersion::Basil, "invoice", "parent.type"),
    (ApiVersion::Basil, "invoice", "parent.quote_details"),
    (
        ApiVersion::Basil,
        "invoice",
        "parent.subscription_details.subscription",
    ),
    (
        ApiVersion::Basil,
        "invoice",
        "parent.subscription_details.metadata",
    ),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FixtureError {
    #[error("stripe fixtures of {0} are not readable json: {1}")]
    Unreadable(&'static str, String),
    #[error("stripe fixtures of {0} have no {1:?} object")]
    NoObject(&'static str, String),
    #[error("a {kind} on stripe api {version} has no field {path:?}; tests may not invent fields")]
    UnknownField {
        version: &'static str,
        kind: String,
        path: String,
    },
}

/// One Stripe object of a known API version, being prepared for a test.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeObject {
    version: ApiVersion,
    kind: String,
    value: Value,
}

impl StripeObject {
    pub fn version(&self) -> ApiVersion {
        self.version
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    pub fn into_value(self) -> Value {
        self.value
    }

    /// Sets the field at the dotted `path` (`metadata.zori_visitor_id`, `lines.data.0.amount`).
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Result<Self, FixtureError> {
        let schema_only = SCHEMA_ONLY_FIELDS
            .iter()
            .any(|(v, kind, p)| *v == self.version && *kind == self.kind && *p == path);
        let unknown = || FixtureError::UnknownField {
            version: self.version.as_str(),
            kind: self.kind.clone(),
            path: path.to_owned(),
        };
        let keys: Vec<&str> = path.split('.').collect();
        let mut slot = &mut self.value;
        for (i, key) in keys.iter().enumerate() {
            let under_metadata = i > 0 && keys[i - 1] == "metadata";
            slot = match slot {
                Value::Array(items) => key
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| items.get_mut(n))
                    .ok_or_else(unknown)?,
                Value::Object(map) => {
                    if !(map.contains_key(*key) || schema_only || under_metadata) {
                        return Err(unknown());
                    }
                    map.entry(key.to_string()).or_insert(Value::Null)
                }
                Value::Null if schema_only || under_metadata => {
                    *slot = Value::Object(Map::new());
                    let Value::Object(map) = slot else {
                        unreachable!("just made an object")
                    };
                    map.entry(key.to_string()).or_insert(Value::Null)
                }
                _ => return Err(unknown()),
            };
        }
        *slot = value.into();
        Ok(self)
    }

    /// [`StripeObject::set`] for tests: panics with the error's message.
    #[must_use]
    pub fn with(self, path: &str, value: impl Into<Value>) -> Self {
        match self.set(path, value) {
            Ok(object) => object,
            Err(error) => panic!("{error}"),
        }
    }

    /// A webhook event of `event_type` carrying this object, shaped like Stripe's example
    /// `event` of the same version.
    pub fn event(&self, event_type: &str, event_id: &str, created: i64) -> Value {
        let mut event = match self.version.object("event") {
            Ok(event) => event.value,
            Err(error) => panic!("{error}"),
        };
        event["id"] = json!(event_id);
        event["type"] = json!(event_type);
        event["created"] = json!(created);
        event["api_version"] = json!(self.version.as_str());
        event["livemode"] = self.value.get("livemode").cloned().unwrap_or(json!(false));
        event["data"] = json!({ "object": self.value });
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_has_the_objects_the_tests_use() {
        for version in ApiVersion::ALL {
            for name in [
                "checkout.session",
                "charge",
                "customer",
                "dispute",
                "invoice",
                "payment_intent",
                "refund",
                "subscription",
                "event",
            ] {
                let object = version.object(name).unwrap();
                assert!(object.value().is_object(), "{name} on {version:?}");
            }
            assert_eq!(version.source_commit().unwrap().len(), 40);
        }
        assert!(ApiVersion::Basil.object("invoice_payment").is_ok());
        assert!(ApiVersion::Acacia.object("invoice_payment").is_err());
    }

    #[test]
    fn the_shapes_differ_where_basil_changed_them() {
        let acacia = ApiVersion::Acacia.object("invoice").unwrap();
        let basil = ApiVersion::Basil.object("invoice").unwrap();
        for field in ["payment_intent", "charge", "subscription_details"] {
            assert!(acacia.value().get(field).is_some(), "{field}");
            assert!(basil.value().get(field).is_none(), "{field}");
        }
        assert!(basil.value().get("parent").is_some());
        for object in ["charge", "payment_intent"] {
            assert!(ApiVersion::Acacia.object(object).unwrap().value()["invoice"].is_null());
            assert!(ApiVersion::Basil
                .object(object)
                .unwrap()
                .value()
                .get("invoice")
                .is_none());
        }
    }

    #[test]
    fn invented_fields_are_refused() {
        let invoice = ApiVersion::Basil.object("invoice").unwrap();
        let error = invoice.clone().set("payment_intent", "pi_1").unwrap_err();
        assert_eq!(
            error.to_string(),
            "a invoice on stripe api 2025-03-31.basil has no field \"payment_intent\"; tests may not invent fields"
        );
        assert!(invoice.clone().set("payments", json!([])).is_err());
        assert!(invoice.clone().set("lines.data.7.amount", 1).is_err());
        assert!(invoice.clone().set("customer.nope", 1).is_err());
        // The example's own fields, metadata keys and schema-only fields are fine.
        let invoice = invoice
            .with("amount_paid", 2900)
            .with("metadata.zori_visitor_id", "vis_1")
            .with("parent.subscription_details.subscription", "sub_1")
            .with("lines.data.0.amount", 2900);
        assert_eq!(
            invoice.value()["parent"]["subscription_details"]["subscription"],
            "sub_1"
        );
        assert_eq!(invoice.value()["metadata"]["zori_visitor_id"], "vis_1");
        let acacia = ApiVersion::Acacia.object("invoice").unwrap();
        assert!(acacia
            .set("parent.subscription_details.subscription", "sub_1")
            .is_err());
    }

    #[test]
    fn events_are_shaped_like_stripes_example_event() {
        let charge = ApiVersion::Basil
            .object("charge")
            .unwrap()
            .with("id", "ch_1");
        let event = charge.event("charge.succeeded", "evt_1", 1_700_000_000);
        assert_eq!(event["type"], "charge.succeeded");
        assert_eq!(event["api_version"], "2025-03-31.basil");
        assert_eq!(event["data"]["object"]["id"], "ch_1");
        assert_eq!(event["object"], "event");
    }
}

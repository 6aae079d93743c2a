//! Attribution models over the stored touch history: `GET /api/v1/attribution?model=…` and
//! `GET /api/v1/attribution/compare?models=…` (docs/api.md).
//!
//! Payments of the range are resolved to their payer as in every revenue report (user, else
//! visitor); the payer's touches (every session landing of every visitor of the user) inside
//! the lookback window before each payment are credited by [`zori_core::attribution`]. The
//! data-driven model is fitted to the journeys of the range: one converting journey per
//! payment, one non-converting journey per visitor (or user) with a session starting in the
//! range who paid nothing in it.

mod history;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::{
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};
use zori_core::{
    attribution::{
        Attribution, AttributionError, MarkovMinimum, Model, NotEnoughData, Payment, Settings,
        DEFAULT_HALF_LIFE, DEFAULT_LOOKBACK,
    },
    currency::format_minor,
    touch::{Dimension, Touch},
};

use self::history::{converting_paths, load_history, non_converting_paths};
use super::{
    filters::Filters,
    revenue::{livemode, Share},
    DayRange, Params, ReportError, ReportsState,
};

/// Conversions are apportioned like money, in millionths of a payment.
const CONVERSION_UNITS: i64 = 1_000_000;

/// Revenue credited to a value, in minor units of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credited {
    pub currency: String,
    pub net: i64,
    pub formatted: String,
}

fn credited(map: BTreeMap<String, i64>) -> Vec<Credited> {
    map.into_iter()
        .map(|(currency, net)| Credited {
            formatted: format_minor(net, &currency),
            currency,
            net,
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct ModelRow {
    pub value: String,
    /// Payments credited to the value: fractional under multi-touch models.
    pub conversions: f64,
    /// Distinct payers with any credit to the value.
    pub customers: i64,
    pub revenue: Vec<Credited>,
    pub revenue_share: Vec<Share>,
}

#[derive(Debug, Default, Serialize)]
pub struct ModelTotals {
    pub payments: i64,
    pub customers: i64,
    pub revenue: Vec<Credited>,
}

/// What the data-driven model was fitted to, and each state's removal effect.
#[derive(Debug, Serialize)]
pub struct DataDrivenFit {
    pub journeys: u64,
    pub converting: u64,
    pub non_converting: u64,
    pub conversion_probability: f64,
    pub removal_effects: BTreeMap<String, f64>,
    /// Values folded into `(other)` because there were more than 200 (the rarest first).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub folded: BTreeSet<String>,
}

#[derive(Debug, Serialize)]
pub struct NotEnoughDataView {
    pub message: String,
    #[serde(flatten)]
    pub data: NotEnoughData,
}

/// One model's answer.
#[derive(Debug, Serialize)]
pub struct ModelReport {
    pub model: Model,
    pub rows: Vec<ModelRow>,
    /// Payments with no touch in the lookback window (or no known payer).
    pub unattributed: ModelTotals,
    pub totals: ModelTotals,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_driven: Option<DataDrivenFit>,
    /// Set (and `rows` empty) when the data-driven model lacks the data it needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_enough_data: Option<NotEnoughDataView>,
}

#[derive(Debug, Serialize)]
pub struct ModelAttribution {
    pub dimension: &'static str,
    pub from: String,
    pub to: String,
    pub lookback_days: u32,
    pub half_life_days: u32,
    #[serde(flatten)]
    pub report: ModelReport,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub dimension: &'static str,
    pub from: String,
    pub to: String,
    pub lookback_days: u32,
    pub half_life_days: u32,
    pub models: Vec<ModelReport>,
}

/// A payment to credit, with its payer.
#[derive(Debug, Clone)]
pub struct PaymentToCredit {
    pub paid_at: OffsetDateTime,
    pub net: i64,
    pub currency: String,
    pub payer: String,
}

#[derive(Default)]
struct RowAcc {
    conversions: i64,
    payers: BTreeSet<String>,
    revenue: BTreeMap<String, i64>,
}

/// Credits every payment under `model`. `touches` holds each payer's touches (a payer absent
/// from it has none).
pub fn credit_all(
    attribution: &Attribution,
    model: Model,
    dimension: Dimension,
    payments: &[PaymentToCredit],
    touches: &HashMap<String, Vec<Touch>>,
) -> Result<ModelReport, AttributionError> {
    let none: Vec<Touch> = Vec::new();
    let mut rows: BTreeMap<String, RowAcc> = BTreeMap::new();
    let mut unattributed = (0i64, BTreeSet::new(), BTreeMap::new());
    let mut totals = (0i64, BTreeSet::new(), BTreeMap::<String, i64>::new());
    for p in payments {
        totals.0 += 1;
        totals.1.insert(p.payer.clone());
        *totals.2.entry(p.currency.clone()).or_default() += p.net;
        let list = touches.get(&p.payer).unwrap_or(&none);
        let money = attribution.credit(
            model,
            list,
            &Payment {
                paid_at: p.paid_at,
                amount: p.net,
            },
        )?;
        let conversions = attribution.credit(
            model,
            list,
            &Payment {
                paid_at: p.paid_at,
                amount: CONVERSION_UNITS,
            },
        )?;
        let (Some(money), Some(conversions)) = (money, conversions) else {
            unattributed.0 += 1;
            unattributed.1.insert(p.payer.clone());
            *unattributed.2.entry(p.currency.clone()).or_default() += p.net;
            continue;
        };
        for (i, touch) in list.iter().enumerate() {
            if money[i] == 0 && conversions[i] == 0 {
                continue;
            }
            let row = rows
                .entry(touch.dimension(dimension).to_owned())
                .or_default();
            row.conversions += conversions[i];
            if conversions[i] > 0 {
                row.payers.insert(p.payer.clone());
            }
            *row.revenue.entry(p.currency.clone()).or_default() += money[i];
        }
    }
    let total_revenue = totals.2.clone();
    let mut rows: Vec<ModelRow> = rows
        .into_iter()
        .map(|(value, acc)| ModelRow {
            value,
            conversions: acc.conversions as f64 / CONVERSION_UNITS as f64,
            customers: acc.payers.len() as i64,
            revenue_share: acc
                .revenue
                .iter()
                .map(|(currency, net)| {
                    let total = total_revenue.get(currency).copied().unwrap_or(0);
                    Share {
                        currency: currency.clone(),
                        share: (total != 0).then(|| *net as f64 / total as f64),
                    }
                })
                .collect(),
            revenue: credited(acc.revenue),
        })
        .collect();
    rows.sort_by(|a, b| {
        b.conversions
            .total_cmp(&a.conversions)
            .then(a.value.cmp(&b.value))
    });
    let data_driven = match model {
        Model::DataDriven => attribution.removal_effects().map(|e| DataDrivenFit {
            journeys: e.journeys,
            converting: e.converting,
            non_converting: e.non_converting,
            conversion_probability: e.conversion_probability,
            removal_effects: e.effects.clone(),
            folded: e.folded.clone(),
        }),
        _ => None,
    };
    Ok(ModelReport {
        model,
        rows,
        unattributed: ModelTotals {
            payments: unattributed.0,
            customers: unattributed.1.len() as i64,
            revenue: credited(unattributed.2),
        },
        totals: ModelTotals {
            payments: totals.0,
            customers: totals.1.len() as i64,
            revenue: credited(totals.2),
        },
        data_driven,
        not_enough_data: None,
    })
}

/// The parameters every model report shares.
struct Common {
    range: DayRange,
    livemode: Option<bool>,
    filters: Filters,
    dimension: Dimension,
    lookback_days: u32,
    half_life_days: u32,
}

impl Common {
    async fn parse(pool: &PgPool, params: &Params) -> Result<Self, ReportError> {
        let dimension: Dimension = params
            .get("dimension")
            .unwrap_or("channel")
            .parse()
            .map_err(|e: String| ReportError::bad("dimension", e))?;
        Ok(Common {
            range: params.range()?,
            livemode: livemode(pool, params).await?,
            filters: Filters::parse(params)?,
            dimension,
            lookback_days: params.int(
                "lookback_days",
                DEFAULT_LOOKBACK.whole_days() as u32,
                1,
                3660,
            )?,
            half_life_days: params.int(
                "half_life_days",
                DEFAULT_HALF_LIFE.whole_days() as u32,
                1,
                3660,
            )?,
        })
    }

    fn attribution(&self) -> Result<Attribution, ReportError> {
        Attribution::new(Settings {
            lookback: Duration::days(i64::from(self.lookback_days)),
            half_life: Duration::days(i64::from(self.half_life_days)),
            markov_minimum: MarkovMinimum::default(),
            markov_dimension: self.dimension,
        })
        .map_err(|e| ReportError::bad("lookback_days", e.to_string()))
    }
}

fn model_param(param: &str, s: &str) -> Result<Model, ReportError> {
    s.trim()
        .parse()
        .map_err(|e: AttributionError| ReportError::bad(param, e.to_string()))
}

/// Every requested model's report over one load of the history.
async fn reports(
    state: &ReportsState,
    common: &Common,
    models: &[Model],
) -> Result<Vec<ModelReport>, ReportError> {
    let mut attribution = common.attribution()?;
    let lookback = attribution.settings().lookback;
    let history = load_history(
        &state.pool,
        common.range,
        common.livemode,
        &common.filters,
        lookback,
    )
    .await?;
    let mut not_enough = None;
    if models.contains(&Model::DataDriven) {
        let payers: Vec<String> = history
            .payments
            .iter()
            .map(|p| p.payer.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut paths = converting_paths(&attribution, &history);
        paths.extend(
            non_converting_paths(
                &state.pool,
                common.range,
                &common.filters,
                lookback,
                common.dimension,
                &payers,
            )
            .await?,
        );
        if let Err(e) = attribution.fit(&paths) {
            match e {
                AttributionError::NotEnoughData(data) => not_enough = Some(data),
                other => return Err(ReportError::bad("model", other.to_string())),
            }
        }
    }
    let mut out = Vec::with_capacity(models.len());
    for model in models {
        if *model == Model::DataDriven {
            if let Some(data) = &not_enough {
                out.push(ModelReport {
                    model: *model,
                    rows: Vec::new(),
                    unattributed: ModelTotals::default(),
                    totals: ModelTotals::default(),
                    data_driven: None,
                    not_enough_data: Some(NotEnoughDataView {
                        message: data.to_string(),
                        data: data.clone(),
                    }),
                });
                continue;
            }
        }
        let report = credit_all(
            &attribution,
            *model,
            common.dimension,
            &history.payments,
            &history.touches,
        )
        .map_err(|e| ReportError::bad("model", e.to_string()))?;
        out.push(report);
    }
    Ok(out)
}

/// `GET /api/v1/attribution?model=…`: one model.
pub async fn attribution(state: &ReportsState, params: &Params) -> Result<Response, ReportError> {
    let model = model_param("model", params.get("model").unwrap_or_default())?;
    let common = Common::parse(&state.pool, params).await?;
    let mut reports = reports(state, &common, &[model]).await?;
    let report = reports
        .pop()
        .ok_or_else(|| ReportError::bad("model", "no model computed"))?;
    if let Some(missing) = &report.not_enough_data {
        return Err(ReportError::NotEnoughData(missing.message.clone()));
    }
    Ok(Json(ModelAttribution {
        dimension: common.dimension.as_str(),
        from: common.range.from.to_string(),
        to: common.range.to.to_string(),
        lookback_days: common.lookback_days,
        half_life_days: common.half_life_days,
        report,
    })
    .into_response())
}

/// `GET /api/v1/attribution/compare?models=a,b`: several models side by side (all six by
/// default), in the order asked.
pub async fn compare(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Comparison>, ReportError> {
    let params = Params::parse(query)?;
    let mut models: Vec<Model> = Vec::new();
    match params.get("models").map(str::trim) {
        None | Some("") => models.extend(Model::ALL),
        Some(list) => {
            for name in list.split(',') {
                let model = model_param("models", name)?;
                if !models.contains(&model) {
                    models.push(model);
                }
            }
        }
    }
    let common = Common::parse(&state.pool, &params).await?;
    let reports = reports(&state, &common, &models).await?;
    Ok(Json(Comparison {
        dimension: common.dimension.as_str(),
        from: common.range.from.to_string(),
        to: common.range.to.to_string(),
        lookback_days: common.lookback_days,
        half_life_days: common.half_life_days,
        models: reports,
    }))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use zori_core::channel::Channel;

    use super::*;

    fn touch(at: OffsetDateTime, channel: Channel) -> Touch {
        Touch {
            visitor_id: "vis_1".to_owned(),
            session_id: format!("ses_{}", at.unix_timestamp()),
            occurred_at: at,
            channel,
            source: channel.as_str().to_owned(),
            medium: None,
            campaign: None,
            term: None,
            content: None,
            referrer_host: None,
            landing_page: "/".to_owned(),
            click_ids: BTreeMap::new(),
        }
    }

    #[test]
    fn credits_add_up_per_value_and_currency() {
        let a = Attribution::new(Settings::default()).unwrap();
        let paid = datetime!(2025-03-31 12:00 UTC);
        let mut touches = HashMap::new();
        touches.insert(
            "u:1".to_owned(),
            vec![
                touch(datetime!(2025-03-01 12:00 UTC), Channel::Email),
                touch(datetime!(2025-03-10 12:00 UTC), Channel::PaidSearch),
                touch(datetime!(2025-03-20 12:00 UTC), Channel::Email),
            ],
        );
        let payments = vec![
            PaymentToCredit {
                paid_at: paid,
                net: 10_000,
                currency: "usd".to_owned(),
                payer: "u:1".to_owned(),
            },
            PaymentToCredit {
                paid_at: paid,
                net: 500,
                currency: "jpy".to_owned(),
                payer: "u:1".to_owned(),
            },
            PaymentToCredit {
                paid_at: paid,
                net: 700,
                currency: "usd".to_owned(),
                payer: "v:nobody".to_owned(),
            },
        ];
        let r = credit_all(&a, Model::Linear, Dimension::Channel, &payments, &touches).unwrap();
        // Linear over email, paid search, email: usd 3334 + 3333 to email… email gets touches
        // one and three (3334 + 3333 = 6667), paid search 3333; jpy 167 + 166 = 333 and 167.
        let email = r.rows.iter().find(|r| r.value == "email").unwrap();
        let paid_search = r.rows.iter().find(|r| r.value == "paid_search").unwrap();
        assert_eq!(
            email.revenue,
            credited(BTreeMap::from([("jpy".into(), 333), ("usd".into(), 6667)]))
        );
        assert_eq!(
            paid_search.revenue,
            credited(BTreeMap::from([("jpy".into(), 167), ("usd".into(), 3333)]))
        );
        // Two payments, each 2/3 to email: 1.333333 conversions (millionths: 666667 + 666667).
        assert!(
            (email.conversions - 1.333_334).abs() < 1e-9,
            "{}",
            email.conversions
        );
        assert!((paid_search.conversions - 0.666_666).abs() < 1e-9);
        assert_eq!((email.customers, paid_search.customers), (1, 1));
        assert_eq!(r.rows[0].value, "email");
        assert_eq!(r.unattributed.payments, 1);
        assert_eq!(r.unattributed.revenue[0].net, 700);
        assert_eq!(r.totals.payments, 3);
        assert_eq!(r.totals.customers, 2);
        assert_eq!(
            r.totals.revenue,
            credited(BTreeMap::from([
                ("jpy".into(), 500),
                ("usd".into(), 10_700)
            ]))
        );
        let share = email
            .revenue_share
            .iter()
            .find(|s| s.currency == "usd")
            .unwrap();
        assert_eq!(share.share, Some(6667.0 / 10_700.0));
    }
}

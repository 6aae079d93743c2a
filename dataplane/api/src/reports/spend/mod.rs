//! Ad spend: `PUT /api/v1/spend` imports spend per day × source × medium × campaign (JSON or
//! CSV, [`import`]; a re-import replaces the same keys), and `GET /api/v1/spend` reports spend,
//! customers, CAC and ROAS per campaign over a range.
//!
//! Revenue and customers are credited by **first touch** (the payer's `ft_source`,
//! `ft_medium`, `ft_campaign`, as in the attribution report); a spend row matches them when
//! source, medium and campaign are equal (an empty medium or campaign matches a touch without
//! one). New customers are payers of the range with no payment before it.

pub mod import;

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{header, HeaderMap},
    Json,
};
use serde::Serialize;
use zori_core::currency::format_minor;

use self::import::{from_csv, from_json, SpendRow};
use super::{
    filters::Filters,
    models::Credited,
    revenue::{livemode, payers_before, RESOLVED_PAYMENTS},
    Params, ReportError, ReportsState,
};

/// Largest import body.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Serialize)]
pub struct Imported {
    pub rows: usize,
    /// Keys seen for the first time.
    pub inserted: usize,
    /// Keys whose currency or amount changed.
    pub updated: usize,
    /// Keys imported before with the same currency and amount.
    pub unchanged: usize,
}

/// `PUT /api/v1/spend`: `Content-Type: text/csv` reads CSV, anything else JSON.
pub async fn put(
    State(state): State<ReportsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Imported>, ReportError> {
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/csv"));
    let rows = if csv {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ReportError::bad("body", "the CSV is not UTF-8"))?;
        from_csv(text)
    } else {
        from_json(&body)
    }
    .map_err(|e| ReportError::bad("body", e.to_string()))?;
    let (inserted, updated) = upsert(&state, &rows).await?;
    Ok(Json(Imported {
        rows: rows.len(),
        inserted,
        updated,
        unchanged: rows.len().saturating_sub(inserted + updated),
    }))
}

/// Writes every row in one statement; returns how many keys were new and how many changed.
async fn upsert(state: &ReportsState, rows: &[SpendRow]) -> Result<(usize, usize), ReportError> {
    let days: Vec<time::Date> = rows.iter().map(|r| r.day).collect();
    let column = |f: fn(&SpendRow) -> &String| rows.iter().map(f).cloned().collect::<Vec<_>>();
    let amounts: Vec<i64> = rows.iter().map(|r| r.amount).collect();
    let flags: Vec<(bool,)> = sqlx::query_as(
        "INSERT INTO ad_spend AS s (day, source, medium, campaign, currency, amount)
         SELECT * FROM UNNEST($1::date[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[])
         ON CONFLICT (day, source, medium, campaign) DO UPDATE
            SET currency = EXCLUDED.currency, amount = EXCLUDED.amount, updated_at = now()
            WHERE (s.currency, s.amount) IS DISTINCT FROM (EXCLUDED.currency, EXCLUDED.amount)
         RETURNING (xmax = 0)",
    )
    .bind(&days)
    .bind(column(|r| &r.source))
    .bind(column(|r| &r.medium))
    .bind(column(|r| &r.campaign))
    .bind(column(|r| &r.currency))
    .bind(&amounts)
    .fetch_all(&state.pool)
    .await
    .map_err(ReportError::pg("ad spend"))?;
    let inserted = flags.iter().filter(|(inserted,)| *inserted).count();
    Ok((inserted, flags.len() - inserted))
}

/// An amount of one currency (fractional for averages such as CAC).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Amount {
    pub currency: String,
    pub amount: f64,
    pub formatted: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Roas {
    pub currency: String,
    /// Revenue ÷ spend in the same currency; `null` without spend.
    pub roas: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payback {
    pub currency: String,
    /// CAC ÷ monthly net revenue per new customer (their revenue in the range, spread over the
    /// range's months of 30.44 days); `null` when that revenue is 0.
    pub months: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct CampaignRow {
    pub source: String,
    /// `""` when not set.
    pub medium: String,
    pub campaign: String,
    pub spend: Vec<Credited>,
    pub customers: i64,
    pub new_customers: i64,
    pub revenue: Vec<Credited>,
    /// Spend ÷ new customers, per spend currency; empty without new customers.
    pub cac: Vec<Amount>,
    /// Per spend currency.
    pub roas: Vec<Roas>,
    /// Per spend currency, when there are new customers.
    pub payback: Vec<Payback>,
}

#[derive(Debug, Serialize)]
pub struct SpendReport {
    pub from: String,
    pub to: String,
    pub rows: Vec<CampaignRow>,
}

type Key = (String, String, String);

#[derive(Default)]
struct Acc {
    spend: BTreeMap<String, i64>,
    payers: BTreeSet<String>,
    new_payers: BTreeSet<String>,
    revenue: BTreeMap<String, i64>,
    /// Revenue of the new payers alone.
    new_revenue: BTreeMap<String, i64>,
}

/// Average days in a month.
const DAYS_PER_MONTH: f64 = 365.25 / 12.0;

fn credited(map: &BTreeMap<String, i64>) -> Vec<Credited> {
    map.iter()
        .map(|(currency, net)| Credited {
            currency: currency.clone(),
            net: *net,
            formatted: format_minor(*net, currency),
        })
        .collect()
}

fn campaign_row((source, medium, campaign): Key, acc: Acc, days: i64) -> CampaignRow {
    let new_customers = acc.new_payers.len() as i64;
    let months = days.max(1) as f64 / DAYS_PER_MONTH;
    CampaignRow {
        payback: if new_customers > 0 {
            acc.spend
                .iter()
                .map(|(currency, spend)| {
                    let cac = *spend as f64 / new_customers as f64;
                    let revenue = acc.new_revenue.get(currency).copied().unwrap_or(0) as f64;
                    let monthly = revenue / new_customers as f64 / months;
                    Payback {
                        currency: currency.clone(),
                        months: (monthly > 0.0).then(|| cac / monthly),
                    }
                })
                .collect()
        } else {
            Vec::new()
        },
        cac: if new_customers > 0 {
            acc.spend
                .iter()
                .map(|(currency, spend)| {
                    let amount = *spend as f64 / new_customers as f64;
                    Amount {
                        currency: currency.clone(),
                        amount,
                        formatted: format_minor(amount.round() as i64, currency),
                    }
                })
                .collect()
        } else {
            Vec::new()
        },
        roas: acc
            .spend
            .iter()
            .map(|(currency, spend)| Roas {
                currency: currency.clone(),
                roas: (*spend > 0).then(|| {
                    acc.revenue.get(currency).copied().unwrap_or(0) as f64 / *spend as f64
                }),
            })
            .collect(),
        spend: credited(&acc.spend),
        revenue: credited(&acc.revenue),
        customers: acc.payers.len() as i64,
        new_customers,
        source,
        medium,
        campaign,
    }
}

/// `GET /api/v1/spend`: spend, customers, CAC and ROAS per source × medium × campaign.
pub async fn report(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<SpendReport>, ReportError> {
    let params = Params::parse(query)?;
    let range = params.range()?;
    let livemode = livemode(&state.pool, &params).await?;
    let filters = Filters::parse(&params)?;

    let spend: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT source, medium, campaign, currency, sum(amount)::int8 FROM ad_spend
         WHERE day >= $1 AND day <= $2 GROUP BY 1, 2, 3, 4",
    )
    .bind(range.from)
    .bind(range.to)
    .fetch_all(&state.pool)
    .await
    .map_err(ReportError::pg("ad spend"))?;

    let (conditions, binds) = filters.pg("v", 4);
    let sql = format!(
        "WITH {RESOLVED_PAYMENTS}
         SELECT v.ft_source, COALESCE(v.ft_medium, ''), COALESCE(v.ft_campaign, ''), r.payer,
                r.currency, (r.amount - r.amount_refunded - r.amount_disputed)::int8
         FROM resolved r JOIN visitors v ON v.visitor_id = r.ft_visitor_id
         WHERE true{conditions}"
    );
    let mut q = sqlx::query_as(&sql)
        .bind(range.start())
        .bind(range.end_exclusive())
        .bind(livemode);
    for b in &binds {
        q = q.bind(b);
    }
    let payments: Vec<(String, String, String, String, String, i64)> = q
        .fetch_all(&state.pool)
        .await
        .map_err(ReportError::pg("payments"))?;

    // Payers seen before the range are not new.
    let earlier = payers_before(&state.pool, range.start(), livemode).await?;

    let mut rows: BTreeMap<Key, Acc> = BTreeMap::new();
    for (source, medium, campaign, currency, amount) in spend {
        *rows
            .entry((source, medium, campaign))
            .or_default()
            .spend
            .entry(currency)
            .or_default() += amount;
    }
    for (source, medium, campaign, payer, currency, net) in payments {
        let acc = rows.entry((source, medium, campaign)).or_default();
        if !earlier.contains(&payer) {
            acc.new_payers.insert(payer.clone());
            *acc.new_revenue.entry(currency.clone()).or_default() += net;
        }
        acc.payers.insert(payer);
        *acc.revenue.entry(currency).or_default() += net;
    }
    let days = (range.to - range.from).whole_days() + 1;
    Ok(Json(SpendReport {
        from: range.from.to_string(),
        to: range.to.to_string(),
        rows: rows
            .into_iter()
            .map(|(k, acc)| campaign_row(k, acc, days))
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cac_and_roas_per_currency() {
        let acc = Acc {
            spend: BTreeMap::from([("usd".to_owned(), 30_000), ("eur".to_owned(), 0)]),
            payers: BTreeSet::from(["a".to_owned(), "b".to_owned(), "c".to_owned()]),
            new_payers: BTreeSet::from(["a".to_owned(), "b".to_owned()]),
            revenue: BTreeMap::from([("usd".to_owned(), 14_900), ("jpy".to_owned(), 500)]),
            new_revenue: BTreeMap::from([("usd".to_owned(), 12_000)]),
        };
        // A range of 365.25 / 12 days: one month.
        let row = campaign_row(("google".into(), "cpc".into(), "spring".into()), acc, 30);
        assert_eq!((row.customers, row.new_customers), (3, 2));
        assert_eq!(
            row.cac,
            vec![
                Amount {
                    currency: "eur".into(),
                    amount: 0.0,
                    formatted: "0.00".into()
                },
                Amount {
                    currency: "usd".into(),
                    amount: 15_000.0,
                    formatted: "150.00".into()
                },
            ]
        );
        assert_eq!(
            row.roas,
            vec![
                Roas {
                    currency: "eur".into(),
                    roas: None
                },
                Roas {
                    currency: "usd".into(),
                    roas: Some(14_900.0 / 30_000.0)
                },
            ]
        );
        // CAC 15000 usd; new customers bring 12000 / 2 = 6000 a month over 30 of 30.44 days
        // (6087.5 a month) → 2.46 months. No eur revenue: no payback.
        let usd = row.payback.iter().find(|p| p.currency == "usd").unwrap();
        let expected = 15_000.0 / (6000.0 / (30.0 / (365.25 / 12.0)));
        assert!((usd.months.unwrap() - expected).abs() < 1e-9, "{usd:?}");
        assert_eq!(
            row.payback
                .iter()
                .find(|p| p.currency == "eur")
                .unwrap()
                .months,
            None
        );
        let none = campaign_row(Default::default(), Acc::default(), 30);
        assert!(none.cac.is_empty() && none.roas.is_empty() && none.payback.is_empty());
    }
}

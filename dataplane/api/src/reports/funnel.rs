//! `GET /api/v1/funnel?steps=page:/pricing,event:signup,paid`: how many people reached each
//! step of a funnel, in order, within the range, by first-touch dimension; step conversion;
//! and the net revenue of those who finished.
//!
//! A person is a user when identified (all their visitors together), else a visitor. Page and
//! event steps are read from ClickHouse, `paid` from the payments of the range (PostgreSQL,
//! the same payers as the revenue reports). A person reaches step k when steps 1…k happened in
//! that order (each at or after the previous one); the earliest possible match is taken, which
//! finds an ordered match whenever one exists.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::{
    extract::{RawQuery, State},
    Json,
};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zori_core::{currency::format_minor, touch::Dimension};

use super::{
    filters::Filters,
    models::Credited,
    revenue::{dimension_sql, livemode, Group, RESOLVED_PAYMENTS},
    DayRange, Params, ReportError, ReportsState,
};
use crate::ch::datetime_secs;

/// Most steps a funnel may have.
pub const MAX_STEPS: usize = 10;
/// Longest page path or event name in a step, in bytes.
const MAX_STEP_BYTES: usize = 512;
/// Label of people whose first touch is not known (yet).
const UNKNOWN: &str = "(unknown)";

/// One step of a funnel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// A `page_view` of this exact path.
    Page(String),
    /// An event of this name (custom or automatic).
    Event(String),
    /// A payment.
    Paid,
}

impl Step {
    fn label(&self) -> String {
        match self {
            Step::Page(path) => format!("page:{path}"),
            Step::Event(name) => format!("event:{name}"),
            Step::Paid => "paid".to_owned(),
        }
    }
}

/// Parses `steps`: comma-separated `page:<path>`, `event:<name>` and `paid` (last only).
pub fn parse_steps(raw: Option<&str>) -> Result<Vec<Step>, ReportError> {
    let bad = |message: String| ReportError::bad("steps", message);
    let raw = raw
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("required: e.g. page:/pricing,event:signup,paid".to_owned()))?;
    let mut steps = Vec::new();
    for part in raw.split(',').map(str::trim) {
        let step = if part == "paid" {
            Step::Paid
        } else if let Some(path) = part.strip_prefix("page:") {
            if !path.starts_with('/') {
                return Err(bad(format!("{part:?}: a page path starts with /")));
            }
            Step::Page(path.to_owned())
        } else if let Some(name) = part.strip_prefix("event:") {
            if name.is_empty() {
                return Err(bad(format!("{part:?}: the event name is empty")));
            }
            Step::Event(name.to_owned())
        } else {
            return Err(bad(format!(
                "{part:?} is not page:<path>, event:<name> or paid"
            )));
        };
        if part.len() > MAX_STEP_BYTES {
            return Err(bad(format!("a step is longer than {MAX_STEP_BYTES} bytes")));
        }
        if steps.contains(&Step::Paid) {
            return Err(bad("paid can only be the last step".to_owned()));
        }
        steps.push(step);
    }
    if steps.len() > MAX_STEPS {
        return Err(bad(format!("at most {MAX_STEPS} steps")));
    }
    if steps == [Step::Paid] {
        return Err(bad("paid needs a step before it".to_owned()));
    }
    Ok(steps)
}

/// How many steps, in order, `happened` (each step's times, ascending) reaches: the earliest
/// match of step 1, then the earliest match of step 2 at or after it, and so on.
pub fn reached(happened: &[&[i64]]) -> usize {
    let mut at = i64::MIN;
    for (k, times) in happened.iter().enumerate() {
        match times.iter().find(|t| **t >= at) {
            Some(t) => at = *t,
            None => return k,
        }
    }
    happened.len()
}

#[derive(Debug, Serialize)]
pub struct StepView {
    pub step: String,
    pub kind: &'static str,
    /// The page path or event name; `null` for `paid`.
    pub value: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct StepCount {
    /// People who reached this step (and every step before it, in order).
    pub visitors: u64,
    /// `visitors` over the previous step's (`null` for the first step, or when that is 0).
    pub conversion: Option<f64>,
    /// `visitors` over the first step's (`null` when that is 0).
    pub overall: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct FunnelRow {
    pub value: String,
    pub steps: Vec<StepCount>,
    /// People who reached the last step.
    pub finished: u64,
    /// Net revenue of the range's payments of those who finished, per currency.
    pub revenue: Vec<Credited>,
}

#[derive(Debug, Serialize)]
pub struct Funnel {
    pub livemode: Option<bool>,
    pub dimension: &'static str,
    pub from: String,
    pub to: String,
    pub steps: Vec<StepView>,
    pub rows: Vec<FunnelRow>,
    pub totals: FunnelRow,
}

/// Counts per step and revenue of finishers, for one row.
#[derive(Default)]
struct Tally {
    reached: Vec<u64>,
    revenue: BTreeMap<String, i64>,
}

impl Tally {
    fn add(&mut self, steps: usize, reached: usize, revenue: Option<&BTreeMap<String, i64>>) {
        if self.reached.is_empty() {
            self.reached = vec![0; steps];
        }
        for n in self.reached.iter_mut().take(reached) {
            *n += 1;
        }
        if reached == steps {
            for (currency, net) in revenue.into_iter().flatten() {
                *self.revenue.entry(currency.clone()).or_default() += net;
            }
        }
    }

    fn row(self, value: String, steps: usize) -> FunnelRow {
        let reached = if self.reached.is_empty() {
            vec![0; steps]
        } else {
            self.reached
        };
        let ratio = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
        let first = reached.first().copied().unwrap_or(0);
        FunnelRow {
            value,
            finished: reached.last().copied().unwrap_or(0),
            steps: reached
                .iter()
                .enumerate()
                .map(|(k, n)| StepCount {
                    visitors: *n,
                    conversion: if k == 0 {
                        None
                    } else {
                        ratio(*n, reached[k - 1])
                    },
                    overall: ratio(*n, first),
                })
                .collect(),
            revenue: self
                .revenue
                .into_iter()
                .map(|(currency, net)| Credited {
                    formatted: format_minor(net, &currency),
                    currency,
                    net,
                })
                .collect(),
        }
    }
}

/// One visitor's times per page / event step (seconds; a `0` means none). The first step keeps
/// only its earliest time and the last only its latest, which is all the in-order match needs
/// of them; steps between keep every time.
#[derive(Debug, Row, Deserialize)]
struct VisitorSteps {
    visitor_id: String,
    times: Vec<Vec<u32>>,
}

pub async fn funnel(
    State(state): State<ReportsState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Funnel>, ReportError> {
    let params = Params::parse(query)?;
    let steps = parse_steps(params.get("steps"))?;
    let range = params.range()?;
    let livemode = livemode(&state.pool, &params).await?;
    let filters = Filters::parse(&params)?;
    let dimension: Dimension = params
        .get("dimension")
        .unwrap_or("channel")
        .parse()
        .map_err(|e: String| ReportError::bad("dimension", e))?;

    let (events, payments) = tokio::try_join!(
        step_events(&state, &steps, &range),
        payments_by_payer(&state, &range, livemode),
    )?;
    let person = people(&state, &events, dimension, &filters).await?;
    let (rows, totals) = tally(&steps, &events, &person, &payments);
    Ok(Json(Funnel {
        livemode,
        dimension: dimension.as_str(),
        from: range.from.to_string(),
        to: range.to.to_string(),
        steps: steps.iter().map(StepView::of).collect(),
        rows,
        totals,
    }))
}

impl StepView {
    fn of(step: &Step) -> Self {
        let (kind, value) = match step {
            Step::Page(v) => ("page", Some(v.clone())),
            Step::Event(v) => ("event", Some(v.clone())),
            Step::Paid => ("paid", None),
        };
        StepView {
            step: step.label(),
            kind,
            value,
        }
    }
}

/// Per visitor with an event of the range matching a page or event step, that step's times
/// (ClickHouse, one row per visitor; redelivered copies of an event change no time).
async fn step_events(
    state: &ReportsState,
    steps: &[Step],
    range: &DayRange,
) -> Result<Vec<VisitorSteps>, ReportError> {
    let tracked: Vec<&Step> = steps.iter().filter(|s| **s != Step::Paid).collect();
    let last = tracked.len() - 1;
    let condition = |step: &Step| match step {
        Step::Page(_) => "(name = 'page_view' AND page_path = ?)",
        _ => "name = ?",
    };
    let columns: Vec<String> = tracked
        .iter()
        .enumerate()
        .map(|(k, step)| {
            let c = condition(step);
            if k == 0 {
                format!("[minIf(toUInt32(occurred_at), {c})]")
            } else if k == last && steps.last() != Some(&Step::Paid) {
                format!("[maxIf(toUInt32(occurred_at), {c})]")
            } else {
                format!("groupUniqArrayIf(toUInt32(occurred_at), {c})")
            }
        })
        .collect();
    let any: Vec<&str> = tracked.iter().map(|s| condition(s)).collect();
    let mut query = state.events.client().query(&format!(
        "SELECT visitor_id, [{}] AS times
         FROM events
         WHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)
           AND ({})
         GROUP BY visitor_id",
        columns.join(", "),
        any.join(" OR ")
    ));
    let value = |step: &Step| match step {
        Step::Page(v) | Step::Event(v) => v.clone(),
        Step::Paid => String::new(),
    };
    for step in &tracked {
        query = query.bind(value(step));
    }
    query = query
        .bind(datetime_secs(range.start()))
        .bind(datetime_secs(range.end_exclusive()));
    for step in &tracked {
        query = query.bind(value(step));
    }
    Ok(state.events.fetch_all("funnel steps", query).await?)
}

/// Visitor id → (person key, row value) for the visitors of `events` whose first touch passes
/// `filters`: the person is `u:<user id>` when identified (valued by the user's earliest first
/// touch), else `v:<visitor id>`, the payer keys of the revenue reports.
async fn people(
    state: &ReportsState,
    events: &[VisitorSteps],
    dimension: Dimension,
    filters: &Filters,
) -> Result<HashMap<String, (String, String)>, ReportError> {
    let visitor_ids: Vec<&str> = events
        .iter()
        .map(|e| e.visitor_id.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (conditions, binds) = filters.pg("v", 2);
    let dim = dimension_sql(Group::Touch(dimension));
    let sql = format!(
        "SELECT x.visitor_id, i.user_id, {dim} AS value
         FROM unnest($1::text[]) AS x(visitor_id)
         LEFT JOIN identities i ON i.visitor_id = x.visitor_id
         LEFT JOIN LATERAL (
             SELECT v2.visitor_id
               FROM identities i2 JOIN visitors v2 ON v2.visitor_id = i2.visitor_id
              WHERE i2.user_id = i.user_id
              ORDER BY v2.first_seen_at, v2.ft_event_id
              LIMIT 1
         ) uft ON true
         LEFT JOIN visitors v ON v.visitor_id = COALESCE(uft.visitor_id, x.visitor_id)
         WHERE true{conditions}"
    );
    let mut q = sqlx::query_as(&sql).bind(&visitor_ids);
    for b in &binds {
        q = q.bind(b);
    }
    let rows: Vec<(String, Option<i64>, Option<String>)> = q
        .fetch_all(&state.pool)
        .await
        .map_err(ReportError::pg("funnel visitors"))?;
    Ok(rows
        .into_iter()
        .map(|(visitor, user, value)| {
            let key = match user {
                Some(user) => format!("u:{user}"),
                None => format!("v:{visitor}"),
            };
            (visitor, (key, value.unwrap_or_else(|| UNKNOWN.to_owned())))
        })
        .collect())
}

/// What a payer paid in the range: payment times and net revenue per currency.
#[derive(Default)]
struct Paid {
    at: Vec<i64>,
    net: BTreeMap<String, i64>,
}

async fn payments_by_payer(
    state: &ReportsState,
    range: &DayRange,
    livemode: Option<bool>,
) -> Result<HashMap<String, Paid>, ReportError> {
    let payments: Vec<(String, OffsetDateTime, String, i64)> = sqlx::query_as(&format!(
        "WITH {RESOLVED_PAYMENTS}
         SELECT payer, paid_at, currency,
                (amount - amount_refunded - amount_disputed)::int8
         FROM resolved"
    ))
    .bind(range.start())
    .bind(range.end_exclusive())
    .bind(livemode)
    .fetch_all(&state.pool)
    .await
    .map_err(ReportError::pg("funnel payments"))?;
    let mut by_payer: HashMap<String, Paid> = HashMap::new();
    for (payer, at, currency, net) in payments {
        let paid = by_payer.entry(payer).or_default();
        paid.at.push(at.unix_timestamp());
        *paid.net.entry(currency).or_default() += net;
    }
    Ok(by_payer)
}

/// The rows (sorted) and totals: each person's steps reached, in order.
fn tally(
    steps: &[Step],
    events: &[VisitorSteps],
    person: &HashMap<String, (String, String)>,
    payments: &HashMap<String, Paid>,
) -> (Vec<FunnelRow>, FunnelRow) {
    // The times each person (all their visitors) did each step.
    let mut happened: HashMap<&str, (&str, Vec<Vec<i64>>)> = HashMap::new();
    for e in events {
        let Some((key, value)) = person.get(&e.visitor_id) else {
            continue;
        };
        let (_, times) = happened
            .entry(key)
            .or_insert_with(|| (value, vec![Vec::new(); steps.len()]));
        for (k, at) in e.times.iter().enumerate() {
            times[k].extend(at.iter().filter(|t| **t > 0).map(|t| i64::from(*t)));
        }
    }
    let mut rows: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut totals = Tally::default();
    for (key, (value, mut times)) in happened {
        let paid = payments.get(key);
        if steps.last() == Some(&Step::Paid) {
            if let (Some(last), Some(paid)) = (times.last_mut(), paid) {
                last.clone_from(&paid.at);
            }
        }
        for t in &mut times {
            t.sort_unstable();
        }
        let slices: Vec<&[i64]> = times.iter().map(Vec::as_slice).collect();
        let n = reached(&slices);
        if n == 0 {
            continue;
        }
        let net = paid.map(|p| &p.net);
        rows.entry(value).or_default().add(steps.len(), n, net);
        totals.add(steps.len(), n, net);
    }
    let mut rows: Vec<FunnelRow> = rows
        .into_iter()
        .map(|(value, tally)| tally.row(value.to_owned(), steps.len()))
        .collect();
    rows.sort_by(|a, b| {
        b.steps[0]
            .visitors
            .cmp(&a.steps[0].visitors)
            .then(b.finished.cmp(&a.finished))
            .then(a.value.cmp(&b.value))
    });
    (rows, totals.row("all".to_owned(), steps.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_strictly() {
        assert_eq!(
            parse_steps(Some("page:/pricing, event:signup,paid")).unwrap(),
            vec![
                Step::Page("/pricing".to_owned()),
                Step::Event("signup".to_owned()),
                Step::Paid
            ]
        );
        for bad in [
            None,
            Some(""),
            Some("pricing"),
            Some("page:pricing"),
            Some("event:"),
            Some("paid"),
            Some("paid,page:/"),
            Some("page:/,paid,event:x"),
            Some("page:/a,page:/b,page:/c,page:/d,page:/e,page:/f,page:/g,page:/h,page:/i,page:/j,page:/k"),
        ] {
            match parse_steps(bad) {
                Err(ReportError::BadParam { param, .. }) => assert_eq!(param, "steps", "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn steps_count_only_in_order() {
        let cases: &[(&[&[i64]], usize)] = &[
            (&[&[1], &[2], &[3]], 3),
            // Signed up before seeing pricing, never after: reaches step 1 only.
            (&[&[5], &[2], &[9]], 1),
            // The earliest pricing view lets a later signup count.
            (&[&[1, 8], &[4], &[6]], 3),
            // Same second counts as in order.
            (&[&[4], &[4], &[4]], 3),
            (&[&[], &[1], &[2]], 0),
            (&[&[1], &[2], &[]], 2),
        ];
        for (happened, expected) in cases {
            assert_eq!(reached(happened), *expected, "{happened:?}");
        }
    }

    #[test]
    fn rows_convert_step_by_step() {
        let mut t = Tally::default();
        let usd: BTreeMap<String, i64> = [("usd".to_owned(), 900)].into();
        t.add(3, 3, Some(&usd));
        t.add(3, 2, Some(&usd));
        t.add(3, 1, None);
        t.add(3, 1, None);
        let row = t.row("x".to_owned(), 3);
        let counts: Vec<u64> = row.steps.iter().map(|s| s.visitors).collect();
        assert_eq!(counts, vec![4, 2, 1]);
        assert_eq!(row.steps[0].conversion, None);
        assert_eq!(row.steps[1].conversion, Some(0.5));
        assert_eq!(row.steps[2].overall, Some(0.25));
        assert_eq!(row.finished, 1);
        assert_eq!(row.revenue.len(), 1);
        assert_eq!(
            (row.revenue[0].net, row.revenue[0].formatted.as_str()),
            (900, "9.00")
        );
    }
}

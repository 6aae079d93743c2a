//! Report filters: `channel`, `source`, `country`, `device`, applied to every report.
//!
//! - `channel` and `source` match the **first touch**, the same values attribution groups by:
//!   in PostgreSQL the visitor's `ft_channel` / `ft_source`; in ClickHouse the channel / source
//!   of the visitor's earliest event (same rule: earliest `occurred_at`, ties by event id).
//! - `country` and `device` match the visitor's **latest** country / device (PostgreSQL
//!   `visitors`) in visitor and revenue reports, and the **event's** country / device in the
//!   ClickHouse reports (pages, events, property values, live).
//!
//! Payments are filtered by the visitor they are credited to, so with any filter set,
//! unattributed payments (credited to nobody) drop out.

use clickhouse::query::Query;
use zori_core::channel::Channel;

use super::{Params, ReportError};

/// Label of a missing country.
pub const UNKNOWN_COUNTRY: &str = "(unknown)";
/// Device types as stored (`zori_core::event::DeviceType::as_str`).
pub const DEVICES: &[&str] = &["desktop", "mobile", "tablet", "bot", "unknown"];

const MAX_VALUE_BYTES: usize = 512;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub channel: Option<String>,
    pub source: Option<String>,
    pub country: Option<String>,
    pub device: Option<String>,
}

fn value(params: &Params, param: &str) -> Result<Option<String>, ReportError> {
    match params.get(param) {
        None | Some("") => Ok(None),
        Some(v) if v.len() > MAX_VALUE_BYTES => Err(ReportError::bad(
            param,
            format!("longer than {MAX_VALUE_BYTES} bytes"),
        )),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

impl Filters {
    /// Reads the filter parameters; an empty value means "no filter".
    pub fn parse(params: &Params) -> Result<Self, ReportError> {
        let channel = value(params, "channel")?;
        if let Some(c) = &channel {
            c.parse::<Channel>().map_err(|_| {
                let all: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
                ReportError::bad(
                    "channel",
                    format!("unknown channel {c:?}; expected one of {}", all.join(", ")),
                )
            })?;
        }
        let device = value(params, "device")?;
        if let Some(d) = &device {
            if !DEVICES.contains(&d.as_str()) {
                return Err(ReportError::bad(
                    "device",
                    format!(
                        "unknown device {d:?}; expected one of {}",
                        DEVICES.join(", ")
                    ),
                ));
            }
        }
        Ok(Filters {
            channel,
            source: value(params, "source")?,
            country: value(params, "country")?,
            device,
        })
    }

    pub fn is_empty(&self) -> bool {
        self == &Filters::default()
    }

    /// Conditions on the PostgreSQL `visitors` row `alias` (each starting with ` AND `), with
    /// placeholders numbered from `$first`, and the values to bind to them, in order.
    pub fn pg(&self, alias: &str, first: usize) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut binds = Vec::new();
        let columns = [
            (&self.channel, format!("{alias}.ft_channel")),
            (&self.source, format!("{alias}.ft_source")),
            (
                &self.country,
                format!("COALESCE(NULLIF({alias}.country, ''), '{UNKNOWN_COUNTRY}')"),
            ),
            (&self.device, format!("COALESCE({alias}.device, 'unknown')")),
        ];
        for (value, column) in columns {
            if let Some(v) = value {
                sql.push_str(&format!(" AND {column} = ${}", first + binds.len()));
                binds.push(v.clone());
            }
        }
        (sql, binds)
    }

    /// Conditions on ClickHouse `events` (each starting with ` AND `), with `?` placeholders;
    /// bind them with [`Filters::bind_ch`] at their place in the query.
    pub fn ch_sql(&self) -> String {
        let mut sql = String::new();
        if self.country.is_some() {
            sql.push_str(" AND country = ?");
        }
        if self.device.is_some() {
            sql.push_str(" AND device = ?");
        }
        let mut first_touch = Vec::new();
        if self.channel.is_some() {
            first_touch.push(format!("argMin(channel, {FIRST_KEY}) = ?"));
        }
        if self.source.is_some() {
            first_touch.push(format!("argMin({CH_SOURCE}, {FIRST_KEY}) = ?"));
        }
        if !first_touch.is_empty() {
            sql.push_str(&format!(
                " AND visitor_id IN (SELECT visitor_id FROM events GROUP BY visitor_id HAVING {})",
                first_touch.join(" AND ")
            ));
        }
        sql
    }

    /// Binds the values of [`Filters::ch_sql`], in its order.
    pub fn bind_ch(&self, mut query: Query) -> Query {
        if let Some(country) = &self.country {
            let stored = if country == UNKNOWN_COUNTRY {
                ""
            } else {
                country
            };
            query = query.bind(stored);
        }
        if let Some(device) = &self.device {
            query = query.bind(device.as_str());
        }
        if let Some(channel) = &self.channel {
            query = query.bind(channel.as_str());
        }
        if let Some(source) = &self.source {
            query = query.bind(source.as_str());
        }
        query
    }
}

/// Orders a visitor's events the way first touch does: time, then event id. `occurred_ms` has
/// 13 digits for every date from 2001 to 2286, so the text compares like the number.
const FIRST_KEY: &str = "concat(toString(occurred_ms), event_id)";

/// The source of an event as [`zori_core::touch::Touch::from_event`] computes it: UTM source,
/// else referrer host, else `(direct)`.
const CH_SOURCE: &str = concat!(
    "if(utm_source != '', utm_source, if(referrer_host != '', referrer_host, '",
    "(direct)",
    "'))"
);

#[cfg(test)]
mod tests {
    use zori_core::touch::DIRECT;

    use super::*;

    fn parse(q: &str) -> Result<Filters, ReportError> {
        Filters::parse(&Params::parse(Some(q.to_owned()))?)
    }

    #[test]
    fn parses_and_validates() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("channel=&source=").unwrap().is_empty());
        let f = parse("channel=paid_social&source=twitter&country=DE&device=mobile").unwrap();
        assert_eq!(f.channel.as_deref(), Some("paid_social"));
        assert_eq!(f.source.as_deref(), Some("twitter"));
        for (q, param) in [
            ("channel=tv", "channel"),
            ("device=fridge", "device"),
            (&*format!("source={}", "x".repeat(600)), "source"),
        ] {
            match parse(q).unwrap_err() {
                ReportError::BadParam { param: p, .. } => assert_eq!(p, param),
                other => panic!("{q}: {other}"),
            }
        }
    }

    #[test]
    fn postgres_conditions_number_their_placeholders() {
        let f = parse("channel=direct&device=mobile").unwrap();
        let (sql, binds) = f.pg("v", 4);
        assert_eq!(
            sql,
            " AND v.ft_channel = $4 AND COALESCE(v.device, 'unknown') = $5"
        );
        assert_eq!(binds, vec!["direct", "mobile"]);
        assert_eq!(Filters::default().pg("v", 1), (String::new(), vec![]));
    }

    #[test]
    fn clickhouse_conditions() {
        let f = parse("source=twitter&country=(unknown)").unwrap();
        let sql = f.ch_sql();
        assert!(
            sql.starts_with(" AND country = ? AND visitor_id IN"),
            "{sql}"
        );
        assert!(sql.contains(DIRECT), "{sql}");
        assert_eq!(sql.matches('?').count(), 2);
        assert_eq!(Filters::default().ch_sql(), "");
    }
}

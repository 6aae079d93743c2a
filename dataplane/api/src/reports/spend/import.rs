//! The spend import format (`PUT /api/v1/spend`), JSON or CSV, read strictly: every error names
//! the row (and field) at fault.
//!
//! One row: `day` (`YYYY-MM-DD`), `source` (required), `medium`, `campaign` (optional; empty
//! means not set), `currency` (ISO 4217), `amount` (whole minor units, ≥ 0). The key is day ×
//! source × medium × campaign; a key may appear once per import.

use std::collections::HashMap;

use serde::Deserialize;
use time::{format_description::BorrowedFormatItem, macros::format_description, Date};
use zori_core::currency::normalize_code;

/// Most rows one import takes.
pub const MAX_ROWS: usize = 100_000;
/// Longest source, medium or campaign, in bytes.
pub const MAX_VALUE_BYTES: usize = 512;
/// The CSV header, in this order.
pub const CSV_COLUMNS: [&str; 6] = ["day", "source", "medium", "campaign", "currency", "amount"];

const DATE: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendRow {
    pub day: Date,
    pub source: String,
    pub medium: String,
    pub campaign: String,
    pub currency: String,
    pub amount: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("the body is not a JSON array of spend rows: {0}")]
    Json(String),
    #[error("line {line}: {message}")]
    Csv { line: usize, message: String },
    #[error("row {row}: {field} {message}")]
    Field {
        row: usize,
        field: &'static str,
        message: String,
    },
    #[error("row {row} repeats the day, source, medium and campaign of row {first}")]
    Duplicate { row: usize, first: usize },
    #[error("no rows to import")]
    Empty,
    #[error("more than {MAX_ROWS} rows; split the import")]
    TooMany,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    day: String,
    source: String,
    #[serde(default)]
    medium: Option<String>,
    #[serde(default)]
    campaign: Option<String>,
    currency: String,
    amount: i64,
}

/// Reads a JSON array of rows.
pub fn from_json(body: &[u8]) -> Result<Vec<SpendRow>, ImportError> {
    let rows: Vec<JsonRow> =
        serde_json::from_slice(body).map_err(|e| ImportError::Json(e.to_string()))?;
    check_count(rows.len())?;
    let rows = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            row(
                i + 1,
                &r.day,
                &r.source,
                r.medium.as_deref().unwrap_or_default(),
                r.campaign.as_deref().unwrap_or_default(),
                &r.currency,
                Amount::Number(r.amount),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    no_duplicates(&rows)?;
    Ok(rows)
}

/// Reads CSV (RFC 4180: commas, double quotes, CRLF or LF) whose first line is the header
/// [`CSV_COLUMNS`] (any order; extra columns are an error).
pub fn from_csv(body: &str) -> Result<Vec<SpendRow>, ImportError> {
    let records = parse_csv(body)?;
    let mut records = records
        .into_iter()
        .filter(|(_, r)| !(r.len() == 1 && r[0].trim().is_empty()));
    let (header_line, header) = records.next().ok_or(ImportError::Empty)?;
    let mut index = [usize::MAX; 6];
    for (i, name) in header.iter().enumerate() {
        let name = name
            .trim()
            .trim_start_matches('\u{feff}')
            .to_ascii_lowercase();
        let Some(col) = CSV_COLUMNS.iter().position(|c| *c == name) else {
            return Err(ImportError::Csv {
                line: header_line,
                message: format!(
                    "unknown column {name:?}; the header is {}",
                    CSV_COLUMNS.join(",")
                ),
            });
        };
        index[col] = i;
    }
    for (col, at) in CSV_COLUMNS.iter().zip(index) {
        if at == usize::MAX && !matches!(*col, "medium" | "campaign") {
            return Err(ImportError::Csv {
                line: header_line,
                message: format!("missing column {col}"),
            });
        }
    }
    let records: Vec<(usize, Vec<String>)> = records.collect();
    check_count(records.len())?;
    let mut rows = Vec::with_capacity(records.len());
    for (n, (line, fields)) in records.into_iter().enumerate() {
        if fields.len() != header.len() {
            return Err(ImportError::Csv {
                line,
                message: format!(
                    "{} fields where the header has {}",
                    fields.len(),
                    header.len()
                ),
            });
        }
        let get = |col: usize| {
            fields
                .get(index[col])
                .map(String::as_str)
                .unwrap_or_default()
        };
        rows.push(row(
            n + 1,
            get(0),
            get(1),
            get(2),
            get(3),
            get(4),
            Amount::Text(get(5)),
        )?);
    }
    no_duplicates(&rows)?;
    Ok(rows)
}

fn check_count(n: usize) -> Result<(), ImportError> {
    match n {
        0 => Err(ImportError::Empty),
        n if n > MAX_ROWS => Err(ImportError::TooMany),
        _ => Ok(()),
    }
}

enum Amount<'a> {
    Number(i64),
    Text(&'a str),
}

fn row(
    n: usize,
    day: &str,
    source: &str,
    medium: &str,
    campaign: &str,
    currency: &str,
    amount: Amount<'_>,
) -> Result<SpendRow, ImportError> {
    let field = |field: &'static str, message: String| ImportError::Field {
        row: n,
        field,
        message,
    };
    let day = Date::parse(day.trim(), DATE).map_err(|_| {
        field(
            "day",
            format!("{day:?} is not a date in the form YYYY-MM-DD"),
        )
    })?;
    let text = |name: &'static str, value: &str, required: bool| {
        let value = value.trim();
        if required && value.is_empty() {
            return Err(field(name, "must not be empty".to_owned()));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(field(
                name,
                format!("is longer than {MAX_VALUE_BYTES} bytes"),
            ));
        }
        Ok(value.to_owned())
    };
    let currency = normalize_code(currency).ok_or_else(|| {
        field(
            "currency",
            format!("{currency:?} is not a three-letter currency code"),
        )
    })?;
    let amount = match amount {
        Amount::Number(a) => a,
        Amount::Text(s) => s.trim().parse::<i64>().map_err(|_| {
            field(
                "amount",
                format!("{s:?} is not a whole number of minor units (e.g. 1250 for 12.50)"),
            )
        })?,
    };
    if amount < 0 {
        return Err(field("amount", "must not be negative".to_owned()));
    }
    Ok(SpendRow {
        day,
        source: text("source", source, true)?,
        medium: text("medium", medium, false)?,
        campaign: text("campaign", campaign, false)?,
        currency,
        amount,
    })
}

fn no_duplicates(rows: &[SpendRow]) -> Result<(), ImportError> {
    let mut seen: HashMap<(Date, &str, &str, &str), usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let key = (
            r.day,
            r.source.as_str(),
            r.medium.as_str(),
            r.campaign.as_str(),
        );
        if let Some(first) = seen.insert(key, i + 1) {
            return Err(ImportError::Duplicate { row: i + 1, first });
        }
    }
    Ok(())
}

/// Records with the line each starts on. Quoted fields may hold commas, quotes (`""`) and
/// line breaks.
fn parse_csv(body: &str) -> Result<Vec<(usize, Vec<String>)>, ImportError> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start = 1;
    let mut quoted = false;
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => fields.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                records.push((start, std::mem::take(&mut fields)));
                line += 1;
                start = line;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(ImportError::Csv {
            line: start,
            message: "a quoted field is not closed".to_owned(),
        });
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push((start, fields));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    fn spend(
        day: Date,
        source: &str,
        medium: &str,
        campaign: &str,
        currency: &str,
        amount: i64,
    ) -> SpendRow {
        SpendRow {
            day,
            source: source.to_owned(),
            medium: medium.to_owned(),
            campaign: campaign.to_owned(),
            currency: currency.to_owned(),
            amount,
        }
    }

    #[test]
    fn reads_csv_and_json_alike() {
        let csv = "\u{feff}day,source,medium,campaign,currency,amount\r\n\
                   2025-03-01,google,cpc,spring,USD,12500\r\n\
                   2025-03-01,facebook,paid_social,\"launch, v2\",eur,0\r\n\
                   2025-03-02,newsletter-partner,,,jpy,5000\n";
        let expected = vec![
            spend(
                date!(2025 - 03 - 01),
                "google",
                "cpc",
                "spring",
                "usd",
                12_500,
            ),
            spend(
                date!(2025 - 03 - 01),
                "facebook",
                "paid_social",
                "launch, v2",
                "eur",
                0,
            ),
            spend(
                date!(2025 - 03 - 02),
                "newsletter-partner",
                "",
                "",
                "jpy",
                5000,
            ),
        ];
        assert_eq!(from_csv(csv).unwrap(), expected);
        let json = r#"[
            {"day": "2025-03-01", "source": "google", "medium": "cpc", "campaign": "spring", "currency": "USD", "amount": 12500},
            {"day": "2025-03-01", "source": "facebook", "medium": "paid_social", "campaign": "launch, v2", "currency": "eur", "amount": 0},
            {"day": "2025-03-02", "source": "newsletter-partner", "currency": "jpy", "amount": 5000}
        ]"#;
        assert_eq!(from_json(json.as_bytes()).unwrap(), expected);
        // Columns in another order, medium and campaign absent.
        let csv = "amount,currency,source,day\n700,usd,bing,2025-03-03\n";
        assert_eq!(
            from_csv(csv).unwrap(),
            vec![spend(date!(2025 - 03 - 03), "bing", "", "", "usd", 700)]
        );
    }

    #[test]
    fn errors_name_the_row_and_field() {
        let header = "day,source,medium,campaign,currency,amount\n";
        let cases: &[(&str, &str)] = &[
            (
                "2025-02-30,google,cpc,x,usd,1\n",
                "row 1: day \"2025-02-30\" is not a date",
            ),
            (
                "2025-03-01,,cpc,x,usd,1\n",
                "row 1: source must not be empty",
            ),
            ("2025-03-01,google,cpc,x,dollars,1\n", "row 1: currency"),
            (
                "2025-03-01,google,cpc,x,usd,12.50\n",
                "row 1: amount \"12.50\" is not a whole number",
            ),
            (
                "2025-03-01,google,cpc,x,usd,-1\n",
                "row 1: amount must not be negative",
            ),
            (
                "2025-03-01,google,cpc,x,usd\n",
                "line 2: 5 fields where the header has 6",
            ),
            (
                "2025-03-01,google,cpc,x,usd,1\n2025-03-01,google,cpc,x,eur,2\n",
                "row 2 repeats the day, source, medium and campaign of row 1",
            ),
            ("2025-03-01,google,\"cpc,x,usd,1\n", "not closed"),
        ];
        for (body, expected) in cases {
            let err = from_csv(&format!("{header}{body}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{body:?}: {err}");
        }
        assert_eq!(from_csv(header), Err(ImportError::Empty));
        assert!(from_csv("day,source,cost\n")
            .unwrap_err()
            .to_string()
            .contains("unknown column \"cost\""));
        assert!(from_csv("day,source,amount\n")
            .unwrap_err()
            .to_string()
            .contains("missing column currency"));
        let err =
            from_json(br#"[{"day": "2025-03-01", "source": "g", "currency": "usd", "cost": 1}]"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown field `cost`"), "{err}");
        assert_eq!(from_json(b"[]"), Err(ImportError::Empty));
    }
}

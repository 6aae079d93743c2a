//! Client timestamps: parsed strictly, trusted only within a window around receive time
//! (zori-spec §9.28: a wrong client clock must not rewrite a first touch).

use std::time::Duration;

use time::{format_description::well_known::Rfc3339, OffsetDateTime, UtcOffset};

/// Parses an RFC 3339 / ISO-8601 timestamp with `Z` or an explicit offset, with or without
/// fractional seconds (`2025-11-02T10:00:00.123Z`, `2025-11-02 10:00:00+02:00`). Timestamps
/// without an offset are rejected: their time zone is unknown.
pub fn parse_client_timestamp(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let parsed = OffsetDateTime::parse(s, &Rfc3339).ok().or_else(|| {
        // RFC 3339 allows a space instead of `T`; `time` does not.
        let (date, rest) = s.split_at_checked(10)?;
        let rest = rest.strip_prefix(' ')?;
        OffsetDateTime::parse(&format!("{date}T{rest}"), &Rfc3339).ok()
    })?;
    Some(parsed.to_offset(UtcOffset::UTC))
}

/// The time an event is recorded at: the client's time when it lies within
/// `[received - max_past, received + max_future]`, else (or when missing) `received`.
/// Always in UTC.
pub fn clamp(
    client: Option<OffsetDateTime>,
    received: OffsetDateTime,
    max_past: Duration,
    max_future: Duration,
) -> OffsetDateTime {
    let received = received.to_offset(UtcOffset::UTC);
    let Some(client) = client else {
        return received;
    };
    let earliest = received.checked_sub(to_time(max_past));
    let latest = received.checked_add(to_time(max_future));
    let too_early = earliest.is_some_and(|earliest| client < earliest);
    let too_late = latest.is_some_and(|latest| client > latest);
    if too_early || too_late {
        received
    } else {
        client.to_offset(UtcOffset::UTC)
    }
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn parses_table() {
        let cases: &[(&str, Option<OffsetDateTime>)] = &[
            (
                "2025-11-02T10:00:00Z",
                Some(datetime!(2025-11-02 10:00:00 UTC)),
            ),
            (
                "2025-11-02T10:00:00.123Z",
                Some(datetime!(2025-11-02 10:00:00.123 UTC)),
            ),
            (
                "  2025-11-02T10:00:00.123456Z ",
                Some(datetime!(2025-11-02 10:00:00.123456 UTC)),
            ),
            (
                "2025-11-02T12:00:00+02:00",
                Some(datetime!(2025-11-02 10:00:00 UTC)),
            ),
            (
                "2025-11-02T05:30:00.5-04:30",
                Some(datetime!(2025-11-02 10:00:00.5 UTC)),
            ),
            (
                "2025-11-02t10:00:00z",
                Some(datetime!(2025-11-02 10:00:00 UTC)),
            ),
            (
                "2025-11-02 10:00:00Z",
                Some(datetime!(2025-11-02 10:00:00 UTC)),
            ),
            ("2025-11-02T10:00:00", None),
            ("2025-11-02", None),
            ("1730541600", None),
            ("yesterday", None),
            ("", None),
            ("2025-13-02T10:00:00Z", None),
            ("2025-11-02T10:00:00Z trailing", None),
            ("日本語日本語日本語日本", None),
        ];
        for (input, expected) in cases {
            let got = parse_client_timestamp(input);
            assert_eq!(got, *expected, "{input:?}");
            if let Some(got) = got {
                assert_eq!(got.offset(), UtcOffset::UTC);
            }
        }
    }

    #[test]
    fn clamps_table() {
        let received = datetime!(2025-11-02 10:00:00 UTC);
        let past = Duration::from_secs(24 * 3600);
        let future = Duration::from_secs(60);
        let cases: &[(Option<OffsetDateTime>, OffsetDateTime)] = &[
            (None, received),
            (Some(received), received),
            (
                Some(datetime!(2025-11-02 09:59:00 UTC)),
                datetime!(2025-11-02 09:59:00 UTC),
            ),
            (
                Some(datetime!(2025-11-01 10:00:00 UTC)),
                datetime!(2025-11-01 10:00:00 UTC),
            ),
            (Some(datetime!(2025-11-01 09:59:59 UTC)), received),
            (Some(datetime!(2020-01-01 00:00:00 UTC)), received),
            (
                Some(datetime!(2025-11-02 10:01:00 UTC)),
                datetime!(2025-11-02 10:01:00 UTC),
            ),
            (Some(datetime!(2025-11-02 10:01:01 UTC)), received),
            (Some(datetime!(2099-01-01 00:00:00 UTC)), received),
            (
                Some(datetime!(2025-11-02 11:30:00 +02:00)),
                datetime!(2025-11-02 09:30:00 UTC),
            ),
        ];
        for (client, expected) in cases {
            let got = clamp(*client, received, past, future);
            assert_eq!(got, *expected, "{client:?}");
            assert_eq!(got.offset(), UtcOffset::UTC);
        }
    }

    #[test]
    fn clamp_handles_huge_windows() {
        let received = datetime!(2025-11-02 10:00:00 UTC);
        let client = datetime!(2000-01-01 00:00:00 UTC);
        let got = clamp(Some(client), received, Duration::MAX, Duration::MAX);
        assert_eq!(got, client);
        let got = clamp(Some(client), received, Duration::ZERO, Duration::ZERO);
        assert_eq!(got, received);
    }
}

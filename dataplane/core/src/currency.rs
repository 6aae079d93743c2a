//! ISO 4217 currencies as Stripe counts them: amounts are integers in minor units, whose
//! exponent depends on the currency (zero-decimal, two-decimal or three-decimal).

/// Currencies Stripe treats as zero-decimal (amount 500 JPY means ¥500).
pub const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Currencies Stripe treats as three-decimal (amount 5000 KWD means 5.000 KWD).
pub const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

/// Three ASCII letters, lower-cased (surrounding whitespace ignored).
pub fn normalize_code(s: &str) -> Option<String> {
    let s = s.trim();
    (s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic())).then(|| s.to_ascii_lowercase())
}

/// Number of decimal digits of a currency's minor unit (case-insensitive; 2 by default).
pub fn exponent(code: &str) -> u32 {
    let code = code.trim().to_ascii_lowercase();
    if ZERO_DECIMAL.contains(&code.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&code.as_str()) {
        3
    } else {
        2
    }
}

/// A minor-unit amount as a decimal string: `9900 usd` → `"99.00"`, `500 jpy` → `"500"`,
/// `-1234 kwd` → `"-1.234"`.
pub fn format_minor(amount: i64, code: &str) -> String {
    let exp = exponent(code);
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    if exp == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10u64.pow(exp);
    let width = exp as usize;
    format!("{sign}{}.{:0width$}", abs / scale, abs % scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents() {
        let cases: &[(&str, u32)] = &[
            ("usd", 2),
            ("EUR", 2),
            ("jpy", 0),
            ("JPY", 0),
            ("krw", 0),
            ("xof", 0),
            ("kwd", 3),
            ("BHD", 3),
            ("tnd", 3),
            ("zzz", 2),
            ("", 2),
        ];
        for (code, expected) in cases {
            assert_eq!(exponent(code), *expected, "{code}");
        }
    }

    #[test]
    fn formats_table() {
        let cases: &[(i64, &str, &str)] = &[
            (9900, "usd", "99.00"),
            (9999, "eur", "99.99"),
            (5, "usd", "0.05"),
            (0, "usd", "0.00"),
            (-250, "gbp", "-2.50"),
            (-5, "usd", "-0.05"),
            (500, "jpy", "500"),
            (-500, "JPY", "-500"),
            (0, "krw", "0"),
            (1234, "kwd", "1.234"),
            (5, "bhd", "0.005"),
            (-1234, "kwd", "-1.234"),
            (i64::MIN, "jpy", "-9223372036854775808"),
            (i64::MIN, "usd", "-92233720368547758.08"),
            (i64::MAX, "usd", "92233720368547758.07"),
        ];
        for (amount, code, expected) in cases {
            assert_eq!(format_minor(*amount, code), *expected, "{amount} {code}");
        }
    }

    #[test]
    fn normalizes_codes() {
        let cases: &[(&str, Option<&str>)] = &[
            ("usd", Some("usd")),
            ("USD", Some("usd")),
            (" Eur ", Some("eur")),
            ("us", None),
            ("usdd", None),
            ("us1", None),
            ("", None),
            ("€ur", None),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_code(input).as_deref(), *expected, "{input:?}");
        }
    }
}

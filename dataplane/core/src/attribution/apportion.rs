//! Largest-remainder apportionment: splits an amount in minor units by integer weights so that
//! the parts sum to the amount exactly.

/// Splits `amount` by `weights`. Each part gets the floor of its exact quota
/// (`amount × weight / Σ weights`); the units left over go, one each, to the parts with the
/// largest remainders, ties to the earlier part. Negative amounts are split like their absolute
/// value and negated. All zero (or no) weights: `None`.
pub fn apportion(amount: i64, weights: &[u64]) -> Option<Vec<i64>> {
    let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let magnitude = u128::from(amount.unsigned_abs());
    let mut parts: Vec<u128> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        // magnitude < 2^64 and w < 2^64: the product fits in u128.
        let product = magnitude * u128::from(*w);
        parts.push(product / total);
        remainders.push((product % total, i));
    }
    let assigned: u128 = parts.iter().sum();
    let mut left = magnitude - assigned;
    // Largest remainder first; equal remainders: earlier part first.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (remainder, i) in remainders {
        if left == 0 || remainder == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    debug_assert_eq!(left, 0, "fewer leftover units than non-zero remainders");
    let sign = if amount < 0 { -1i128 } else { 1 };
    Some(
        parts
            .into_iter()
            // Each part ≤ |amount| ≤ 2^63, so the signed value fits in i64 (i64::MIN included).
            .map(|p| i64::try_from(sign * p as i128).unwrap_or(i64::MIN))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportions_table() {
        // (amount, weights, expected parts)
        type Case<'a> = (i64, &'a [u64], Option<&'a [i64]>);
        let cases: &[Case] = &[
            (10000, &[1, 1, 1], Some(&[3334, 3333, 3333])),
            (
                10000,
                &[1, 1, 1, 1, 1, 1],
                Some(&[1667, 1667, 1667, 1667, 1666, 1666]),
            ),
            (1, &[1, 1], Some(&[1, 0])),
            (0, &[1, 2], Some(&[0, 0])),
            (-10000, &[1, 1, 1], Some(&[-3334, -3333, -3333])),
            (100, &[40, 20, 40], Some(&[40, 20, 40])),
            // 39.6, 19.8, 39.6 → 39, 19, 39 + 2 left: .8 then the earlier .6.
            (99, &[40, 20, 40], Some(&[40, 20, 39])),
            // 7 × (1, 2, 4) / 7 = exact.
            (7, &[1, 2, 4], Some(&[1, 2, 4])),
            // 10 × (1, 2, 4) / 7 = 1.43, 2.86, 5.71 → 1, 2, 5 + 2 left: .86 then .71.
            (10, &[1, 2, 4], Some(&[1, 3, 6])),
            (5, &[0, 3, 0], Some(&[0, 5, 0])),
            (5, &[0, 0], None),
            (5, &[], None),
            (
                i64::MAX,
                &[u64::MAX, u64::MAX],
                Some(&[4611686018427387904, 4611686018427387903]),
            ),
            (i64::MIN, &[1], Some(&[i64::MIN])),
        ];
        for (amount, weights, expected) in cases {
            let got = apportion(*amount, weights);
            assert_eq!(got.as_deref(), *expected, "{amount} by {weights:?}");
            if let Some(parts) = got {
                assert_eq!(
                    parts.iter().map(|p| i128::from(*p)).sum::<i128>(),
                    i128::from(*amount)
                );
            }
        }
    }
}

//! Hand-computed journeys for every model, and the property that credits always sum to the
//! payment.

use std::collections::BTreeMap;

use proptest::prelude::*;
use time::macros::datetime;

use super::*;
use crate::channel::Channel::{Email, Referral};

/// Payments in these tests are made at noon on 31 March 2025.
const PAID_AT: OffsetDateTime = datetime!(2025-03-31 12:00 UTC);

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

fn settings() -> Settings {
    Settings {
        markov_minimum: MarkovMinimum {
            journeys: 1,
            converting: 1,
            non_converting: 1,
        },
        ..Settings::default()
    }
}

/// Fitted to: organic_search → paid_social converts, organic_search alone and paid_social
/// alone do not. start→organic 2/3, start→paid 1/3; organic→paid 1/2, organic→null 1/2;
/// paid→conversion 1/2, paid→null 1/2. P(conversion) = 1/3; without organic_search 1/6
/// (removal effect 1/2), without paid_social 0 (removal effect 1). Email, direct: 0.
fn fitted() -> Attribution {
    let mut a = Attribution::new(settings()).unwrap();
    let path = |states: &[&str], conversions, non_conversions| PathCount {
        path: states.iter().map(|s| (*s).to_owned()).collect(),
        conversions,
        non_conversions,
    };
    a.fit(&[
        path(&["organic_search", "paid_social"], 1, 0),
        path(&["organic_search"], 0, 1),
        path(&["paid_social"], 0, 1),
    ])
    .unwrap();
    a
}

struct Case {
    name: &'static str,
    touches: Vec<Touch>,
    amount: i64,
    /// Credit per touch, in the order of `touches`; `None`: unattributed.
    expected: Vec<(Model, Option<Vec<i64>>)>,
}

fn cases() -> Vec<Case> {
    use Channel::*;
    use Model::*;
    vec![
        Case {
            // In input order: email 24 Mar, referral 1 Dec 2024 (120 days before: outside the
            // lookback), organic search 3 Mar, direct at the payment, paid social 1 Apr (after
            // the payment), paid social 17 Mar. Counted, oldest first: organic 3 Mar (28 d),
            // paid social 17 Mar (14 d), email 24 Mar (7 d), direct 31 Mar (0 d).
            name: "four touches in the window, one too old, one after",
            touches: vec![
                touch(datetime!(2025-03-24 12:00 UTC), Email),
                touch(datetime!(2024-12-01 12:00 UTC), Referral),
                touch(datetime!(2025-03-03 12:00 UTC), OrganicSearch),
                touch(PAID_AT, Direct),
                touch(datetime!(2025-04-01 12:00 UTC), PaidSocial),
                touch(datetime!(2025-03-17 12:00 UTC), PaidSocial),
            ],
            amount: 10_000,
            expected: vec![
                (FirstTouch, Some(vec![0, 0, 10_000, 0, 0, 0])),
                // Latest non-direct: email on 24 Mar.
                (LastNonDirect, Some(vec![10_000, 0, 0, 0, 0, 0])),
                (Linear, Some(vec![2500, 0, 2500, 2500, 0, 2500])),
                // 40 / 10 / 10 / 40.
                (PositionBased, Some(vec![1000, 0, 4000, 4000, 0, 1000])),
                // Ages 28, 14, 7, 0 days at half-life 7: weights 1/16, 4/16, 8/16, 16/16 of
                // 29/16. Quotas 344.83, 1379.31, 2758.62, 5517.24: floors sum to 9998; the two
                // left go to .83 (organic) and .62 (email).
                (TimeDecay, Some(vec![2759, 0, 345, 5517, 0, 1379])),
                // Organic 1/2, paid social 1, email 0, direct 0: 3333.33 and 6666.67, the
                // unit left to paid social's .67.
                (DataDriven, Some(vec![0, 0, 3333, 0, 0, 6667])),
            ],
        },
        Case {
            // Organic 10 Mar, paid social 20 Mar, organic 30 Mar.
            name: "data-driven shares a state's effect among its touches",
            touches: vec![
                touch(datetime!(2025-03-10 12:00 UTC), OrganicSearch),
                touch(datetime!(2025-03-20 12:00 UTC), PaidSocial),
                touch(datetime!(2025-03-30 12:00 UTC), OrganicSearch),
            ],
            amount: 10_000,
            expected: vec![
                (FirstTouch, Some(vec![10_000, 0, 0])),
                (LastNonDirect, Some(vec![0, 0, 10_000])),
                // 3333.33 each: the unit left to the earliest.
                (Linear, Some(vec![3334, 3333, 3333])),
                (PositionBased, Some(vec![4000, 2000, 4000])),
                // Organic 1/2 shared by two touches (1/4 each), paid social 1: of 3/2,
                // 1666.67, 6666.67, 1666.67; two units left, equal remainders: earliest first.
                (DataDriven, Some(vec![1667, 6667, 1666])),
            ],
        },
        Case {
            name: "one touch takes everything",
            touches: vec![touch(datetime!(2025-03-30 09:30 UTC), Referral)],
            amount: 4999,
            // Data-driven too: referral has no removal effect in the fit, so the journey is
            // shared equally — all of it to the one touch.
            expected: Model::ALL
                .into_iter()
                .map(|m| (m, Some(vec![4999])))
                .collect(),
        },
        Case {
            // Direct 1 Mar, paid search 15 Mar; odd amount 999.
            name: "two touches: position-based splits 50/50",
            touches: vec![
                touch(datetime!(2025-03-01 12:00 UTC), Direct),
                touch(datetime!(2025-03-15 12:00 UTC), PaidSearch),
            ],
            amount: 999,
            expected: vec![
                (FirstTouch, Some(vec![999, 0])),
                (LastNonDirect, Some(vec![0, 999])),
                (Linear, Some(vec![500, 499])),
                (PositionBased, Some(vec![500, 499])),
                // Ages 30 d and 16 d: weights 2^(−14/7) = 1/4 and 1 → 199.8, 799.2; floors
                // 199 and 799, the unit left to the .8.
                (TimeDecay, Some(vec![200, 799])),
            ],
        },
        Case {
            // Five touches, 1–5 Mar: 40 % / 20 % over three / 40 % of 10001 = 4000.4,
            // 666.7 ×3, 4000.4 → floors 9998, three units to the .7s.
            name: "position-based with three middle touches",
            touches: (1..=5)
                .map(|d| touch(PAID_AT - Duration::days(30 - d), Referral))
                .collect(),
            amount: 10_001,
            expected: vec![
                (PositionBased, Some(vec![4000, 667, 667, 667, 4000])),
                (Linear, Some(vec![2001, 2000, 2000, 2000, 2000])),
            ],
        },
        Case {
            name: "every touch direct: last non-direct falls back to the last touch",
            touches: vec![
                touch(datetime!(2025-03-02 08:00 UTC), Direct),
                touch(datetime!(2025-03-29 08:00 UTC), Direct),
            ],
            amount: 1200,
            expected: vec![(LastNonDirect, Some(vec![0, 1200]))],
        },
        Case {
            // Exactly 90 days before counts; a second earlier does not; after does not.
            name: "lookback boundaries",
            touches: vec![
                touch(PAID_AT - Duration::days(90) - Duration::seconds(1), Email),
                touch(PAID_AT - Duration::days(90), PaidSearch),
                touch(PAID_AT + Duration::seconds(1), Email),
            ],
            amount: 700,
            expected: vec![
                (FirstTouch, Some(vec![0, 700, 0])),
                (Linear, Some(vec![0, 700, 0])),
            ],
        },
        Case {
            name: "no touch in the window: unattributed",
            touches: vec![
                touch(datetime!(2024-01-01 00:00 UTC), PaidSearch),
                touch(datetime!(2025-04-02 00:00 UTC), Email),
            ],
            amount: 5000,
            expected: Model::ALL.into_iter().map(|m| (m, None)).collect(),
        },
        Case {
            name: "no touch at all: unattributed",
            touches: vec![],
            amount: 5000,
            expected: Model::ALL.into_iter().map(|m| (m, None)).collect(),
        },
        Case {
            // A zero-decimal currency: 1 JPY cannot be split.
            name: "one minor unit over three touches",
            touches: vec![
                touch(datetime!(2025-03-29 12:00 UTC), Email),
                touch(datetime!(2025-03-30 12:00 UTC), Referral),
                touch(datetime!(2025-03-31 11:00 UTC), Email),
            ],
            amount: 1,
            expected: vec![
                (Linear, Some(vec![1, 0, 0])),
                (PositionBased, Some(vec![1, 0, 0])),
                // Weights 2^(−47/168), 2^(−23/168), 1: the newest has the largest quota.
                (TimeDecay, Some(vec![0, 0, 1])),
            ],
        },
        Case {
            // A fully refunded payment nets to zero.
            name: "zero net amount credits zero, still attributed",
            touches: vec![touch(datetime!(2025-03-29 12:00 UTC), Email)],
            amount: 0,
            expected: vec![(Linear, Some(vec![0]))],
        },
    ]
}

#[test]
fn models_credit_hand_computed_journeys() {
    let attribution = fitted();
    for case in cases() {
        let payment = Payment {
            paid_at: PAID_AT,
            amount: case.amount,
        };
        for (model, expected) in &case.expected {
            let got = attribution.credit(*model, &case.touches, &payment).unwrap();
            assert_eq!(&got, expected, "{}: {model}", case.name);
        }
    }
}

#[test]
fn half_life_is_a_setting() {
    // Ages 2 days and 0 at half-life 1 day: weights 1/4 and 1 of 10000 → 2000, 8000.
    let a = Attribution::new(Settings {
        half_life: Duration::days(1),
        ..Settings::default()
    })
    .unwrap();
    let touches = [
        touch(datetime!(2025-03-29 12:00 UTC), Email),
        touch(PAID_AT, Referral),
    ];
    let payment = Payment {
        paid_at: PAID_AT,
        amount: 10_000,
    };
    assert_eq!(
        a.credit(Model::TimeDecay, &touches, &payment).unwrap(),
        Some(vec![2000, 8000])
    );
}

#[test]
fn lookback_is_a_setting() {
    let a = Attribution::new(Settings {
        lookback: Duration::days(7),
        ..Settings::default()
    })
    .unwrap();
    let touches = [
        touch(datetime!(2025-03-20 12:00 UTC), Email),
        touch(datetime!(2025-03-25 12:00 UTC), Referral),
    ];
    let payment = Payment {
        paid_at: PAID_AT,
        amount: 100,
    };
    assert_eq!(
        a.credit(Model::FirstTouch, &touches, &payment).unwrap(),
        Some(vec![0, 100])
    );
}

#[test]
fn data_driven_needs_a_fit() {
    let a = Attribution::new(Settings::default()).unwrap();
    let touches = [touch(datetime!(2025-03-20 12:00 UTC), Email)];
    let payment = Payment {
        paid_at: PAID_AT,
        amount: 100,
    };
    assert_eq!(
        a.credit(Model::DataDriven, &touches, &payment),
        Err(AttributionError::NotFitted)
    );
    let mut a = a;
    let too_little = [PathCount {
        path: vec!["email".to_owned()],
        conversions: 19,
        non_conversions: 200,
    }];
    match a.fit(&too_little) {
        Err(AttributionError::NotEnoughData(e)) => {
            assert_eq!((e.converting, e.non_converting), (19, 200));
        }
        other => panic!("expected not enough data, got {other:?}"),
    }
}

#[test]
fn rejects_bad_settings_and_names() {
    for (settings, setting) in [
        (
            Settings {
                lookback: Duration::ZERO,
                ..Settings::default()
            },
            "lookback",
        ),
        (
            Settings {
                lookback: Duration::days(4000),
                ..Settings::default()
            },
            "lookback",
        ),
        (
            Settings {
                half_life: Duration::seconds(-1),
                ..Settings::default()
            },
            "half_life",
        ),
    ] {
        match Attribution::new(settings) {
            Err(AttributionError::InvalidSetting { setting: s, .. }) => assert_eq!(s, setting),
            other => panic!("{setting}: {other:?}"),
        }
    }
    for m in Model::ALL {
        assert_eq!(m.as_str().parse::<Model>(), Ok(m));
    }
    assert!("last_touch".parse::<Model>().is_err());
}

const CHANNELS: [Channel; 4] = [
    Channel::Direct,
    Channel::OrganicSearch,
    Channel::PaidSocial,
    Channel::Email,
];

fn journey() -> impl Strategy<Value = Vec<Touch>> {
    // Ages from 10 days after the payment to 200 days before, in minutes.
    prop::collection::vec((-14_400i64..288_000, 0usize..CHANNELS.len()), 0..12).prop_map(|v| {
        v.into_iter()
            .map(|(age, c)| touch(PAID_AT - Duration::minutes(age), CHANNELS[c]))
            .collect()
    })
}

proptest! {
    #[test]
    fn every_model_sums_exactly_to_the_payment(
        touches in journey(),
        others in prop::collection::vec(journey(), 1..6),
        amount in prop_oneof![any::<i64>(), -1_000_000i64..1_000_000],
        half_life_minutes in 1i64..100_000,
    ) {
        let mut a = Attribution::new(Settings {
            half_life: Duration::minutes(half_life_minutes),
            ..settings()
        })
        .unwrap();
        let mut paths = vec![PathCount {
            path: a.path(&touches, PAID_AT),
            conversions: 1,
            non_conversions: 0,
        }];
        paths.extend(others.iter().map(|t| PathCount {
            path: a.path(t, PAID_AT),
            conversions: 0,
            non_conversions: 1,
        }));
        let fitted = a.fit(&paths).is_ok();
        let payment = Payment { paid_at: PAID_AT, amount };
        let eligible = a.eligible(&touches, PAID_AT);
        for model in Model::ALL {
            if model == Model::DataDriven && !fitted {
                continue;
            }
            let credits = a.credit(model, &touches, &payment).unwrap();
            match credits {
                None => prop_assert!(eligible.is_empty(), "{model}"),
                Some(credits) => {
                    prop_assert_eq!(credits.len(), touches.len());
                    let sum: i128 = credits.iter().map(|c| i128::from(*c)).sum();
                    prop_assert_eq!(sum, i128::from(amount), "{}", model);
                    for (i, c) in credits.iter().enumerate() {
                        if !eligible.contains(&i) {
                            prop_assert_eq!(*c, 0, "{} credited touch {} outside the window", model, i);
                        }
                        // Every credit has the payment's sign.
                        prop_assert!(c.signum() * amount.signum() >= 0);
                    }
                }
            }
        }
    }
}

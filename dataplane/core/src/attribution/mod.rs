//! Attribution models: how a payment's revenue is shared among the touches that led to it.
//!
//! Every model reads the same touch history. Only touches inside the lookback window
//! (`paid_at − lookback ≤ occurred_at ≤ paid_at`) count; a payment with none is unattributed.
//! Credits are whole minor units, split by largest remainder ([`apportion`]) so that each
//! payment's credits sum to the payment exactly; equal remainders favour the earlier touch.
//!
//! | model | credit |
//! |---|---|
//! | `first_touch` (default) | all to the earliest touch |
//! | `last_non_direct` | all to the latest touch whose channel is not `direct`; to the latest touch when every one is direct |
//! | `linear` | equal shares |
//! | `position_based` | 40 % first, 40 % last, 20 % shared by the touches between (one touch: 100 %; two: 50/50) |
//! | `time_decay` | weight 2^(−age / half-life), age = time from touch to payment (half-life 7 days by default) |
//! | `data_driven` | by the Markov removal effect of each touch's dimension value ([`markov`]), shared equally among touches with the same value; needs [`MarkovMinimum`] data |

pub mod apportion;
pub mod markov;

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

pub use self::{
    apportion::apportion,
    markov::{MarkovMinimum, NotEnoughData, PathCount, RemovalEffects},
};
use crate::{
    channel::Channel,
    touch::{Dimension, Touch},
};

/// Default lookback window: touches older than this before a payment do not count.
pub const DEFAULT_LOOKBACK: Duration = Duration::days(90);
/// Default half-life of the time-decay model.
pub const DEFAULT_HALF_LIFE: Duration = Duration::days(7);
/// Longest lookback accepted.
pub const MAX_LOOKBACK: Duration = Duration::days(3660);

/// Fixed-point scale of the real-valued weights (time decay, data driven) before they are
/// apportioned exactly.
const WEIGHT_SCALE: f64 = (1u64 << 40) as f64;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    #[default]
    FirstTouch,
    LastNonDirect,
    Linear,
    PositionBased,
    TimeDecay,
    DataDriven,
}

impl Model {
    pub const ALL: [Model; 6] = [
        Model::FirstTouch,
        Model::LastNonDirect,
        Model::Linear,
        Model::PositionBased,
        Model::TimeDecay,
        Model::DataDriven,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Model::FirstTouch => "first_touch",
            Model::LastNonDirect => "last_non_direct",
            Model::Linear => "linear",
            Model::PositionBased => "position_based",
            Model::TimeDecay => "time_decay",
            Model::DataDriven => "data_driven",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Model {
    type Err = AttributionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Model::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| AttributionError::UnknownModel(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttributionError {
    #[error(
        "unknown attribution model {0:?}; expected one of first_touch, last_non_direct, linear, \
         position_based, time_decay, data_driven"
    )]
    UnknownModel(String),
    #[error("invalid attribution setting {setting}: {message}")]
    InvalidSetting {
        setting: &'static str,
        message: String,
    },
    #[error(transparent)]
    NotEnoughData(#[from] NotEnoughData),
    #[error("the data-driven model has not been fitted to the journeys of the range")]
    NotFitted,
}

/// Model settings, checked by [`Attribution::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Touches older than this before the payment do not count (default 90 days).
    pub lookback: Duration,
    /// Half-life of the time-decay model (default 7 days).
    pub half_life: Duration,
    /// Least data the data-driven model answers on.
    pub markov_minimum: MarkovMinimum,
    /// Dimension whose values are the data-driven model's states (default channel).
    pub markov_dimension: Dimension,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lookback: DEFAULT_LOOKBACK,
            half_life: DEFAULT_HALF_LIFE,
            markov_minimum: MarkovMinimum::default(),
            markov_dimension: Dimension::Channel,
        }
    }
}

/// What is credited: a payment's time and amount (net, in minor units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    pub paid_at: OffsetDateTime,
    pub amount: i64,
}

/// Computes credits under every model with one set of settings; the data-driven model also
/// needs [`Attribution::fit`].
#[derive(Debug, Clone)]
pub struct Attribution {
    settings: Settings,
    markov: Option<RemovalEffects>,
}

impl Attribution {
    pub fn new(settings: Settings) -> Result<Self, AttributionError> {
        let invalid = |setting, message: &str| AttributionError::InvalidSetting {
            setting,
            message: message.to_owned(),
        };
        if settings.lookback <= Duration::ZERO || settings.lookback > MAX_LOOKBACK {
            return Err(invalid(
                "lookback",
                "must be longer than zero and at most 3660 days",
            ));
        }
        if settings.half_life <= Duration::ZERO {
            return Err(invalid("half_life", "must be longer than zero"));
        }
        Ok(Self {
            settings,
            markov: None,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Indexes of the touches that count for a payment at `paid_at`, oldest first (equal
    /// times keep their input order).
    pub fn eligible(&self, touches: &[Touch], paid_at: OffsetDateTime) -> Vec<usize> {
        let earliest = paid_at - self.settings.lookback;
        let mut eligible: Vec<usize> = touches
            .iter()
            .enumerate()
            .filter(|(_, t)| t.occurred_at >= earliest && t.occurred_at <= paid_at)
            .map(|(i, _)| i)
            .collect();
        eligible.sort_by_key(|i| touches[*i].occurred_at);
        eligible
    }

    /// The data-driven model's state for a touch.
    pub fn state(&self, touch: &Touch) -> String {
        touch.dimension(self.settings.markov_dimension).to_owned()
    }

    /// The states of the touches that count for a payment at `paid_at`, in time order: one
    /// converting journey's path for [`Attribution::fit`].
    pub fn path(&self, touches: &[Touch], paid_at: OffsetDateTime) -> Vec<String> {
        self.eligible(touches, paid_at)
            .into_iter()
            .map(|i| self.state(&touches[i]))
            .collect()
    }

    /// Fits the data-driven model to the journeys of the range (states from
    /// [`Settings::markov_dimension`]), or says which minimum the data misses.
    pub fn fit(&mut self, paths: &[PathCount]) -> Result<&RemovalEffects, AttributionError> {
        let fitted = markov::fit(paths, self.settings.markov_minimum)?;
        Ok(self.markov.insert(fitted))
    }

    pub fn removal_effects(&self) -> Option<&RemovalEffects> {
        self.markov.as_ref()
    }

    /// Each touch's credit for `payment`, aligned with `touches` (0 for touches that do not
    /// count), summing exactly to `payment.amount`; `None` when no touch counts
    /// (unattributed).
    pub fn credit(
        &self,
        model: Model,
        touches: &[Touch],
        payment: &Payment,
    ) -> Result<Option<Vec<i64>>, AttributionError> {
        let eligible = self.eligible(touches, payment.paid_at);
        if eligible.is_empty() {
            return Ok(None);
        }
        let weights = self.weights(model, touches, &eligible)?;
        let parts = apportion(payment.amount, &weights)
            .or_else(|| apportion(payment.amount, &vec![1; eligible.len()]));
        let mut credits = vec![0i64; touches.len()];
        for (i, part) in eligible.iter().zip(parts.unwrap_or_default()) {
            credits[*i] = part;
        }
        Ok(Some(credits))
    }

    /// Integer weights of the eligible touches (in their time order).
    fn weights(
        &self,
        model: Model,
        touches: &[Touch],
        eligible: &[usize],
    ) -> Result<Vec<u64>, AttributionError> {
        let n = eligible.len();
        let one_hot = |at: usize| (0..n).map(|i| u64::from(i == at)).collect::<Vec<u64>>();
        Ok(match model {
            Model::FirstTouch => one_hot(0),
            Model::LastNonDirect => {
                let last = eligible
                    .iter()
                    .rposition(|i| touches[*i].channel != Channel::Direct)
                    .unwrap_or(n - 1);
                one_hot(last)
            }
            Model::Linear => vec![1; n],
            Model::PositionBased => match n {
                1 => vec![1],
                2 => vec![1, 1],
                // 40 % each end, 20 % / (n − 2) each middle touch, scaled by n − 2.
                _ => (0..n)
                    .map(|i| {
                        if i == 0 || i == n - 1 {
                            40 * (n as u64 - 2)
                        } else {
                            20
                        }
                    })
                    .collect(),
            },
            Model::TimeDecay => {
                // Relative to the newest touch (weight 1), which only rescales 2^(−age/h).
                let newest = touches[eligible[n - 1]].occurred_at;
                let half_life = self.settings.half_life.as_seconds_f64();
                eligible
                    .iter()
                    .map(|i| {
                        let age = (newest - touches[*i].occurred_at).as_seconds_f64();
                        scaled((-age / half_life).exp2())
                    })
                    .collect()
            }
            Model::DataDriven => {
                let effects = self.markov.as_ref().ok_or(AttributionError::NotFitted)?;
                // Folded states count as one ((other)) when sharing its effect.
                let states: Vec<String> = eligible
                    .iter()
                    .map(|i| effects.state(&self.state(&touches[*i])).to_owned())
                    .collect();
                let weights: Vec<u64> = states
                    .iter()
                    .map(|s| {
                        let same = states.iter().filter(|o| *o == s).count() as f64;
                        scaled(effects.effect(s) / same)
                    })
                    .collect();
                // No state of this journey has a removal effect (none seen converting in the
                // fit): share equally rather than drop the payment.
                if weights.iter().all(|w| *w == 0) {
                    vec![1; n]
                } else {
                    weights
                }
            }
        })
    }
}

/// A real weight in 0–1 as a fixed-point integer.
fn scaled(weight: f64) -> u64 {
    if weight.is_finite() && weight > 0.0 {
        (weight.min(1.0) * WEIGHT_SCALE).round() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests;

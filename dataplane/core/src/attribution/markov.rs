//! The data-driven model: a first-order Markov chain over the journeys of a range, and each
//! state's *removal effect* — the share of conversions lost when the state is taken out of
//! every path (its incoming transitions then lead nowhere).
//!
//! States are the values of one touch dimension (channel by default). A journey is the
//! sequence of its touches' values; consecutive repeats are merged (a self-loop changes no
//! absorption probability). The chain has a start state and two absorbing states: conversion
//! and null (the journey ended without paying).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// The least data the model answers on. Below it the transition probabilities rest on a few
/// paths, and one journey more or less reorders the channels; the model then answers
/// [`NotEnoughData`] instead of guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkovMinimum {
    /// Journeys with at least one touch (converting or not).
    pub journeys: u64,
    /// Journeys that ended in a payment.
    pub converting: u64,
    /// Journeys that did not.
    pub non_converting: u64,
}

impl Default for MarkovMinimum {
    fn default() -> Self {
        Self {
            journeys: 100,
            converting: 20,
            non_converting: 20,
        }
    }
}

/// The data fell short of [`MarkovMinimum`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error(
    "not enough data for the data-driven model: {journeys} journeys ({converting} converting, \
     {non_converting} not) where it needs at least {} journeys with {} converting and {} not",
    minimum.journeys, minimum.converting, minimum.non_converting
)]
pub struct NotEnoughData {
    pub journeys: u64,
    pub converting: u64,
    pub non_converting: u64,
    pub minimum: MarkovMinimum,
}

/// How many journeys followed one path, and how many of them converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCount {
    /// State (dimension value) of each touch, in time order.
    pub path: Vec<String>,
    pub conversions: u64,
    pub non_conversions: u64,
}

/// Most states the chain is solved over (each removal effect is one more solve). Beyond it the
/// states in the fewest journeys are folded into one, [`OTHER`].
pub const MAX_STATES: usize = 200;
/// The state the rarest states are folded into when there are more than [`MAX_STATES`].
pub const OTHER: &str = "(other)";

/// The fitted model: each state's removal effect (0–1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemovalEffects {
    pub effects: BTreeMap<String, f64>,
    /// States folded into [`OTHER`] (empty unless there were more than [`MAX_STATES`]).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub folded: BTreeSet<String>,
    /// Probability that a journey from start converts, with every state present.
    pub conversion_probability: f64,
    pub journeys: u64,
    pub converting: u64,
    pub non_converting: u64,
}

impl RemovalEffects {
    /// Removal effect of a state; 0 for one never seen.
    pub fn effect(&self, state: &str) -> f64 {
        self.effects.get(self.state(state)).copied().unwrap_or(0.0)
    }

    /// The state a value stands for in the chain: itself, or [`OTHER`] when it was folded.
    pub fn state<'a>(&self, value: &'a str) -> &'a str {
        if self.folded.contains(value) {
            OTHER
        } else {
            value
        }
    }
}

const START: usize = 0;
const CONVERSION: usize = 1;
const NULL: usize = 2;
const FIRST_STATE: usize = 3;

/// Largest change of an absorption probability at which iteration stops.
const TOLERANCE: f64 = 1e-13;
const MAX_ITERATIONS: usize = 100_000;

/// Transition counts between numbered states.
struct Chain {
    names: Vec<String>,
    /// For each state: (next state, count).
    edges: Vec<Vec<(usize, f64)>>,
}

impl Chain {
    fn build(paths: &[PathCount]) -> Self {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut names: Vec<String> = Vec::new();
        let mut counts: Vec<BTreeMap<usize, u64>> = vec![BTreeMap::new(); FIRST_STATE];
        for p in paths {
            let weight = p.conversions.saturating_add(p.non_conversions);
            if p.path.is_empty() || weight == 0 {
                continue;
            }
            let mut previous = START;
            for state in &p.path {
                let id = *index.entry(state.as_str()).or_insert_with(|| {
                    names.push(state.clone());
                    counts.push(BTreeMap::new());
                    FIRST_STATE + names.len() - 1
                });
                if id != previous {
                    *counts[previous].entry(id).or_default() += weight;
                    previous = id;
                }
            }
            if p.conversions > 0 {
                *counts[previous].entry(CONVERSION).or_default() += p.conversions;
            }
            if p.non_conversions > 0 {
                *counts[previous].entry(NULL).or_default() += p.non_conversions;
            }
        }
        let edges = counts
            .into_iter()
            .map(|next| {
                let total: u64 = next.values().sum();
                next.into_iter()
                    .map(|(to, n)| (to, n as f64 / total as f64))
                    .collect()
            })
            .collect();
        Chain { names, edges }
    }

    /// Probability of reaching conversion from start, with `removed` (if any) leading to null.
    /// Gauss-Seidel iteration of p(s) = Σ P(s→t)·p(t), p(conversion) = 1, p(null) = 0; every
    /// state lies on an observed path to an absorbing state, so it converges.
    fn conversion_probability(&self, removed: Option<usize>) -> f64 {
        let mut p = vec![0.0f64; self.edges.len()];
        p[CONVERSION] = 1.0;
        for _ in 0..MAX_ITERATIONS {
            let mut change = 0.0f64;
            for s in (FIRST_STATE..self.edges.len()).chain([START]) {
                if Some(s) == removed {
                    continue;
                }
                let next: f64 = self.edges[s].iter().map(|(t, w)| w * p[*t]).sum();
                change = change.max((next - p[s]).abs());
                p[s] = next;
            }
            if change < TOLERANCE {
                break;
            }
        }
        p[START]
    }
}

/// Fits the chain to `paths` and computes every state's removal effect, or says which minimum
/// the data misses. Journeys without touches are left out (they have nothing to credit).
pub fn fit(paths: &[PathCount], minimum: MarkovMinimum) -> Result<RemovalEffects, NotEnoughData> {
    fit_capped(paths, minimum, MAX_STATES)
}

/// The states beyond the `max_states − 1` seen in the most journeys (ties by name).
fn rarest(paths: &[PathCount], max_states: usize) -> BTreeSet<String> {
    let mut journeys: HashMap<&str, u64> = HashMap::new();
    for p in paths {
        let weight = p.conversions.saturating_add(p.non_conversions);
        let distinct: BTreeSet<&str> = p.path.iter().map(String::as_str).collect();
        for state in distinct {
            *journeys.entry(state).or_default() += weight;
        }
    }
    if journeys.len() <= max_states {
        return BTreeSet::new();
    }
    let mut ranked: Vec<(&str, u64)> = journeys.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked
        .into_iter()
        .skip(max_states.saturating_sub(1))
        .map(|(s, _)| s.to_owned())
        .collect()
}

fn fit_capped(
    paths: &[PathCount],
    minimum: MarkovMinimum,
    max_states: usize,
) -> Result<RemovalEffects, NotEnoughData> {
    let with_touches = || paths.iter().filter(|p| !p.path.is_empty());
    let converting: u64 = with_touches().map(|p| p.conversions).sum();
    let non_converting: u64 = with_touches().map(|p| p.non_conversions).sum();
    let journeys = converting + non_converting;
    if journeys < minimum.journeys
        || converting < minimum.converting
        || non_converting < minimum.non_converting
        || converting == 0
    {
        return Err(NotEnoughData {
            journeys,
            converting,
            non_converting,
            minimum,
        });
    }
    let folded = rarest(paths, max_states);
    let folded_paths: Vec<PathCount>;
    let paths = if folded.is_empty() {
        paths
    } else {
        folded_paths = paths
            .iter()
            .map(|p| PathCount {
                path: p
                    .path
                    .iter()
                    .map(|s| {
                        if folded.contains(s) {
                            OTHER.to_owned()
                        } else {
                            s.clone()
                        }
                    })
                    .collect(),
                ..p.clone()
            })
            .collect();
        &folded_paths
    };
    let chain = Chain::build(paths);
    let base = chain.conversion_probability(None);
    let effects = chain
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let without = chain.conversion_probability(Some(FIRST_STATE + i));
            let effect = if base > 0.0 {
                (1.0 - without / base).clamp(0.0, 1.0)
            } else {
                0.0
            };
            (name.clone(), effect)
        })
        .collect();
    Ok(RemovalEffects {
        effects,
        folded,
        conversion_probability: base,
        journeys,
        converting,
        non_converting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(states: &[&str], conversions: u64, non_conversions: u64) -> PathCount {
        PathCount {
            path: states.iter().map(|s| (*s).to_owned()).collect(),
            conversions,
            non_conversions,
        }
    }

    const SMALL: MarkovMinimum = MarkovMinimum {
        journeys: 1,
        converting: 1,
        non_converting: 0,
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn removal_effects_of_a_worked_example() {
        // Journeys: A→B converts, A→null, B→null.
        // start→A 2/3, start→B 1/3; A→B 1/2, A→null 1/2; B→conv 1/2, B→null 1/2.
        // P(conv) = 2/3·1/2·1/2 + 1/3·1/2 = 1/6 + 1/6 = 1/3.
        // Without A: only start→B: 1/3·1/2 = 1/6 → effect 1 − (1/6)/(1/3) = 1/2.
        // Without B: nothing converts → effect 1.
        let fitted = fit(
            &[
                path(&["a", "b"], 1, 0),
                path(&["a"], 0, 1),
                path(&["b"], 0, 1),
            ],
            SMALL,
        )
        .unwrap();
        assert!(close(fitted.conversion_probability, 1.0 / 3.0));
        assert!(close(fitted.effect("a"), 0.5), "{fitted:?}");
        assert!(close(fitted.effect("b"), 1.0), "{fitted:?}");
        assert_eq!(fitted.effect("never seen"), 0.0);
        assert_eq!(
            (fitted.journeys, fitted.converting, fitted.non_converting),
            (3, 1, 2)
        );
    }

    #[test]
    fn repeats_and_cycles_converge() {
        // A→A→B→A converts, B→null: merged to A→B→A, a cycle through B.
        let fitted = fit(
            &[path(&["a", "a", "b", "a"], 3, 0), path(&["b"], 0, 1)],
            SMALL,
        )
        .unwrap();
        // start→A 3/4, start→B 1/4; A→B 1/2, A→conv 1/2; B→A 3/4, B→null 1/4.
        // pA = 1/2 + 1/2·pB, pB = 3/4·pA → pA = 1/2 + 3/8·pA → pA = 4/5, pB = 3/5.
        // P = 3/4·4/5 + 1/4·3/5 = 12/20 + 3/20 = 3/4.
        assert!(close(fitted.conversion_probability, 0.75));
        // Without B: pA = 1/2, P = 3/4·1/2 = 3/8 → effect 1/2. Without A: 0 → effect 1.
        assert!(close(fitted.effect("b"), 0.5));
        assert!(close(fitted.effect("a"), 1.0));
    }

    #[test]
    fn folds_the_rarest_states_beyond_the_cap() {
        // With room for 2 states: "a" (3 journeys) stays, "b" and "c" (1 each) fold into
        // (other): a→other converts, a→other and a alone do not.
        let paths = [
            path(&["a", "b"], 1, 0),
            path(&["a", "c"], 0, 1),
            path(&["a"], 0, 1),
        ];
        let fitted = fit_capped(&paths, SMALL, 2).unwrap();
        assert_eq!(
            fitted.folded,
            BTreeSet::from(["b".to_owned(), "c".to_owned()])
        );
        assert_eq!(fitted.effects.keys().collect::<Vec<_>>(), ["(other)", "a"]);
        // start→a 1; a→other 2/3, a→null 1/3; other→conv 1/2, other→null 1/2: P = 1/3.
        // Without other: 0 (effect 1). Without a: 0 (effect 1).
        assert!(close(fitted.conversion_probability, 1.0 / 3.0));
        assert!(close(fitted.effect("b"), 1.0) && close(fitted.effect("c"), 1.0));
        assert_eq!(fitted.state("b"), OTHER);
        assert_eq!(fitted.state("a"), "a");
        assert_eq!(fitted.effect("never seen"), 0.0);
        // Under the cap nothing folds.
        assert!(fit_capped(&paths, SMALL, 3).unwrap().folded.is_empty());
    }

    #[test]
    fn answers_not_enough_data_below_the_minimum() {
        let minimum = MarkovMinimum {
            journeys: 4,
            converting: 2,
            non_converting: 1,
        };
        let paths = [path(&["a"], 1, 0), path(&["b"], 0, 2), path(&[], 5, 5)];
        let err = fit(&paths, minimum).unwrap_err();
        assert_eq!(
            (err.journeys, err.converting, err.non_converting),
            (3, 1, 2)
        );
        assert!(err
            .to_string()
            .contains("at least 4 journeys with 2 converting and 1 not"));
        let enough = [path(&["a"], 2, 0), path(&["b"], 0, 2)];
        assert!(fit(&enough, minimum).is_ok());
        // No conversion at all is never enough, whatever the minimum says.
        let none = MarkovMinimum {
            journeys: 0,
            converting: 0,
            non_converting: 0,
        };
        assert!(fit(&[path(&["a"], 0, 3)], none).is_err());
    }
}

//! Calls per patched function and version, from the counters' running
//! totals: the rate between two samples, the totals themselves, and the
//! threads that still ran old code during the transition in progress.
use std::collections::BTreeMap;

use super::{observation::CallSample, transition_tracker::secs_between};

/// One patched function's calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionCalls {
    pub function: String,
    /// Running totals since the counters attached.
    pub old_total: u64,
    pub new_total: u64,
    /// Calls per second over the last two samples; None before the second.
    pub old_per_sec: Option<u64>,
    pub new_per_sec: Option<u64>,
    last_at_ns: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallStats {
    pub functions: Vec<FunctionCalls>,
    /// Patched functions whose calls cannot be counted, with the reason.
    pub uncounted: Vec<(String, String)>,
    /// The threads that ran an old version since the transition in progress
    /// started, by calls made there, most first.
    pub old_callers: Vec<(u32, u64)>,
    /// Old-code calls per thread when that transition started: the
    /// counters run across transitions.
    old_calls_before: BTreeMap<u32, u64>,
}

impl CallStats {
    /// Takes one sample; `in_transition` says whether a transition is in
    /// progress (old callers are counted from its start).
    pub fn apply(&mut self, sample: CallSample, in_transition: bool) {
        self.functions
            .retain(|calls| sample.counts.iter().any(|c| c.function == calls.function));
        for count in &sample.counts {
            let calls = match self
                .functions
                .iter()
                .position(|c| c.function == count.function)
            {
                Some(at) => &mut self.functions[at],
                None => {
                    self.functions.push(FunctionCalls {
                        function: count.function.clone(),
                        ..FunctionCalls::default()
                    });
                    self.functions.last_mut().expect("just pushed")
                }
            };
            calls.sample(sample.at_ns, count.old, count.new);
        }
        self.uncounted = sample.uncounted;
        self.on_old_callers(sample.old_callers, in_transition);
    }

    fn on_old_callers(&mut self, totals: Vec<(u32, u64)>, in_transition: bool) {
        if !in_transition {
            self.old_calls_before = totals.into_iter().collect();
            self.old_callers.clear();
            return;
        }
        let mut callers: Vec<(u32, u64)> = totals
            .into_iter()
            .map(|(tid, calls)| {
                let before = self.old_calls_before.get(&tid).copied().unwrap_or(0);
                (tid, calls.saturating_sub(before))
            })
            .filter(|&(_, calls)| calls > 0)
            .collect();
        callers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        self.old_callers = callers;
    }
}

impl FunctionCalls {
    fn sample(&mut self, at_ns: u64, old: u64, new: u64) {
        if let Some(last_ns) = self.last_at_ns {
            let secs = secs_between(last_ns, at_ns);
            if secs > 0.0 {
                let rate =
                    |now: u64, then: u64| (now.saturating_sub(then) as f64 / secs).round() as u64;
                self.old_per_sec = Some(rate(old, self.old_total));
                self.new_per_sec = Some(rate(new, self.new_total));
            }
        }
        self.last_at_ns = Some(at_ns);
        self.old_total = old;
        self.new_total = new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CallCount;

    const SEC: u64 = 1_000_000_000;

    fn sample(at_ns: u64, counts: &[(u64, u64)], old_callers: Vec<(u32, u64)>) -> CallSample {
        CallSample {
            at_ns,
            counts: counts
                .iter()
                .map(|&(old, new)| CallCount {
                    function: "f".into(),
                    old,
                    new,
                })
                .collect(),
            old_callers,
            uncounted: Vec::new(),
        }
    }

    #[test]
    fn calls_per_second_come_from_the_running_totals() {
        let mut stats = CallStats::default();
        stats.apply(sample(0, &[(100, 0)], vec![]), false);
        let f = &stats.functions[0];
        assert_eq!((f.old_per_sec, f.new_per_sec), (None, None));
        stats.apply(sample(SEC / 2, &[(150, 10)], vec![]), false);
        let f = &stats.functions[0];
        assert_eq!((f.old_per_sec, f.new_per_sec), (Some(100), Some(20)));
        assert_eq!((f.old_total, f.new_total), (150, 10));
        stats.apply(sample(SEC, &[], vec![]), false);
        assert!(
            stats.functions.is_empty(),
            "a function no longer counted is dropped"
        );
    }

    #[test]
    fn threads_still_on_old_code_count_from_the_transition_start() {
        let mut stats = CallStats::default();
        stats.apply(sample(0, &[], vec![(7, 100)]), false);
        assert!(
            stats.old_callers.is_empty(),
            "no transition: nothing listed"
        );
        stats.apply(sample(2 * SEC, &[], vec![(7, 103), (9, 40), (11, 0)]), true);
        assert_eq!(stats.old_callers, [(9, 40), (7, 3)]);
    }
}

//! The fleet metrics in the Prometheus text format (0.0.4), encoded by the
//! `prometheus` crate: what Prometheus scrapes, what node_exporter's
//! textfile collector reads and what `promtool check metrics` accepts.
//!
//! Each encoding fills a registry of its own: the values are a reading of
//! the state at one time, never updated in place.
use prometheus::{
    Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder, core::Collector,
};
use serde::Serialize;

use crate::{
    analysis::fleet_metrics::{FleetMetrics, PatchFlags, TransitionsEnded},
    views::printable::printable,
};

/// The Content-Type of `render`'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics as one exposition; `version` is klpscope's own.
pub fn render(metrics: &FleetMetrics, version: &str) -> prometheus::Result<String> {
    let registry = Registry::new();
    let families = Families {
        registry: &registry,
    };
    families.build_info(version)?;
    families.kernel(metrics)?;
    families.ebpf(metrics)?;
    families.patches(metrics)?;
    families.transition(metrics)?;
    families.last_transition(metrics)?;
    if let Some(ended) = metrics.ended {
        families.ended(ended)?;
    }
    families.calls(metrics)?;
    let mut text = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut text)?;
    String::from_utf8(text).map_err(|error| prometheus::Error::Msg(error.to_string()))
}

/// The registry being filled, and one way to declare each kind of family.
struct Families<'a> {
    registry: &'a Registry,
}

impl Families<'_> {
    fn register<C: Collector + Clone + 'static>(&self, collector: C) -> prometheus::Result<C> {
        self.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn float_gauge(&self, name: &str, help: &str) -> prometheus::Result<GaugeVec> {
        self.register(GaugeVec::new(Opts::new(name, help), &[])?)
    }

    fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    /// A gauge without labels; absent when the value is unknown.
    fn number(&self, name: &str, help: &str, value: Option<i64>) -> prometheus::Result<()> {
        let family = self.gauge(name, help, &[])?;
        match value {
            Some(value) => set::<&str>(&family, &[], value),
            None => Ok(()),
        }
    }

    /// A 0/1 gauge without labels.
    fn flag(&self, name: &str, help: &str, value: bool) -> prometheus::Result<()> {
        self.number(name, help, Some(i64::from(value)))
    }

    fn seconds(&self, name: &str, help: &str, value: Option<f64>) -> prometheus::Result<()> {
        let family = self.float_gauge(name, help)?;
        if let Some(secs) = value {
            family.get_metric_with_label_values::<&str>(&[])?.set(secs);
        }
        Ok(())
    }

    fn build_info(&self, version: &str) -> prometheus::Result<()> {
        let family = self.gauge(
            "klpscope_build_info",
            "klpscope's version; always 1.",
            &["version"],
        )?;
        set(&family, &[version], 1)
    }

    fn kernel(&self, metrics: &FleetMetrics) -> prometheus::Result<()> {
        self.flag(
            "klpscope_livepatch_supported",
            "1 if this kernel can livepatch (CONFIG_LIVEPATCH, /sys/kernel/livepatch).",
            metrics.livepatch_supported,
        )?;
        let problems = self.gauge(
            "klpscope_kernel_problem_info",
            "What limits livepatching or klpscope's view of it here, one series per problem \
             (why livepatch is unsupported among them); always 1.",
            &["problem"],
        )?;
        for problem in &metrics.kernel_problems {
            set(&problems, &[problem], 1)?;
        }
        Ok(())
    }

    fn ebpf(&self, metrics: &FleetMetrics) -> prometheus::Result<()> {
        // A one-shot reading loads no eBPF: nothing to say.
        let Some(feed) = &metrics.feed else {
            return Ok(());
        };
        self.flag(
            "klpscope_ebpf_available",
            "1 if klpscope serve traces transitions with eBPF; 0 if it polls /proc and /sys.",
            feed.ebpf(),
        )?;
        self.flag(
            "klpscope_ebpf_kernel_verdicts",
            "1 if the kernel's own per-task verdicts are traced; 0 if blockers are inferred \
             from patch_state, scheduler state and stacks.",
            feed.kernel_verdicts(),
        )?;
        let why = self.gauge(
            "klpscope_ebpf_unavailable_info",
            "Why klpscope serve polls instead of tracing with eBPF; always 1.",
            &["reason"],
        )?;
        match &feed.polling {
            Some(reason) => set(&why, &[reason], 1),
            None => Ok(()),
        }
    }

    fn patches(&self, metrics: &FleetMetrics) -> prometheus::Result<()> {
        self.patch_flag(
            metrics,
            "klpscope_patch_enabled",
            "The patch's sysfs enabled flag (0 or 1).",
            |patch| patch.enabled,
        )?;
        self.patch_flag(
            metrics,
            "klpscope_patch_transition",
            "The patch's sysfs transition flag: 1 while it is in transition.",
            |patch| patch.transition,
        )?;
        self.patch_flag(
            metrics,
            "klpscope_patch_replace",
            "The patch's sysfs replace flag: 1 for an atomic replace (absent before Linux \
             6.11).",
            |patch| patch.replace,
        )
    }

    /// One 0/1 series per patch whose `flag` is known.
    fn patch_flag(
        &self,
        metrics: &FleetMetrics,
        name: &str,
        help: &str,
        flag: fn(&PatchFlags) -> Option<bool>,
    ) -> prometheus::Result<()> {
        let family = self.gauge(name, help, &["patch"])?;
        for patch in &metrics.patches {
            if let Some(value) = flag(patch) {
                set(&family, &[&patch.name], i64::from(value))?;
            }
        }
        Ok(())
    }

    fn transition(&self, metrics: &FleetMetrics) -> prometheus::Result<()> {
        if !metrics.livepatch_supported {
            return Ok(());
        }
        let transition = metrics.transition.as_ref();
        self.flag(
            "klpscope_transition_in_progress",
            "1 while a patch is in transition.",
            transition.is_some(),
        )?;
        let info = self.gauge(
            "klpscope_transition_info",
            "The transition in progress: its patch, direction and where the blockers' \
             verdicts come from (kernel or inferred); always 1.",
            &["patch", "direction", "verdicts"],
        )?;
        if let Some(t) = transition {
            let labels = [&t.patch, t.direction.as_str(), &label(&t.verdicts)];
            set(&info, &labels, 1)?;
        }
        self.number(
            "klpscope_transition_tasks",
            "Tasks taking part in the transition in progress (0 without one).",
            Some(transition.map_or(0, |t| count(t.tasks_total))),
        )?;
        self.number(
            "klpscope_transition_tasks_pending",
            "Tasks the transition in progress still waits for (0 without one).",
            Some(transition.map_or(0, |t| count(t.tasks_pending))),
        )?;
        self.seconds(
            "klpscope_transition_elapsed_seconds",
            "Seconds since the transition in progress started, reversals included (0 \
             without one; absent when unknown).",
            transition.map_or(Some(0.0), |t| t.elapsed_secs),
        )?;
        self.number(
            "klpscope_transition_retry_rounds",
            "The kernel's retry rounds in the transition in progress, one a second \
             (counted by the tracer, or estimated from the elapsed time; 0 without one).",
            transition.map_or(Some(0), |t| t.retry_rounds.map(i64::from)),
        )?;
        self.number(
            "klpscope_transition_signals_sent",
            "1 once the kernel sent its fake signals to the remaining tasks (after 15 failed \
             rounds); absent when unknown.",
            transition.map_or(Some(0), |t| t.signals_sent.map(i64::from)),
        )?;
        self.flag(
            "klpscope_transition_reversed",
            "1 if the transition in progress was reversed: it heads back to where it started.",
            transition.is_some_and(|t| t.reversed),
        )?;
        self.flag(
            "klpscope_transition_forced",
            "1 if the transition in progress was forced.",
            transition.is_some_and(|t| t.forced),
        )?;
        let blockers = self.gauge(
            "klpscope_transition_blockers",
            "Tasks blocking the transition in progress, by the kernel's reason and by kind \
             of problem.",
            &["reason", "kind"],
        )?;
        for class in &metrics.blockers {
            let labels = [label(&class.reason), label(&class.kind)];
            set(&blockers, &labels, count(class.count))?;
        }
        let named = self.gauge(
            "klpscope_transition_blocker_info",
            "The first blockers of the transition in progress, one series each (those \
             in a patched function first, at most 10); always 1.",
            &["pid", "tid", "comm", "function", "reason", "kind"],
        )?;
        for blocker in &metrics.top_blockers {
            let labels = [
                &blocker.pid.to_string(),
                &blocker.tid.to_string(),
                &blocker.comm,
                blocker.function.as_deref().unwrap_or(""),
                &label(&blocker.reason),
                &label(&blocker.kind),
            ];
            set(&named, &labels, 1)?;
        }
        Ok(())
    }

    fn last_transition(&self, metrics: &FleetMetrics) -> prometheus::Result<()> {
        let Some(last) = &metrics.last_transition else {
            return Ok(());
        };
        let info = self.gauge(
            "klpscope_last_transition_info",
            "The last transition that ended: its patch and the direction it ended in; \
             always 1.",
            &["patch", "direction"],
        )?;
        set(&info, &[&last.patch, last.direction.as_str()], 1)?;
        self.flag(
            "klpscope_last_transition_reversed",
            "1 if the last transition ended reversed: the patch did not take (or did not \
             go).",
            last.reversed,
        )?;
        self.flag(
            "klpscope_last_transition_forced",
            "1 if the last transition was forced.",
            last.forced,
        )?;
        self.seconds(
            "klpscope_last_transition_duration_seconds",
            "How long the last transition took (absent when unknown).",
            last.secs,
        )
    }

    fn ended(&self, ended: TransitionsEnded) -> prometheus::Result<()> {
        let family = self.counter(
            "klpscope_transitions_total",
            "Transitions that ended since klpscope serve started, by outcome: completed, \
             reversed, or forced.",
            &["outcome"],
        )?;
        for (outcome, count) in [
            ("completed", ended.completed),
            ("reversed", ended.reversed),
            ("forced", ended.forced),
        ] {
            family
                .get_metric_with_label_values(&[outcome])?
                .inc_by(count);
        }
        Ok(())
    }

    fn calls(&self, metrics: &FleetMetrics) -> prometheus::Result<()> {
        let family = self.counter(
            "klpscope_patched_function_calls_total",
            "Calls to a patched vmlinux function by the version they ran (old or new), \
             counted with eBPF since the counters attached.",
            &["function", "version"],
        )?;
        for calls in &metrics.calls {
            for (version, total) in [("old", calls.old_total), ("new", calls.new_total)] {
                family
                    .get_metric_with_label_values(&[&printable(&calls.function), version])?
                    .inc_by(total);
            }
        }
        Ok(())
    }
}

/// Label values come from task names any user sets and from names a .ko
/// carries: control characters are escaped as the text views escape them
/// (`\x1b`), for the encoder escapes only quotes, backslashes and line
/// feeds, and a terminal showing the exposition would obey the rest.
fn set<V: AsRef<str> + std::fmt::Debug>(
    family: &IntGaugeVec,
    labels: &[V],
    value: i64,
) -> prometheus::Result<()> {
    let labels: Vec<_> = labels
        .iter()
        .map(|value| printable(value.as_ref()))
        .collect();
    let labels: Vec<&str> = labels.iter().map(AsRef::as_ref).collect();
    family.get_metric_with_label_values(&labels)?.set(value);
    Ok(())
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A value's name as the JSON views spell it (`function_on_stack`), so
/// that labels and JSON share one vocabulary.
fn label<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

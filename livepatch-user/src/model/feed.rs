use schemars::JsonSchema;
use serde::Serialize;

/// What a live command says of itself, among the transition's events.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LiveEvent {
    Timeout {
        secs: f64,
    },
    /// The feed has attached its probes and polled once: from here on, no
    /// transition goes unreported.
    Ready {
        ebpf: bool,
        /// The kernel's own per-task verdicts are traced; otherwise
        /// blockers are inferred from patch_state, scheduler state and
        /// stacks.
        kernel_verdicts: bool,
        /// Threads are read by the BPF task iterator, not from procfs.
        task_iterator: bool,
    },
    /// A signal ended the command.
    Interrupted {
        signal: String,
    },
}

impl LiveEvent {
    /// Said once, when the first round is in: the feed is attached and has
    /// polled, so scripts can start the transition they want to see.
    pub fn ready(feed: &FeedCapabilities) -> Self {
        LiveEvent::Ready {
            ebpf: feed.ebpf(),
            kernel_verdicts: feed.kernel_verdicts(),
            task_iterator: feed.tasks_from_procfs.is_none(),
        }
    }
}

/// What a live feed could attach, and why not: where its facts come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedCapabilities {
    /// Why the eBPF tracer is not used: the feed polls /proc and /sys
    /// alone. None while the tracer runs.
    pub polling: Option<String>,
    /// With the tracer: why the kernel's own per-task verdicts are not
    /// heard (the hook is missing or off on this kernel); blockers are
    /// then inferred.
    pub verdicts_inferred: Option<String>,
    /// Why the threads are read from procfs, not by the BPF task iterator.
    pub tasks_from_procfs: Option<String>,
}

impl FeedCapabilities {
    pub fn ebpf(&self) -> bool {
        self.polling.is_none()
    }

    /// The kernel's verdicts are traced, not inferred.
    pub fn kernel_verdicts(&self) -> bool {
        self.ebpf() && self.verdicts_inferred.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_says_what_the_feed_attached() {
        let polling = FeedCapabilities {
            polling: Some("not root".into()),
            tasks_from_procfs: Some("not root".into()),
            ..FeedCapabilities::default()
        };
        assert_eq!(
            LiveEvent::ready(&polling),
            LiveEvent::Ready {
                ebpf: false,
                kernel_verdicts: false,
                task_iterator: false,
            }
        );
        assert_eq!(
            LiveEvent::ready(&FeedCapabilities::default()),
            LiveEvent::Ready {
                ebpf: true,
                kernel_verdicts: true,
                task_iterator: true,
            }
        );
    }
}

//! Sources composed into what the commands consume: the kernel readers and
//! the eBPF probes, read in the order that makes their facts agree.
//! `snapshot` reads once (status, diagnose, metrics); `transition_feed`
//! follows the kernel live and sends its observations from `feed_thread`
//! (watch, apply, serve). Nothing here works out transitions or blockers:
//! analysis does, from what the feed saw.
pub mod feed_thread;
pub mod snapshot;
pub mod transition_feed;

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by klp_test_target and its livepatch klp_test_patch_target: the
 * replacement functions receive the same state as the originals, so the
 * livepatch needs no exported symbols from the target module.
 */
#ifndef KLP_TEST_H
#define KLP_TEST_H

#include <linux/atomic.h>
#include <linux/sched.h>
#include <linux/wait.h>
#include <linux/version.h>

/* Before 5.17, kthread_complete_and_exit() was complete_and_exit(). */
#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 17, 0)
#define kthread_complete_and_exit complete_and_exit
#endif

/* What a park or busy-loop function returns: which version of it ran. */
#define KLP_TEST_ORIGINAL 1
#define KLP_TEST_PATCHED 2
/* klp_test_patch_target2: a second patch stacked on the first. */
#define KLP_TEST_PATCHED2 3

struct klp_test_park {
	wait_queue_head_t wq;
	/* Bumped by each release; a parked task waits for it to change. */
	unsigned long generation;
	atomic_t parked;
	/*
	 * Sleep in TASK_UNINTERRUPTIBLE (state D): neither a signal nor
	 * livepatch's fake signal ends it, only a release.
	 */
	bool uninterruptible;
};

struct klp_test_busy {
	bool stop;
};

/*
 * Always inlined, so that the task sleeps inside the caller: the original
 * or the livepatched function is then the one on its stack.
 * Killable rather than interruptible: livepatch's fake signal (sent after 15
 * failed rounds) must not release the task; only a release or SIGKILL does.
 * A park marked uninterruptible ends only with a release.
 */
static __always_inline int klp_test_park_sleep(struct klp_test_park *park, int version)
{
	unsigned long generation = READ_ONCE(park->generation);
	int ret = 0;

	atomic_inc(&park->parked);
	if (park->uninterruptible)
		wait_event(park->wq, READ_ONCE(park->generation) != generation);
	else
		ret = wait_event_killable(park->wq, READ_ONCE(park->generation) != generation);
	atomic_dec(&park->parked);
	return ret ? ret : version;
}

static __always_inline int klp_test_busy_spin(struct klp_test_busy *busy, int version)
{
	while (!READ_ONCE(busy->stop))
		schedule_timeout_interruptible(HZ / 10);
	return version;
}

#endif

// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_target: functions where klpscope's tests park tasks on demand.
 *
 * /sys/kernel/debug/klp_test_target/
 *   park     read: sleeps in klp_test_park_wait() until the next release, then
 *            returns "original", "patched" or "patched2" (which version
 *            released it: klp_test_patch_target2 returns "patched2")
 *   release  write anything: wakes every parked reader and dpark kthread
 *   parked   read: how many readers of park (or cpark) sleep now
 *   busy     write 1: start kthread "klp_test_busy", looping in
 *            klp_test_busy_loop() until 0 is written; read: its pid, or 0
 *   dpark    write N (1-8): start N kthreads "klp_dpark/<i>", each asleep
 *            in klp_test_park_wait() in TASK_UNINTERRUPTIBLE (state D:
 *            livepatch's fake signals do not wake it) until the next
 *            release, then exiting (EBUSY while an earlier batch runs);
 *            read: their pids, space-separated, on one line (empty: none)
 *   call     open: one call of klp_test_call(), which returns at once: a
 *            load of known size (`: < call` in a shell is one call)
 *   cpark    read: sleeps inside klp_test_call() until the next release,
 *            then calls it once more (returning at once) and reads the
 *            version that released it, as park does
 */
#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/uaccess.h>

#include "klp_test.h"

static struct klp_test_park park = {
	.wq = __WAIT_QUEUE_HEAD_INITIALIZER(park.wq),
};

static struct klp_test_park dpark = {
	.wq = __WAIT_QUEUE_HEAD_INITIALIZER(dpark.wq),
	.uninterruptible = true,
};

#define DPARK_MAX 8

static pid_t dpark_pids[DPARK_MAX];
static struct completion dpark_done[DPARK_MAX];
static int dpark_count;
static DEFINE_MUTEX(dpark_lock);

static struct klp_test_busy busy;
static struct task_struct *busy_task;
static DECLARE_COMPLETION(busy_done);
static DEFINE_MUTEX(busy_lock);
static struct dentry *dir;

/*
 * Both functions are livepatched by klp_test_patch_target. noipa forbids
 * inlining, cloning and signature changes, so the symbol livepatch looks up
 * is exactly the code that runs and stays on the sleeping task's stack.
 */
static __attribute__((__noipa__)) int klp_test_park_wait(struct klp_test_park *p)
{
	return klp_test_park_sleep(p, KLP_TEST_ORIGINAL);
}

static __attribute__((__noipa__)) int klp_test_busy_loop(struct klp_test_busy *b)
{
	return klp_test_busy_spin(b, KLP_TEST_ORIGINAL);
}

/*
 * Livepatched by klp_test_patch_call. With a park it sleeps inside itself
 * (blocking that patch), without one it returns at once: the function
 * whose calls klpscope counts.
 */
static __attribute__((__noipa__)) int klp_test_call(struct klp_test_park *p)
{
	return p ? klp_test_park_sleep(p, KLP_TEST_ORIGINAL) : KLP_TEST_ORIGINAL;
}

static ssize_t read_version(char __user *buf, size_t len, loff_t *pos, int ret)
{
	const char *version;

	if (ret < 0)
		return ret;
	switch (ret) {
	case KLP_TEST_PATCHED:
		version = "patched\n";
		break;
	case KLP_TEST_PATCHED2:
		version = "patched2\n";
		break;
	default:
		version = "original\n";
	}
	return simple_read_from_buffer(buf, len, pos, version, strlen(version));
}

static ssize_t park_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	if (*pos)
		return 0;
	return read_version(buf, len, pos, klp_test_park_wait(&park));
}

static int call_open(struct inode *inode, struct file *file)
{
	klp_test_call(NULL);
	return 0;
}

/*
 * The second call runs before the task returns to user space, where a task
 * still pending in a transition switches: the version it had.
 */
static ssize_t cpark_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	int ret;

	if (*pos)
		return 0;
	ret = klp_test_call(&park);
	klp_test_call(NULL);
	return read_version(buf, len, pos, ret);
}

static ssize_t release_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	WRITE_ONCE(park.generation, park.generation + 1);
	wake_up_all(&park.wq);
	WRITE_ONCE(dpark.generation, dpark.generation + 1);
	wake_up_all(&dpark.wq);
	return len;
}

static ssize_t parked_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	char text[16];
	int n = scnprintf(text, sizeof(text), "%d\n", atomic_read(&park.parked));

	return simple_read_from_buffer(buf, len, pos, text, n);
}

static int busy_thread(void *unused)
{
	klp_test_busy_loop(&busy);
	kthread_complete_and_exit(&busy_done, 0);
}

/* Called with busy_lock held. */
static void busy_stop(void)
{
	if (!busy_task)
		return;
	WRITE_ONCE(busy.stop, true);
	wait_for_completion(&busy_done);
	busy_task = NULL;
}

static ssize_t busy_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	bool start;
	int ret = kstrtobool_from_user(buf, len, &start);

	if (ret)
		return ret;
	mutex_lock(&busy_lock);
	if (start && !busy_task) {
		WRITE_ONCE(busy.stop, false);
		reinit_completion(&busy_done);
		busy_task = kthread_run(busy_thread, NULL, "klp_test_busy");
		if (IS_ERR(busy_task)) {
			ret = PTR_ERR(busy_task);
			busy_task = NULL;
		}
	} else if (!start) {
		busy_stop();
	}
	mutex_unlock(&busy_lock);
	return ret ? ret : len;
}

static ssize_t busy_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	char text[16];
	int n;

	mutex_lock(&busy_lock);
	n = scnprintf(text, sizeof(text), "%d\n", busy_task ? task_pid_nr(busy_task) : 0);
	mutex_unlock(&busy_lock);
	return simple_read_from_buffer(buf, len, pos, text, n);
}

static int dpark_thread(void *data)
{
	struct completion *done = data;

	klp_test_park_wait(&dpark);
	kthread_complete_and_exit(done, 0);
}

/* Called with dpark_lock held: true while a kthread of the batch runs. */
static bool dpark_running(void)
{
	int i;

	for (i = 0; i < dpark_count; i++)
		if (!completion_done(&dpark_done[i]))
			return true;
	return false;
}

static ssize_t dpark_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	unsigned int n;
	int ret = kstrtouint_from_user(buf, len, 10, &n);

	if (ret)
		return ret;
	if (n < 1 || n > DPARK_MAX)
		return -EINVAL;
	mutex_lock(&dpark_lock);
	if (dpark_running()) {
		ret = -EBUSY;
		goto out;
	}
	for (dpark_count = 0; dpark_count < (int)n; dpark_count++) {
		struct completion *done = &dpark_done[dpark_count];
		struct task_struct *task;

		init_completion(done);
		task = kthread_create(dpark_thread, done, "klp_dpark/%d", dpark_count);
		if (IS_ERR(task)) {
			ret = PTR_ERR(task);
			break;
		}
		/* Its pid now: once released, the task may be gone. */
		dpark_pids[dpark_count] = task_pid_nr(task);
		wake_up_process(task);
	}
out:
	mutex_unlock(&dpark_lock);
	return ret ? ret : len;
}

static ssize_t dpark_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	char text[DPARK_MAX * 12 + 2];
	int i, n = 0;

	mutex_lock(&dpark_lock);
	for (i = 0; i < dpark_count; i++)
		if (!completion_done(&dpark_done[i]))
			n += scnprintf(text + n, sizeof(text) - n, "%s%d", n ? " " : "",
				       dpark_pids[i]);
	mutex_unlock(&dpark_lock);
	n += scnprintf(text + n, sizeof(text) - n, "\n");
	return simple_read_from_buffer(buf, len, pos, text, n);
}

static const struct file_operations park_fops = { .owner = THIS_MODULE, .read = park_read };
static const struct file_operations call_fops = { .owner = THIS_MODULE, .open = call_open };
static const struct file_operations cpark_fops = { .owner = THIS_MODULE, .read = cpark_read };
static const struct file_operations release_fops = { .owner = THIS_MODULE, .write = release_write };
static const struct file_operations parked_fops = { .owner = THIS_MODULE, .read = parked_read };
static const struct file_operations busy_fops = {
	.owner = THIS_MODULE,
	.read = busy_read,
	.write = busy_write,
};
static const struct file_operations dpark_fops = {
	.owner = THIS_MODULE,
	.read = dpark_read,
	.write = dpark_write,
};

static int __init klp_test_target_init(void)
{
	dir = debugfs_create_dir("klp_test_target", NULL);
	debugfs_create_file("park", 0400, dir, NULL, &park_fops);
	debugfs_create_file("release", 0200, dir, NULL, &release_fops);
	debugfs_create_file("parked", 0400, dir, NULL, &parked_fops);
	debugfs_create_file("busy", 0600, dir, NULL, &busy_fops);
	debugfs_create_file("dpark", 0600, dir, NULL, &dpark_fops);
	debugfs_create_file("call", 0400, dir, NULL, &call_fops);
	debugfs_create_file("cpark", 0400, dir, NULL, &cpark_fops);
	return 0;
}

static void __exit klp_test_target_exit(void)
{
	debugfs_remove_recursive(dir);
	mutex_lock(&busy_lock);
	busy_stop();
	mutex_unlock(&busy_lock);
	/* The dpark kthreads run this module's code: release and wait. */
	WRITE_ONCE(dpark.generation, dpark.generation + 1);
	wake_up_all(&dpark.wq);
	for (int i = 0; i < dpark_count; i++)
		wait_for_completion(&dpark_done[i]);
}

module_init(klp_test_target_init);
module_exit(klp_test_target_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klpscope test target: functions that park tasks on demand");

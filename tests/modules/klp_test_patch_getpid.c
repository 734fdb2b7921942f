// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_patch_getpid: a livepatch of the getpid syscall by its x86-64
 * entry point __x64_sys_getpid. getpid is defined with SYSCALL_DEFINE0,
 * which makes __x64_sys_getpid an alias of __do_sys_getpid: ftrace lists
 * the function under the latter name only, and the kernel patches it by
 * address all the same. The replacement returns what getpid returns and
 * counts its calls (module parameter `calls`, read-only).
 */
#include <linux/atomic.h>
#include <linux/livepatch.h>
#include <linux/module.h>
#include <linux/sched.h>

static atomic_t calls = ATOMIC_INIT(0);

static int calls_get(char *buffer, const struct kernel_param *kp)
{
	return sprintf(buffer, "%d\n", atomic_read(&calls));
}

static const struct kernel_param_ops calls_ops = { .get = calls_get };
module_param_cb(calls, &calls_ops, NULL, 0444);
MODULE_PARM_DESC(calls, "calls of the replacement so far");

static __attribute__((__noipa__)) long livepatch_getpid(const struct pt_regs *regs)
{
	atomic_inc(&calls);
	return task_tgid_vnr(current);
}

static struct klp_func funcs[] = {
	{ .old_name = "__x64_sys_getpid", .new_func = livepatch_getpid },
	{}
};

static struct klp_object objs[] = {
	/* A NULL name means vmlinux. */
	{ .funcs = funcs },
	{}
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int __init klp_test_patch_getpid_init(void)
{
	return klp_enable_patch(&patch);
}

static void __exit klp_test_patch_getpid_exit(void)
{
}

module_init(klp_test_patch_getpid_init);
module_exit(klp_test_patch_getpid_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
MODULE_DESCRIPTION("klpscope test: a livepatch of the getpid syscall (an alias)");

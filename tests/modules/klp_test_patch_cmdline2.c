// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_patch_cmdline2: a cumulative (atomic replace) livepatch of vmlinux
 * cmdline_proc_show.
 * /proc/cmdline then reads "klp_test_patch_cmdline2: livepatched".
 */
#include <linux/livepatch.h>
#include <linux/module.h>
#include <linux/seq_file.h>

static __attribute__((__noipa__)) int livepatch_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "klp_test_patch_cmdline2: livepatched\n");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "cmdline_proc_show", .new_func = livepatch_cmdline_proc_show },
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
	.replace = true,
};

static int __init klp_test_patch_cmdline2_init(void)
{
	return klp_enable_patch(&patch);
}

static void __exit klp_test_patch_cmdline2_exit(void)
{
}

module_init(klp_test_patch_cmdline2_init);
module_exit(klp_test_patch_cmdline2_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
MODULE_DESCRIPTION("klpscope test: cumulative (atomic replace) livepatch of vmlinux cmdline_proc_show");

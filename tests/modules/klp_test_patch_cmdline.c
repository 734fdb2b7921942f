// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_patch_cmdline: a livepatch of vmlinux cmdline_proc_show.
 * /proc/cmdline then reads "<module name>: livepatched".
 *
 * klp_test_patch_cmdline2.c builds the same patch as a cumulative (atomic
 * replace) one, by defining KLP_TEST_REPLACE before including this file.
 */
#include <linux/livepatch.h>
#include <linux/module.h>
#include <linux/seq_file.h>

static __attribute__((__noipa__)) int livepatch_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, KBUILD_MODNAME ": livepatched\n");
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
#ifdef KLP_TEST_REPLACE
	.replace = true,
#endif
};

static int __init klp_test_patch_cmdline_init(void)
{
	return klp_enable_patch(&patch);
}

static void __exit klp_test_patch_cmdline_exit(void)
{
}

module_init(klp_test_patch_cmdline_init);
module_exit(klp_test_patch_cmdline_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
#ifdef KLP_TEST_REPLACE
MODULE_DESCRIPTION("klpscope test: cumulative (atomic replace) livepatch of vmlinux cmdline_proc_show");
#else
MODULE_DESCRIPTION("klpscope test: livepatch of vmlinux cmdline_proc_show");
#endif

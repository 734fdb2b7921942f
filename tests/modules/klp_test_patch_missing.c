// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_patch_missing: a livepatch of a vmlinux function that no kernel
 * has. The kernel refuses to enable it (the symbol is not found); klpscope
 * check --module says so before anything is loaded.
 */
#include <linux/livepatch.h>
#include <linux/module.h>

static __attribute__((__noipa__)) int livepatch_klp_test_no_such_function(void)
{
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "klp_test_no_such_function",
	  .new_func = livepatch_klp_test_no_such_function },
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

static int __init klp_test_patch_missing_init(void)
{
	return klp_enable_patch(&patch);
}

static void __exit klp_test_patch_missing_exit(void)
{
}

module_init(klp_test_patch_missing_init);
module_exit(klp_test_patch_missing_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
MODULE_DESCRIPTION("klpscope test: livepatch of a vmlinux function that does not exist");

// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_patch_call: a livepatch of klp_test_target's klp_test_call(),
 * the function whose calls klpscope's tests count. Like the original, the
 * replacement sleeps inside itself when given a park, and otherwise
 * returns at once.
 */
#include <linux/livepatch.h>
#include <linux/module.h>

#include "klp_test.h"

static __attribute__((__noipa__)) int livepatch_klp_test_call(struct klp_test_park *p)
{
	return p ? klp_test_park_sleep(p, KLP_TEST_PATCHED) : KLP_TEST_PATCHED;
}

static struct klp_func funcs[] = {
	{ .old_name = "klp_test_call", .new_func = livepatch_klp_test_call },
	{}
};

static struct klp_object objs[] = {
	{ .name = "klp_test_target", .funcs = funcs },
	{}
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int __init klp_test_patch_call_init(void)
{
	return klp_enable_patch(&patch);
}

static void __exit klp_test_patch_call_exit(void)
{
}

module_init(klp_test_patch_call_init);
module_exit(klp_test_patch_call_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
MODULE_DESCRIPTION("klpscope test livepatch of klp_test_target's klp_test_call");

// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_patch_target: livepatches both functions of klp_test_target. The
 * replacements sleep inside themselves under new names, so that a task
 * parked after patching blocks unpatching in a function of its own.
 *
 * klp_test_patch_target2.c builds a second patch of the same functions,
 * stacked on this one (not an atomic replace), by defining KLP_TEST_PATCH2
 * before including this file: its replacements are livepatch2_*, and a
 * reader it releases reads "patched2".
 */
#include <linux/livepatch.h>
#include <linux/module.h>

#include "klp_test.h"

#ifdef KLP_TEST_PATCH2
#define KLP_TEST_NEW(name) livepatch2_##name
#define KLP_TEST_VERSION KLP_TEST_PATCHED2
#else
#define KLP_TEST_NEW(name) livepatch_##name
#define KLP_TEST_VERSION KLP_TEST_PATCHED
#endif

static __attribute__((__noipa__)) int KLP_TEST_NEW(klp_test_park_wait)(struct klp_test_park *p)
{
	return klp_test_park_sleep(p, KLP_TEST_VERSION);
}

static __attribute__((__noipa__)) int KLP_TEST_NEW(klp_test_busy_loop)(struct klp_test_busy *b)
{
	return klp_test_busy_spin(b, KLP_TEST_VERSION);
}

static struct klp_func funcs[] = {
	{ .old_name = "klp_test_park_wait", .new_func = KLP_TEST_NEW(klp_test_park_wait) },
	{ .old_name = "klp_test_busy_loop", .new_func = KLP_TEST_NEW(klp_test_busy_loop) },
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

static int __init klp_test_patch_target_init(void)
{
	return klp_enable_patch(&patch);
}

static void __exit klp_test_patch_target_exit(void)
{
}

module_init(klp_test_patch_target_init);
module_exit(klp_test_patch_target_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
#ifdef KLP_TEST_PATCH2
MODULE_DESCRIPTION("klpscope test livepatch of klp_test_target, stacked on klp_test_patch_target");
#else
MODULE_DESCRIPTION("klpscope test livepatch of klp_test_target");
#endif

// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_patch_callbacks: a livepatch with no function, only a callback:
 * its one object (vmlinux) has an empty `funcs` array, all zeros, which the
 * compiler puts in .bss, as in the kernel's own livepatch selftests.
 *
 * Its pre-patch callback returns the module parameter pre_patch_ret: with
 * a non-zero value the kernel refuses to enable the patch and insmod
 * fails ("pre-patch callback failed for object 'vmlinux'").
 */
#include <linux/livepatch.h>
#include <linux/module.h>

static int pre_patch_ret;
module_param(pre_patch_ret, int, 0444);
MODULE_PARM_DESC(pre_patch_ret, "what the pre-patch callback returns (non-zero: refused)");

static int pre_patch(struct klp_object *obj)
{
	pr_info("%s: pre-patch callback returns %d\n", KBUILD_MODNAME, pre_patch_ret);
	return pre_patch_ret;
}

static struct klp_func no_funcs[] = {
	{}
};

static struct klp_object objs[] = {
	{
		/* A NULL name means vmlinux. */
		.funcs = no_funcs,
		.callbacks = { .pre_patch = pre_patch },
	},
	{}
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int __init klp_test_patch_callbacks_init(void)
{
	return klp_enable_patch(&patch);
}

static void __exit klp_test_patch_callbacks_exit(void)
{
}

module_init(klp_test_patch_callbacks_init);
module_exit(klp_test_patch_callbacks_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
MODULE_DESCRIPTION("klpscope test: a livepatch with a callbacks-only object");

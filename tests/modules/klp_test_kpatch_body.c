// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_kpatch: a livepatch of klp_test_target's klp_test_park_wait in
 * the layout kpatch-build produces, built from kpatch's own init code.
 *
 * This file is the patch body, written by hand where kpatch-build's
 * create-diff-object would write it: the replacement functions (of
 * klp_test_park_wait and klp_test_busy_loop in klp_test_target, and of
 * vmlinux cmdline_proc_show: /proc/cmdline then reads "klp_test_kpatch:
 * livepatched"), their struct kpatch_patch_func entries in .kpatch.funcs
 * and a post-patch callback in .kpatch.callbacks.post_patch, the names in
 * .kpatch.strings. The module
 * is linked with kpatch's patch-hook.c and livepatch-patch-hook.c (which
 * build the klp_patch at init, replace on unless -DKLP_REPLACE_ENABLE=false),
 * kpatch-patch.h and kpatch.lds.S, taken from Debian's kpatch-build package
 * by xtask at build time (not part of this repository). It is not output of
 * kpatch-build.
 */
#include <linux/module.h>
#include <linux/printk.h>
#include <linux/seq_file.h>

#include "klp_test.h"
#include "kpatch-patch.h"

static __attribute__((__noipa__)) int livepatch_klp_test_park_wait(struct klp_test_park *p)
{
	return klp_test_park_sleep(p, KLP_TEST_PATCHED);
}

static __attribute__((__noipa__)) int livepatch_klp_test_busy_loop(struct klp_test_busy *b)
{
	return klp_test_busy_spin(b, KLP_TEST_PATCHED);
}

static __attribute__((__noipa__)) int livepatch_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, KBUILD_MODNAME ": livepatched\n");
	return 0;
}

static void klp_test_kpatch_post_patch(void *obj)
{
	pr_info("klp_test_kpatch: post-patch callback ran\n");
}

static char park_name[] __section(".kpatch.strings") = "klp_test_park_wait";
static char busy_name[] __section(".kpatch.strings") = "klp_test_busy_loop";
static char cmdline_name[] __section(".kpatch.strings") = "cmdline_proc_show";
static char target_objname[] __section(".kpatch.strings") = "klp_test_target";
static char vmlinux_objname[] __section(".kpatch.strings") = "vmlinux";

/* One array: the hook walks the section from __kpatch_funcs to
 * __kpatch_funcs_end, so there must be no padding between entries. The
 * hook groups them by objname, in order of first appearance. */
static struct kpatch_patch_func kpatch_funcs[] __section(".kpatch.funcs") __used = {
	{
		.new_addr = (unsigned long)livepatch_klp_test_park_wait,
		.name = park_name,
		.objname = target_objname,
	},
	{
		.new_addr = (unsigned long)livepatch_cmdline_proc_show,
		.name = cmdline_name,
		.objname = vmlinux_objname,
	},
	{
		.new_addr = (unsigned long)livepatch_klp_test_busy_loop,
		.name = busy_name,
		.objname = target_objname,
	},
};

static struct kpatch_post_patch_callback kpatch_post_patch
	__section(".kpatch.callbacks.post_patch") __used = {
	.callback = klp_test_kpatch_post_patch,
	.objname = target_objname,
};

MODULE_DESCRIPTION("klpscope test livepatch of klp_test_target in kpatch-build's layout");

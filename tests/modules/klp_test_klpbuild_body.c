// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_klpbuild: a livepatch of klp_test_target's klp_test_park_wait in
 * the layout the kernel's klp-build produces (7.2+), built from klp-build's
 * own init code.
 *
 * This file is the patch body, written by hand where objtool's `klp diff`
 * would write it: the replacement functions (of klp_test_park_wait and
 * klp_test_busy_loop in klp_test_target, and of vmlinux cmdline_proc_show:
 * /proc/cmdline then reads "klp_test_klpbuild: livepatched"), a struct
 * klp_object_ext per object in .init.klp_objects (vmlinux's named NULL,
 * klp_test_target's with a post-patch callback) and their struct
 * klp_func_ext in .init.klp_funcs (include/linux/livepatch_external.h). The
 * module is linked with scripts/livepatch/init.c, which builds the
 * klp_patch at init (replace on unless built with KLP_NO_REPLACE, as
 * klp-build --no-replace does), taken from Debian's linux-source package
 * by xtask at build time (not part of this repository). That init code
 * needs the kernel's klp_find_section_by_name and kzalloc_obj, so only
 * kernels that have both (Debian's 7.2 and 7.3) build it. It is not output
 * of klp-build.
 */
#include <linux/livepatch.h>
#include <linux/module.h>
#include <linux/printk.h>
#include <linux/seq_file.h>

#include "klp_test.h"

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

static void klp_test_klpbuild_post_patch(struct klp_object *obj)
{
	pr_info("klp_test_klpbuild: post-patch callback ran\n");
}

static struct klp_func_ext funcs[] __section(".init.klp_funcs") __used = {
	{ .old_name = "cmdline_proc_show", .new_func = livepatch_cmdline_proc_show },
	{ .old_name = "klp_test_park_wait", .new_func = livepatch_klp_test_park_wait },
	{ .old_name = "klp_test_busy_loop", .new_func = livepatch_klp_test_busy_loop },
};

/* One array: the init code counts the objects by the section's size. */
static struct klp_object_ext objects[] __section(".init.klp_objects") __used = {
	{ .name = NULL, .funcs = &funcs[0], .nr_funcs = 1 },
	{
		.name = "klp_test_target",
		.funcs = &funcs[1],
		.callbacks = { .post_patch = klp_test_klpbuild_post_patch },
		.nr_funcs = 2,
	},
};

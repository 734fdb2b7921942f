// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_patch_cmdline2: a cumulative (atomic replace) livepatch of vmlinux
 * cmdline_proc_show. /proc/cmdline then reads
 * "klp_test_patch_cmdline2: livepatched".
 */
#define KLP_TEST_REPLACE
#include "klp_test_patch_cmdline.c"

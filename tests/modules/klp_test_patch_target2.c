// SPDX-License-Identifier: GPL-2.0
/*
 * klp_test_patch_target2: a second livepatch of klp_test_target's functions,
 * stacked on klp_test_patch_target (not an atomic replace). Its replacements
 * are livepatch2_klp_test_park_wait and livepatch2_klp_test_busy_loop; a
 * park reader it releases reads "patched2".
 */
#define KLP_TEST_PATCH2
#include "klp_test_patch_target.c"

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/api_export.c — the shared library's own translation unit. The public functions live in
 * the static archives it wraps; only those marked TSYNC_API are visible from libtillsync.so.
 */
#include "tillsync/tillsync.h"

int tsync_abi_version(void)
{
    return TSYNC_VERSION_ABI;
}

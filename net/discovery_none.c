/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/discovery_none.c — the mDNS backend of a build without avahi (cmake -DTSYNC_MDNS=OFF, built
 * instead of net/discovery_avahi.c): creating it fails with a message saying so, the node logs
 * that once ("mDNS off: ...") and goes on with its static peers and the relay, as it does on a
 * machine without an avahi daemon. The first step towards platforms without avahi (Android,
 * macOS, Windows), where a backend on the platform's own DNS-SD would take this file's place.
 */
#include "net/discovery.h"
#include "util/util.h"

int tsync__disc_avahi_new(tsync__disc **out, const tsync__disc_self *self)
{
    (void)self;
    if (out) *out = NULL;
    return tsync__err(TSYNC_EUNSUPPORTED, "this build has no mDNS discovery (TSYNC_MDNS=OFF): "
                                          "use static peers or the relay");
}

/* SPDX-License-Identifier: Apache-2.0 */
/* tillsync/tillsync.h — umbrella header of libtillsync. */
#ifndef TILLSYNC_H
#define TILLSYNC_H
#include "tillsync/backup.h"
#include "tillsync/common.h"
#include "tillsync/conflicts.h"
#include "tillsync/io.h"
#include "tillsync/migrate.h"
#include "tillsync/node.h"
#include "tillsync/relay.h"
#include "tillsync/schema.h"
#include "tillsync/sqlite.h"
#include "tillsync/status.h"
#include "tillsync/store.h"
#include "tillsync/trust.h"
#include "tillsync/vault.h"
#include "tillsync/version.h"
#endif

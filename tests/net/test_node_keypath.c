/* SPDX-License-Identifier: Apache-2.0 */
/* tsync_node_options.key_path (version 3): a node opens its database with a device key kept
 * elsewhere than "<db>.key" (`tillsync run --key`, a service whose key lives apart), and so do
 * its workers (a scheduled backup opens its own connection). Version 2 options still work and
 * mean the default key file. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <tillsync/tillsync.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"

/* A database at dir/a.db whose key is dir/keys.key, and no dir/a.db.key. */
static const char *db_with_key_apart(const char *dir, const char **key)
{
    const char *path = th_path(dir, "a.db");
    *key = th_path(dir, "keys.key");
    tsync_store_options so = TSYNC_STORE_OPTIONS_INIT;
    so.create = 1;
    so.key_path = *key;
    tsync_store *s;
    cr_assert_eq(tsync_store_open(&s, path, &so), 0, "%s", tsync_error_last()->message);
    tsync_store_free(s);
    return path;
}

Test(node_keypath, a_node_opens_with_a_key_kept_apart)
{
    char *dir = th_tmpdir_auto();
    const char *key;
    const char *path = db_with_key_apart(dir, &key);
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "";
    o.no_mdns = 1;
    o.status_path = "";
    tsync_node *n = NULL;
    cr_assert_neq(tsync_node_new(&n, path, &o), 0, "a node without key_path found the key");
    cr_assert_null(n);
    o.key_path = key;
    cr_assert_eq(tsync_node_new(&n, path, &o), 0, "%s", tsync_error_last()->message);
    tsync_node_free(n);
}

Test(node_keypath, version_2_options_mean_the_default_key)
{
    char *dir = th_tmpdir_auto();
    const char *key;
    const char *path = db_with_key_apart(dir, &key);
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.version = 2; /* an app built before key_path: the field is not read */
    o.listen = "";
    o.no_mdns = 1;
    o.status_path = "";
    o.key_path = key;
    tsync_node *n = NULL;
    cr_assert_neq(tsync_node_new(&n, path, &o), 0, "version 2 options read key_path");
    o.version = TSYNC_NODE_OPTIONS_VERSION + 1; /* the first version this library does not know */
    cr_assert_eq(tsync_node_new(&n, path, &o), TSYNC_EINVAL, "an unknown version was taken");
}

Test(node_keypath, a_scheduled_backup_opens_with_the_key_kept_apart)
{
    char *dir = th_tmpdir_auto();
    const char *key;
    const char *path = db_with_key_apart(dir, &key);
    const char *bdir = th_path(dir, "backups");
    cr_assert_eq(mkdir(bdir, 0700), 0);
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "";
    o.no_mdns = 1;
    o.status_path = "";
    o.key_path = key;
    o.backup_every_ms = 200;
    o.backup_dir = bdir;
    tsync_node *n = NULL;
    cr_assert_eq(tsync_node_new(&n, path, &o), 0, "%s", tsync_error_last()->message);
    cr_assert_eq(tsync_node_start(n), 0);
    int found = 0;
    for (int i = 0; i < 100 && !found; i++) {
        nu_sleep_ms(50);
        DIR *d = opendir(bdir);
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (strstr(e->d_name, ".tsbak") && !strstr(e->d_name, ".tmp")) found = 1;
        if (d) closedir(d);
    }
    tsync_node_error err = TSYNC_NODE_ERROR_INIT;
    tsync_node_last_error(&err, n);
    tsync_node_free(n);
    cr_assert(found, "no backup written with the key kept apart: %s", err.message);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cmd_backup.c — tillsync backup, backup-check and restore. The work is the library's
 * (tillsync/backup.h); this file parses the arguments, finds the passphrase (--passphrase-file,
 * $TILLSYNC_PASSPHRASE, or asked on the terminal without echo), draws a progress bar when stderr
 * is a terminal, and says in a few lines what happened.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_backup.h"
#include "cmd_vault.h"

#define PASS_MAX 1024

static int usage(const char *msg)
{
    fprintf(stderr, "tillsync: %s (see 'tillsync --help')\n", msg);
    return 2;
}

/* ---------------------------------------------------------------- passphrase */

static void pass_free(char *p)
{
    if (p) sodium_memzero(p, PASS_MAX);
    free(p);
}

/* Cuts a line at its end ("\n" or "\r\n"); 0 if it is then empty. */
static size_t chomp(char *p)
{
    p[strcspn(p, "\r\n")] = 0;
    return strlen(p);
}

/* One line from the terminal without echo, or -1. */
static int ask(int tty, const char *prompt, char *out)
{
    struct termios old, quiet;
    if (tcgetattr(tty, &old) != 0) return -1;
    quiet = old;
    quiet.c_lflag &= (tcflag_t) ~(ECHO | ECHONL);
    quiet.c_lflag |= ICANON;
    if (write(tty, prompt, strlen(prompt)) < 0 || tcsetattr(tty, TCSAFLUSH, &quiet) != 0) return -1;
    ssize_t n = read(tty, out, PASS_MAX - 1);
    tcsetattr(tty, TCSAFLUSH, &old);
    if (write(tty, "\n", 1) < 0 || n < 0) return -1;
    out[n] = 0;
    chomp(out);
    return 0;
}

/* The passphrase for what: from file (its first line), else $TILLSYNC_PASSPHRASE, else asked on
 * the terminal (twice when confirm). Returns 0 with *out (free with pass_free), or an exit status
 * with the message printed. */
static int get_passphrase(const char *file, const char *what, int confirm, char **out)
{
    char *p = calloc(1, PASS_MAX);
    if (!p) {
        fprintf(stderr, "tillsync: %s: out of memory\n", what);
        return 1;
    }
    const char *env = getenv("TILLSYNC_PASSPHRASE");
    if (file) {
        FILE *f = fopen(file, "rb");
        if (!f) {
            fprintf(stderr, "tillsync: %s: cannot open passphrase file %s: %s\n", what, file,
                    strerror(errno));
            pass_free(p);
            return 1;
        }
        size_t n = fread(p, 1, PASS_MAX - 1, f);
        fclose(f);
        p[n] = 0;
        if (memchr(p, 0, n) || chomp(p) == 0) {
            fprintf(stderr,
                    "tillsync: %s: passphrase file %s holds no passphrase on its first line\n",
                    what, file);
            pass_free(p);
            return 1;
        }
    } else if (env && *env) {
        snprintf(p, PASS_MAX, "%s", env);
    } else {
        int tty = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
        int rc = tty < 0 || !isatty(tty) ? -1 : ask(tty, "Passphrase: ", p);
        if (rc == 0 && confirm) {
            char *again = calloc(1, PASS_MAX);
            rc = again ? ask(tty, "Passphrase again: ", again) : -1;
            if (rc == 0 && strcmp(p, again) != 0) {
                fprintf(stderr, "tillsync: %s: the two passphrases differ\n", what);
                rc = 1;
            }
            pass_free(again);
        }
        if (tty >= 0) close(tty);
        if (rc == 0 && !*p) {
            fprintf(stderr, "tillsync: %s: the passphrase is empty\n", what);
            rc = 1;
        }
        if (rc != 0) {
            pass_free(p);
            if (rc < 0)
                return usage(confirm
                                 ? "backup --encrypt needs a passphrase: give --passphrase-file F, "
                                   "set TILLSYNC_PASSPHRASE, or run it on a terminal"
                                 : "the backup is encrypted: give --passphrase-file F, set "
                                   "TILLSYNC_PASSPHRASE, or run it on a terminal");
            return 1;
        }
    }
    *out = p;
    return 0;
}

/* For check and restore: the passphrase when path is encrypted (else *out stays NULL). */
static int passphrase_for(const char *path, const char *file, const char *what, char **out)
{
    *out = NULL;
    int enc = 0;
    if (tsync_backup_encrypted(&enc, path) != 0) return cli_fail(what);
    return enc ? get_passphrase(file, what, 0, out) : 0;
}

/* ---------------------------------------------------------------- progress */

typedef struct {
    int phase, pct;
} bar;

static void on_progress(void *ctx, tsync_backup_phase phase, uint64_t done, uint64_t total)
{
    bar *b = ctx;
    int pct = total ? (int)(done * 100 / total) : 0;
    if (pct > 100) pct = 100;
    if ((int)phase == b->phase && pct == b->pct) return;
    b->phase = (int)phase;
    b->pct = pct;
    static const char *const names[] = {"", "copying", "writing", "verifying", "restoring"};
    static const char full[] = "########################################";
    fprintf(stderr, "\r\033[K%-9s %3d%% [%-40.*s]", names[phase <= 4 ? phase : 0], pct,
            pct * 40 / 100, full);
}

static void bar_done(const bar *b)
{
    if (b->phase) fputs("\r\033[K", stderr);
}

/* ---------------------------------------------------------------- summaries */

static long long json_int(json_t *o, const char *path)
{
    return (long long)json_integer_value(json_object_get(o, path));
}

/* "1000000 rows in products, 3 in cart" from a manifest's tables. */
static void print_tables(json_t *m)
{
    size_t i;
    json_t *t;
    printf("  tables:     ");
    if (json_array_size(json_object_get(m, "tables")) == 0) printf("none");
    json_array_foreach(json_object_get(m, "tables"), i, t)
    {
        printf("%s%s %lld rows%s", i ? ", " : "", json_string_value(json_object_get(t, "name")),
               json_int(t, "rows"),
               json_is_true(json_object_get(t, "replicated")) ? "" : " (not replicated)");
    }
    printf("\n");
}

static void print_summary(const char *manifest)
{
    json_t *m = json_loads(manifest, 0, NULL);
    if (!m) return;
    json_t *src = json_object_get(m, "source"), *img = json_object_get(m, "image");
    printf("  created:    %s on %s\n", json_string_value(json_object_get(m, "created_at")),
           json_string_value(json_object_get(src, "host")));
    printf("  source:     %s, site %s\n", json_string_value(json_object_get(src, "database")),
           json_string_value(json_object_get(src, "site")));
    printf("  database:   %lld bytes, BLAKE2b-256 %s\n", json_int(img, "bytes"),
           json_string_value(json_object_get(img, "blake2b_256")));
    print_tables(m);
    printf("  batches:    %lld in the log, %zu sites in the version vector\n",
           json_int(m, "batches"), json_array_size(json_object_get(m, "vector")));
    json_decref(m);
}

/* ---------------------------------------------------------------- commands */

/* The options of backup, backup-check and restore. */
typedef struct {
    const char *pfile;
    int encrypt;
} backup_args;

static const struct option BACKUP_OPTS[] = {{"encrypt", no_argument, NULL, 'e'},
                                            {"passphrase-file", required_argument, NULL, 'p'},
                                            {"json", no_argument, NULL, 'j'},
                                            {NULL, 0, NULL, 0}};

static int on_backup_opt(void *ctx, int c, const char *v)
{
    backup_args *a = ctx;
    if (c == 'e') a->encrypt = 1;
    if (c == 'p') a->pfile = v;
    return 0;
}

/* BACKUP_OPTS without what cmd does not take: an option it lacks is unknown there. */
static int backup_parse(const char *cmd, int argc, char **argv, int allow_encrypt, int *json,
                        backup_args *a, const char **pos, int *npos)
{
    struct option opts[4];
    size_t k = 0;
    for (size_t i = 0; BACKUP_OPTS[i].name; i++)
        if ((BACKUP_OPTS[i].val != 'e' || allow_encrypt) && (BACKUP_OPTS[i].val != 'j' || json))
            opts[k++] = BACKUP_OPTS[i];
    memset(&opts[k], 0, sizeof opts[k]);
    return cli_parse(cmd, argc, argv, opts, NULL, json, on_backup_opt, a, pos, 3, npos);
}

int cmd_backup(int argc, char **argv)
{
    /* Cloud backup (tools/cmd_vault.c): backup list|delete DB --remote, backup DB --remote. */
    if (argc > 2 && !strcmp(argv[2], "list")) return cmd_vault_list(argc, argv);
    if (argc > 2 && !strcmp(argv[2], "delete")) return cmd_vault_delete(argc, argv);
    if (cmd_vault_wanted(argc, argv)) return cmd_vault_backup(argc, argv);

    const char *pos[3] = {NULL, NULL, NULL};
    backup_args a = {0};
    int npos;
    int prc = backup_parse("backup", argc, argv, 1, NULL, &a, pos, &npos);
    if (prc) return prc;
    if (npos > 2) return usage("backup takes DB and OUT");
    if (npos < 2) return usage("backup needs DB and OUT");
    const char *pfile = a.pfile;
    int encrypt = a.encrypt;
    if (pfile && !encrypt) return usage("backup: --passphrase-file goes with --encrypt");
    char *pass = NULL;
    int ret;
    if (encrypt && (ret = get_passphrase(pfile, "backup", 1, &pass))) return ret;
    tsync_store *s;
    if (cli_open(pos[0], CLI_RW_OR_RO, &s) != 0) {
        pass_free(pass);
        return 1;
    }
    bar b = {0, -1};
    tsync_backup_options o = TSYNC_BACKUP_OPTIONS_INIT;
    o.passphrase = pass;
    if (isatty(2)) {
        o.progress = on_progress;
        o.progress_ctx = &b;
    }
    char *manifest = NULL;
    int rc = tsync_backup(s, pos[1], &o, &manifest);
    bar_done(&b);
    pass_free(pass);
    tsync_store_free(s);
    if (rc != 0) return cli_fail("backup");
    printf("backup of %s written to %s (%s, verified)\n", pos[0], pos[1],
           encrypt ? "encrypted" : "not encrypted");
    print_summary(manifest);
    free(manifest);
    return 0;
}

int cmd_backup_check(int argc, char **argv)
{
    const char *pos[3] = {NULL, NULL, NULL};
    backup_args a = {0};
    int npos, json = 0;
    int prc = backup_parse("backup-check", argc, argv, 0, &json, &a, pos, &npos);
    if (prc) return prc;
    if (npos > 1) return usage("backup-check takes one FILE");
    if (npos < 1) return usage("backup-check needs FILE");
    const char *path = pos[0], *pfile = a.pfile;
    char *pass = NULL, *manifest = NULL;
    int ret = passphrase_for(path, pfile, "backup-check", &pass);
    if (ret) return ret;
    int enc = pass != NULL;
    int rc = tsync_backup_check(path, pass, &manifest);
    pass_free(pass);
    if (rc != 0) return cli_fail("backup-check");
    if (json) {
        json_t *o = json_pack("{s:s,s:b,s:b}", "file", path, "ok", 1, "encrypted", enc);
        json_t *m = json_loads(manifest, 0, NULL);
        json_object_set_new(o, "manifest", m ? m : json_string(manifest));
        char *txt = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(o);
        puts(txt ? txt : "{}");
        free(txt);
        free(manifest);
        return 0;
    }
    printf("%s: OK (%s; content hash, structure and database quick_check verified)\n", path,
           enc ? "encrypted, decrypts" : "not encrypted");
    printf("%s\n", manifest);
    free(manifest);
    return 0;
}

int cmd_restore(int argc, char **argv)
{
    if (cmd_vault_wanted(argc, argv)) return cmd_vault_restore(argc, argv); /* tools/cmd_vault.c */

    const char *pos[3] = {NULL, NULL, NULL};
    backup_args a = {0};
    int npos;
    int prc = backup_parse("restore", argc, argv, 0, NULL, &a, pos, &npos);
    if (prc) return prc;
    if (npos > 2) return usage("restore takes DB and FILE");
    if (npos < 2) return usage("restore needs DB and FILE");
    const char *pfile = a.pfile;
    const char *db = pos[0], *path = pos[1];
    char *pass = NULL;
    int ret = passphrase_for(path, pfile, "restore", &pass);
    if (ret) return ret;
    bar b = {0, -1};
    tsync_restore_options o = TSYNC_RESTORE_OPTIONS_INIT;
    o.passphrase = pass;
    if (isatty(2)) {
        o.progress = on_progress;
        o.progress_ctx = &b;
    }
    tsync_restore_report r = TSYNC_RESTORE_REPORT_INIT;
    int rc = tsync_restore(db, path, &o, &r);
    bar_done(&b);
    pass_free(pass);
    if (rc != 0) return cli_fail("restore");
    char site[33], old[33];
    sodium_bin2hex(site, sizeof site, r.site_id, sizeof r.site_id);
    sodium_bin2hex(old, sizeof old, r.backup_site_id, sizeof r.backup_site_id);
    json_t *m = json_loads(r.manifest_json, 0, NULL);
    printf("restored %s from %s (backup of site %s, made %s)\n", db, path, old,
           json_string_value(json_object_get(m, "created_at")));
    json_decref(m);
    if (r.new_key)
        printf(
            "no key file was there: made a new device key, site %s\n"
            "this till must enrol before its peers accept its sales: tillsync enrol-request %s\n",
            site, db);
    else
        printf("new site id %s (incarnation renewed: no sequence number is ever reused)\n", site);
    printf("sales made after the backup come back from the other tills: exchange bundles "
           "(tillsync bundle / merge) or let the node sync\n");
    tsync_restore_report_clear(&r);
    return 0;
}

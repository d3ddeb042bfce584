/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_net_discovery.c — the discovery seam (net/discovery.h): the strict TXT codec, the
 * static backend, and the avahi backend.
 *
 * Two kinds of tests. The first kind runs anywhere (CI): TXT parsing and encoding, the static
 * backend, and the avahi backend with no daemon reachable (DBUS_SYSTEM_BUS_ADDRESS pointed at a
 * socket that does not exist, so a machine's real bus and avahi-daemon are never touched): one
 * DAEMON_DOWN, no crash, no busy loop.
 *
 * The second kind (suite net_discovery_ns) needs its own avahi-daemon and dbus-daemon, which each
 * test starts and kills itself. They multicast, so they must never run in the machine's own
 * network namespace: these tests skip unless TSYNC_DISC_NS=1, and even then refuse to start a
 * daemon unless the process is in another network namespace than PID 1 and /run is the private
 * folder tests/disc/run.sh bind-mounts (it holds the marker file NS_MARKER). Run them with
 *   sudo tests/disc/run.sh BUILD_DIR
 * Each daemon is started with PR_SET_PDEATHSIG and killed by PID in the suite's fini.
 *
 * Every wait has a deadline. The tills are driven like the node will drive them: drain
 * tsync__disc_poll, then poll(2) on tsync__disc_fd for at most tsync__disc_timeout_ms.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "net/discovery.h"
#include "tillsync/common.h"

#define NS_MARKER "/run/tsdisc-private-run"
#define MAXTILLS  4
#define MAXSEEN   16

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *errmsg(void)
{
    return tsync_error_last() ? tsync_error_last()->message : "?";
}

/* ---------------------------------------------------------------- TXT helpers */

/* Builds rdata from NULL-terminated strings. */
static size_t rdata_of(uint8_t *out, size_t cap, const char *const *strs)
{
    size_t at = 0;
    for (; *strs; strs++) {
        size_t n = strlen(*strs);
        cr_assert(n < 256 && at + 1 + n <= cap);
        out[at++] = (uint8_t)n;
        memcpy(out + at, *strs, n);
        at += n;
    }
    return at;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    sodium_bin2hex(out, 2 * n + 1, p, n);
}

static void keypair(uint8_t pk[32])
{
    uint8_t sk[64];
    cr_assert(sodium_init() >= 0);
    crypto_sign_keypair(pk, sk);
}

TestSuite(net_discovery, .timeout = 60);

Test(net_discovery, txt_roundtrip)
{
    tsync__disc_txt t = {.version = 7, .has_shop = 1}, u;
    randombytes_buf(t.shop, sizeof t.shop);
    keypair(t.key);
    uint8_t buf[TSYNC__DISC_TXT_MAX];
    size_t n = tsync__disc_txt_encode(&t, buf, sizeof buf);
    cr_assert_gt(n, 0);
    char err[128];
    cr_assert_eq(tsync__disc_txt_parse(buf, n, &u, err, sizeof err), 0, "%s", err);
    cr_assert_eq(u.version, 7);
    cr_assert_eq(u.has_shop, 1);
    cr_assert_arr_eq(u.shop, t.shop, sizeof t.shop);
    cr_assert_arr_eq(u.key, t.key, sizeof t.key);

    t.has_shop = 0;
    t.version = 4294967295u;
    n = tsync__disc_txt_encode(&t, buf, sizeof buf);
    cr_assert_eq(tsync__disc_txt_parse(buf, n, &u, err, sizeof err), 0, "%s", err);
    cr_assert_eq(u.has_shop, 0);
    cr_assert_eq(u.version, 4294967295u);

    /* Too small a buffer: 0, never a partial record. */
    cr_assert_eq(tsync__disc_txt_encode(&t, buf, 10), 0);
    cr_assert_eq(tsync__disc_txt_encode(&t, buf, 0), 0);
}

/* Order does not matter (avahi reverses it), keys ignore case, unknown keys and empty strings are
 * skipped, upper-case hex is fine. */
Test(net_discovery, txt_lenient_where_rfc_says)
{
    uint8_t pk[32], shop[16];
    keypair(pk);
    randombytes_buf(shop, sizeof shop);
    char pkhex[65], shophex[33], pkitem[80], shopitem[48];
    hex(pk, 32, pkhex);
    hex(shop, 16, shophex);
    for (char *p = shophex; *p; p++)
        if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 'a' + 'A');
    snprintf(pkitem, sizeof pkitem, "PK=%s", pkhex);
    snprintf(shopitem, sizeof shopitem, "Shop=%s", shophex);
    const char *strs[] = {"future=whatever", pkitem, "", "=ignored", "flag", shopitem, "V=12",
                          "future=again",    NULL};
    uint8_t buf[512];
    size_t n = rdata_of(buf, sizeof buf, strs);
    tsync__disc_txt t;
    char err[128];
    cr_assert_eq(tsync__disc_txt_parse(buf, n, &t, err, sizeof err), 0, "%s", err);
    cr_assert_eq(t.version, 12);
    cr_assert_eq(t.has_shop, 1);
    cr_assert_arr_eq(t.shop, shop, 16);
    cr_assert_arr_eq(t.key, pk, 32);
}

Test(net_discovery, txt_malformed_is_refused)
{
    uint8_t pk[32];
    keypair(pk);
    char pkhex[65], good_pk[80], short_pk[80], long_pk[90], bad_pk[80], zero_pk[80];
    hex(pk, 32, pkhex);
    snprintf(good_pk, sizeof good_pk, "pk=%s", pkhex);
    snprintf(short_pk, sizeof short_pk, "pk=%.63s", pkhex);
    snprintf(long_pk, sizeof long_pk, "pk=%s0", pkhex);
    snprintf(bad_pk, sizeof bad_pk, "pk=%.63sg", pkhex);
    snprintf(zero_pk, sizeof zero_pk, "pk=%064d", 0); /* a small-order point, not a key */
    const char *cases[][5] = {
        {"v=1", NULL},                                                   /* no pk */
        {good_pk, NULL},                                                 /* no v */
        {"v=01", good_pk, NULL},                                         /* leading zero */
        {"v=-1", good_pk, NULL},                                         /* sign */
        {"v=+1", good_pk, NULL},                                         /* sign */
        {"v=", good_pk, NULL},                                           /* empty */
        {"v", good_pk, NULL},                                            /* no value */
        {"v=1a", good_pk, NULL},                                         /* not decimal */
        {"v= 1", good_pk, NULL},                                         /* space */
        {"v=4294967296", good_pk, NULL},                                 /* 2^32 */
        {"v=12345678901", good_pk, NULL},                                /* 11 digits */
        {"v=1", "v=1", good_pk, NULL},                                   /* twice */
        {"v=1", "V=2", good_pk, NULL},                                   /* twice, other case */
        {"v=1", short_pk, NULL},                                         /* 63 hex digits */
        {"v=1", long_pk, NULL},                                          /* 65 hex digits */
        {"v=1", bad_pk, NULL},                                           /* not hex */
        {"v=1", zero_pk, NULL},                                          /* not a valid key */
        {"v=1", "pk", NULL},                                             /* no value */
        {"v=1", good_pk, "shop=0011", NULL},                             /* short shop */
        {"v=1", good_pk, "shop=", NULL},                                 /* empty shop */
        {"v=1", good_pk, "shop=00112233445566778899aabbccddeefg", NULL}, /* not hex */
        {"v=1", good_pk, "shop=00112233445566778899aabbccddeeff", "shop=00", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t buf[512];
        size_t n = rdata_of(buf, sizeof buf, cases[i]);
        tsync__disc_txt t;
        char err[128] = "";
        int rc = tsync__disc_txt_parse(buf, n, &t, err, sizeof err);
        cr_assert_eq(rc, TSYNC_ECORRUPT, "case %zu (%s, %s) parsed", i, cases[i][0],
                     cases[i][1] ? cases[i][1] : "");
        cr_assert(err[0] && !strchr(err, '\n'), "case %zu: message '%s'", i, err);
    }

    /* Framing: a length byte running past the end, in the first or a later string. */
    const char *ok[] = {"v=1", good_pk, NULL};
    uint8_t buf[512];
    size_t n = rdata_of(buf, sizeof buf, ok);
    tsync__disc_txt t;
    char err[128];
    cr_assert_eq(tsync__disc_txt_parse(buf, n, &t, err, sizeof err), 0, "%s", err);
    cr_assert_eq(tsync__disc_txt_parse(buf, n - 1, &t, err, sizeof err), TSYNC_ECORRUPT);
    buf[n] = 5;
    cr_assert_eq(tsync__disc_txt_parse(buf, n + 1, &t, err, sizeof err), TSYNC_ECORRUPT);
    uint8_t one = 200;
    cr_assert_eq(tsync__disc_txt_parse(&one, 1, &t, err, sizeof err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "runs past the end"), "%s", err);
    /* Empty TXT (no bytes, or avahi's single zero byte): no v. errlen 0 is allowed. */
    uint8_t zero = 0;
    cr_assert_eq(tsync__disc_txt_parse(&zero, 1, &t, NULL, 0), TSYNC_ECORRUPT);
    cr_assert_eq(tsync__disc_txt_parse(NULL, 0, &t, err, sizeof err), TSYNC_ECORRUPT);
}

/* ---------------------------------------------------------------- static backend */

Test(net_discovery, static_reports_each_once)
{
    uint8_t pk[32];
    keypair(pk);
    char pkhex[65], withkey[200];
    hex(pk, 32, pkhex);
    snprintf(withkey, sizeof withkey, "tcp://10.0.0.2:7400#%s", pkhex);
    const char *eps[] = {"tcp://relay.example.com:7400", withkey, "tcp://[fe80::1%eth0]:7401",
                         "tcp://relay.example.com:7400"};
    tsync__disc *d = NULL;
    cr_assert_eq(tsync__disc_static_new(&d, eps, 4), 0, "%s", errmsg());
    cr_assert_eq(tsync__disc_fd(d), -1);
    cr_assert_eq(tsync__disc_timeout_ms(d), 0);
    cr_assert_null(tsync__disc_self_name(d));
    tsync__disc_event ev;
    cr_assert_eq(tsync__disc_poll(d, &ev), 1);
    cr_assert_eq(ev.kind, TSYNC__DISC_FOUND);
    cr_assert_str_eq(ev.endpoint, "tcp://relay.example.com:7400");
    cr_assert_str_eq(ev.name, "tcp://relay.example.com:7400");
    cr_assert_eq(ev.has_key, 0);
    cr_assert_eq(ev.has_shop, 0);
    cr_assert_eq(tsync__disc_poll(d, &ev), 1);
    cr_assert_str_eq(ev.endpoint, "tcp://10.0.0.2:7400");
    cr_assert_eq(ev.has_key, 1);
    cr_assert_arr_eq(ev.key, pk, 32);
    cr_assert_eq(tsync__disc_poll(d, &ev), 1);
    cr_assert_str_eq(ev.endpoint, "tcp://[fe80::1%eth0]:7401");
    /* The duplicate is one peer. */
    cr_assert_eq(tsync__disc_poll(d, &ev), 0);
    cr_assert_eq(tsync__disc_poll(d, &ev), 0);
    cr_assert_eq(tsync__disc_timeout_ms(d), -1);
    tsync__disc_stats st;
    tsync__disc_stats_get(d, &st);
    cr_assert_eq(st.found, 3);
    cr_assert_eq(st.lost, 0);
    tsync__disc_free(d);
    tsync__disc_free(NULL);

    cr_assert_eq(tsync__disc_static_new(&d, NULL, 0), 0);
    cr_assert_eq(tsync__disc_poll(d, &ev), 0);
    cr_assert_eq(tsync__disc_timeout_ms(d), -1);
    tsync__disc_free(d);
}

Test(net_discovery, static_refuses_bad_specs)
{
    const char *bad[] = {
        "",
        "tcp://",
        "udp://1.2.3.4:7400",
        "1.2.3.4:7400",
        "tcp://1.2.3.4",
        "tcp://1.2.3.4:",
        "tcp://:7400",
        "tcp://1.2.3.4:0",
        "tcp://1.2.3.4:65536",
        "tcp://1.2.3.4:74a0",
        "tcp://1.2.3.4:123456",
        "tcp://fe80::1:7400", /* IPv6 needs brackets: "fe80::1" is not a host name */
        "tcp://[]:7400",
        "tcp://[::1]7400",
        "tcp://host name:7400",
        "tcp://a;b:7400",
        "tcp://1.2.3.4:7400#",
        "tcp://1.2.3.4:7400#abcd",
        "tcp://1.2.3.4:7400#0000000000000000000000000000000000000000000000000000000000000000",
        "tcp://1.2.3.4:7400#zz00000000000000000000000000000000000000000000000000000000000000",
        "tcp://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:7400",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *one[] = {"tcp://10.0.0.1:7400", bad[i]};
        tsync__disc *d = (tsync__disc *)1;
        int rc = tsync__disc_static_new(&d, one, 2);
        cr_assert_eq(rc, TSYNC_EINVAL, "'%s' accepted", bad[i]);
        cr_assert_null(d);
        cr_assert(strstr(errmsg(), "peer '") != NULL, "message: %s", errmsg());
    }
    const char *withnull[] = {"tcp://10.0.0.1:7400", NULL};
    tsync__disc *d = NULL;
    cr_assert_eq(tsync__disc_static_new(&d, withnull, 2), TSYNC_EINVAL);
    cr_assert_eq(tsync__disc_static_new(&d, NULL, 1), TSYNC_EINVAL);
}

/* ---------------------------------------------------------------- driving tills */

typedef struct {
    tsync__disc *d;
    uint8_t pk[32];
    int counts[8]; /* events by kind */
    int nev;
    int kinds[256]; /* the first 256 event kinds, in order */
    int nseen;
    tsync__disc_event seen[MAXSEEN]; /* names FOUND and not LOST, with their latest event */
    int saw_self;                    /* reported our own key */
} till;

static void till_record(till *t, const tsync__disc_event *ev)
{
    cr_assert(ev->kind >= 1 && ev->kind <= 4, "event kind %d", ev->kind);
    t->counts[ev->kind]++;
    if (t->nev < 256) t->kinds[t->nev] = ev->kind;
    t->nev++;
    if (ev->kind != TSYNC__DISC_FOUND && ev->kind != TSYNC__DISC_LOST) return;
    if (ev->has_key && !memcmp(ev->key, t->pk, 32)) t->saw_self = 1;
    int i;
    for (i = 0; i < t->nseen; i++)
        if (!strcmp(t->seen[i].name, ev->name)) break;
    if (ev->kind == TSYNC__DISC_LOST) {
        cr_assert_lt(i, t->nseen, "LOST for '%s', never FOUND", ev->name);
        t->seen[i] = t->seen[--t->nseen];
        return;
    }
    cr_assert(ev->endpoint[0] && ev->has_key, "FOUND '%s' without endpoint or key", ev->name);
    if (i == t->nseen) {
        cr_assert_lt(t->nseen, MAXSEEN);
        t->nseen++;
    }
    t->seen[i] = *ev;
}

static const tsync__disc_event *till_sees(const till *t, const char *name)
{
    for (int i = 0; i < t->nseen; i++)
        if (!strcmp(t->seen[i].name, name)) return &t->seen[i];
    return NULL;
}

static const tsync__disc_event *till_sees_key(const till *t, const uint8_t *pk)
{
    for (int i = 0; i < t->nseen; i++)
        if (!memcmp(t->seen[i].key, pk, 32)) return &t->seen[i];
    return NULL;
}

static void till_free(till *t)
{
    tsync__disc_free(t->d);
    t->d = NULL;
}

/* Drives the tills like a node's loop until cond holds or ms pass; returns whether it held.
 * *wakeups counts the loop turns (a busy loop shows as thousands). */
static int pump_(till **ts, size_t n, int ms, int (*cond)(void *), void *arg, int *wakeups)
{
    int64_t end = now_ms() + ms;
    for (;;) {
        for (size_t i = 0; i < n; i++) {
            tsync__disc_event ev;
            int rc;
            while (ts[i]->d && (rc = tsync__disc_poll(ts[i]->d, &ev)) == 1) till_record(ts[i], &ev);
        }
        if (cond && cond(arg)) return 1;
        int64_t left = end - now_ms();
        if (left <= 0) return 0;
        struct pollfd pf[MAXTILLS];
        nfds_t np = 0;
        int wait = (int)left;
        for (size_t i = 0; i < n; i++) {
            if (!ts[i]->d) continue;
            int fd = tsync__disc_fd(ts[i]->d), tmo = tsync__disc_timeout_ms(ts[i]->d);
            if (fd >= 0) pf[np++] = (struct pollfd){.fd = fd, .events = POLLIN};
            if (tmo >= 0 && tmo < wait) wait = tmo;
        }
        if (wakeups) (*wakeups)++;
        poll(pf, np, wait);
    }
}

static till *new_till(const char *name, uint16_t port, uint32_t version, const uint8_t *shop)
{
    till *t = calloc(1, sizeof *t);
    cr_assert(t);
    keypair(t->pk);
    tsync__disc_self self = {.version = version, .port = port, .name = name};
    memcpy(self.key, t->pk, 32);
    if (shop) {
        self.has_shop = 1;
        memcpy(self.shop, shop, 16);
    }
    int rc = tsync__disc_avahi_new(&t->d, &self);
    cr_assert_eq(rc, 0, "tsync__disc_avahi_new: %s", errmsg());
    return t;
}

/* No daemon reachable: one DAEMON_DOWN, nothing else, no busy loop, and free works. The bus
 * address points at a socket that does not exist, so this never reaches a real daemon. */
Test(net_discovery, avahi_without_daemon)
{
    char addr[128];
    snprintf(addr, sizeof addr, "unix:path=/nonexistent/tsdisc-%d/system_bus_socket",
             (int)getpid());
    setenv("DBUS_SYSTEM_BUS_ADDRESS", addr, 1);
    till *a = new_till("till A", 7401, 1, NULL);
    till *ts[] = {a};
    int wake = 0;
    pump_(ts, 1, 2500, NULL, NULL, &wake);
    cr_assert_eq(a->counts[TSYNC__DISC_DAEMON_DOWN], 1);
    cr_assert_eq(a->nev, 1, "%d events", a->nev);
    cr_assert_lt(wake, 30, "%d wake-ups in 2.5 s: a busy loop", wake);
    cr_assert_gt(tsync__disc_timeout_ms(a->d), 0);
    tsync__disc_stats st;
    tsync__disc_stats_get(a->d, &st);
    cr_assert(st.connects >= 2 && st.connects <= 6, "%llu connection attempts",
              (unsigned long long)st.connects);
    cr_assert_eq(st.daemon_down, 1);
    cr_assert_str_eq(tsync__disc_self_name(a->d), "till A");
    till_free(a);
    free(a);
}

Test(net_discovery, avahi_refuses_bad_names)
{
    setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/tsdisc", 1);
    tsync__disc_self self = {.version = 1, .port = 7400, .name = ""};
    tsync__disc *d = NULL;
    cr_assert_eq(tsync__disc_avahi_new(&d, &self), TSYNC_EINVAL);
    char longname[80];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    self.name = longname;
    cr_assert_eq(tsync__disc_avahi_new(&d, &self), TSYNC_EINVAL);
    cr_assert_eq(tsync__disc_avahi_new(&d, NULL), TSYNC_EINVAL);
    /* The default name comes from the key. */
    self.name = NULL;
    memset(self.key, 0xab, sizeof self.key);
    cr_assert_eq(tsync__disc_avahi_new(&d, &self), 0, "%s", errmsg());
    cr_assert_str_eq(tsync__disc_self_name(d), "tillsync-abababab");
    tsync__disc_free(d);
}

/* ---------------------------------------------------------------- with daemons (namespace) */

static pid_t dbus_pid, avahi_pid, pub_pids[8];
static int npub;
static char workdir[64];

static void kill_wait(pid_t *pid, int sig)
{
    if (*pid > 0) {
        kill(*pid, sig);
        waitpid(*pid, NULL, 0);
    }
    *pid = 0;
}

static void ns_fini(void)
{
    for (int i = 0; i < npub; i++) kill_wait(&pub_pids[i], SIGKILL);
    npub = 0;
    kill_wait(&avahi_pid, SIGTERM);
    kill_wait(&dbus_pid, SIGTERM);
    if (workdir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", workdir);
        if (system(cmd) != 0) cr_log_warn("could not remove %s", workdir);
    }
}

TestSuite(net_discovery_ns, .fini = ns_fini, .timeout = 120);

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* Skips unless asked for; refuses (fails) unless in a private namespace with a private /run. */
static void ns_require(void)
{
    const char *e = getenv("TSYNC_DISC_NS");
    if (!e || strcmp(e, "1") != 0)
        cr_skip_test("needs its own avahi-daemon: run tests/disc/run.sh (TSYNC_DISC_NS=1)");
    cr_assert(!same_file("/proc/self/ns/net", "/proc/1/ns/net"),
              "TSYNC_DISC_NS=1 but this is the machine's network namespace: refusing to start "
              "avahi-daemon here (use tests/disc/run.sh)");
    cr_assert(access(NS_MARKER, F_OK) == 0,
              "TSYNC_DISC_NS=1 but /run is not the private folder of tests/disc/run.sh "
              "(no " NS_MARKER ")");
    unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
    snprintf(workdir, sizeof workdir, "/tmp/tsdisc-test-XXXXXX");
    cr_assert(mkdtemp(workdir), "mkdtemp: %s", strerror(errno));
    char conf[128];
    snprintf(conf, sizeof conf, "%s/avahi.conf", workdir);
    FILE *f = fopen(conf, "w");
    cr_assert(f);
    fputs("[server]\nhost-name=tsdisc\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=lo\n"
          "enable-dbus=yes\nratelimit-interval-usec=1000000\nratelimit-burst=1000\n"
          "[wide-area]\nenable-wide-area=no\n[publish]\npublish-hinfo=no\n"
          "publish-workstation=no\n",
          f);
    fclose(f);
    mkdir("/run/dbus", 0755);
    mkdir("/run/avahi-daemon", 0755);
    if (chown("/run/avahi-daemon", 102, 105) != 0) { /* best effort; avahi fixes it itself */
    }
}

static pid_t spawn(const char *log, char *const argv[])
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int wait_for(int ms, int (*cond)(void))
{
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        if (cond()) return 1;
        usleep(20000);
    }
    return cond();
}

static int bus_ready(void)
{
    return access("/run/dbus/system_bus_socket", F_OK) == 0;
}

static char avahi_log[128];
static int avahi_ready(void)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "grep -q 'Server startup complete' '%s' 2>/dev/null", avahi_log);
    return system(cmd) == 0;
}

static void start_dbus(void)
{
    unlink("/run/dbus/system_bus_socket");
    char *argv[] = {"dbus-daemon", "--system", "--nofork", "--nopidfile", NULL};
    dbus_pid = spawn(NULL, argv);
    cr_assert(wait_for(5000, bus_ready), "dbus-daemon did not start");
}

static void start_avahi(void)
{
    static int gen;
    char conf[128];
    snprintf(conf, sizeof conf, "%s/avahi.conf", workdir);
    snprintf(avahi_log, sizeof avahi_log, "%s/avahi-%d.log", workdir, gen++);
    unlink("/run/avahi-daemon/pid");
    char *argv[] = {"avahi-daemon", "-f", conf, "--no-rlimits", "--no-chroot", NULL};
    avahi_pid = spawn(avahi_log, argv);
    cr_assert(wait_for(10000, avahi_ready), "avahi-daemon did not start (log %s)", avahi_log);
}

static void start_daemons(void)
{
    start_dbus();
    start_avahi();
}

static pid_t publish_raw(char *const argv[])
{
    cr_assert_lt(npub, 8);
    pid_t pid = spawn(NULL, argv);
    pub_pids[npub++] = pid;
    return pid;
}

typedef struct {
    till *a, *b;
    const char *name_a, *name_b; /* NULL: by key */
} pair;

static int see_each_other(void *arg)
{
    pair *p = arg;
    return till_sees_key(p->a, p->b->pk) && till_sees_key(p->b, p->a->pk);
}

static int see_neither(void *arg)
{
    pair *p = arg;
    return !till_sees_key(p->a, p->b->pk) && !till_sees_key(p->b, p->a->pk);
}

static int a_lost_b(void *arg)
{
    pair *p = arg;
    return !till_sees_key(p->a, p->b->pk);
}

Test(net_discovery_ns, two_tills_find_each_other)
{
    ns_require();
    start_daemons();
    uint8_t shop[16];
    randombytes_buf(shop, sizeof shop);
    till *a = new_till("till A", 7401, 3, shop), *b = new_till("till B", 7402, 4, NULL);
    till *ts[] = {a, b};
    pair p = {a, b, NULL, NULL};
    int64_t t0 = now_ms();
    cr_assert(pump_(ts, 2, 15000, see_each_other, &p, NULL), "the tills did not find each other");
    cr_log_info("found each other %lld ms after creation", (long long)(now_ms() - t0));

    const tsync__disc_event *eb = till_sees(a, "till B"), *ea = till_sees(b, "till A");
    cr_assert(eb && ea);
    cr_assert_str_eq(eb->endpoint, "tcp://127.0.0.1:7402");
    cr_assert_str_eq(ea->endpoint, "tcp://127.0.0.1:7401");
    cr_assert_eq(eb->version, 4);
    cr_assert_eq(ea->version, 3);
    cr_assert_eq(eb->has_shop, 0);
    cr_assert_eq(ea->has_shop, 1);
    cr_assert_arr_eq(ea->shop, shop, 16);
    cr_assert_arr_eq(ea->key, a->pk, 32);
    cr_assert_arr_eq(eb->key, b->pk, 32);
    cr_assert_gt(ea->interface, 0);

    /* Settle, then check the own service never came and nothing came twice. */
    pump_(ts, 2, 1500, NULL, NULL, NULL);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(ts[i]->saw_self, 0);
        cr_assert_eq(ts[i]->nseen, 1);
        cr_assert_eq(ts[i]->counts[TSYNC__DISC_FOUND], 1);
        cr_assert_eq(ts[i]->counts[TSYNC__DISC_DAEMON_UP], 1);
        cr_assert_eq(ts[i]->counts[TSYNC__DISC_DAEMON_DOWN], 0);
        cr_assert_eq(ts[i]->kinds[0], TSYNC__DISC_DAEMON_UP);
        tsync__disc_stats st;
        tsync__disc_stats_get(ts[i]->d, &st);
        cr_assert_geq(st.own, 1, "the own service was never seen (and skipped)");
        cr_assert_eq(st.malformed, 0);
    }

    /* B goes: A hears of it. */
    till_free(b);
    t0 = now_ms();
    cr_assert(pump_(ts, 2, 10000, a_lost_b, &p, NULL), "no LOST after the other till left");
    cr_log_info("LOST %lld ms after the other till was freed", (long long)(now_ms() - t0));
    cr_assert_eq(a->counts[TSYNC__DISC_LOST], 1);
    till_free(a);
    free(a);
    free(b);
}

Test(net_discovery_ns, name_collision_renames)
{
    ns_require();
    start_daemons();
    till *a = new_till("till", 7401, 1, NULL), *b = new_till("till", 7402, 1, NULL);
    till *ts[] = {a, b};
    pair p = {a, b, NULL, NULL};
    cr_assert(pump_(ts, 2, 15000, see_each_other, &p, NULL), "the tills did not find each other");
    const char *na = tsync__disc_self_name(a->d), *nb = tsync__disc_self_name(b->d);
    cr_assert_str_neq(na, nb);
    cr_assert(!strcmp(na, "till") || !strcmp(nb, "till"), "%s / %s", na, nb);
    cr_assert(!strcmp(na, "till #2") || !strcmp(nb, "till #2"), "%s / %s", na, nb);
    cr_assert_str_eq(till_sees_key(a, b->pk)->name, nb);
    cr_assert_str_eq(till_sees_key(b, a->pk)->name, na);
    tsync__disc_stats sa, sb;
    tsync__disc_stats_get(a->d, &sa);
    tsync__disc_stats_get(b->d, &sb);
    cr_assert_eq(sa.collisions + sb.collisions, 1);
    till_free(a);
    till_free(b);
    free(a);
    free(b);
}

/* The tills start before any daemon: one DAEMON_DOWN each and quiet; then dbus and avahi come
 * up and the same objects publish and find each other. */
Test(net_discovery_ns, daemon_starts_later)
{
    ns_require();
    till *a = new_till("till A", 7401, 1, NULL), *b = new_till("till B", 7402, 1, NULL);
    till *ts[] = {a, b};
    int wake = 0;
    pump_(ts, 2, 2000, NULL, NULL, &wake);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(ts[i]->nev, 1);
        cr_assert_eq(ts[i]->kinds[0], TSYNC__DISC_DAEMON_DOWN);
    }
    cr_assert_lt(wake, 40, "%d wake-ups in 2 s: a busy loop", wake);
    cr_log_info("no daemon: %d wake-ups in 2 s", wake);
    start_daemons();
    int64_t t0 = now_ms();
    pair p = {a, b, NULL, NULL};
    cr_assert(pump_(ts, 2, 20000, see_each_other, &p, NULL),
              "the tills did not find each other after the daemon came");
    cr_log_info("found each other %lld ms after the daemon was up", (long long)(now_ms() - t0));
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(ts[i]->counts[TSYNC__DISC_DAEMON_DOWN], 1);
        cr_assert_eq(ts[i]->counts[TSYNC__DISC_DAEMON_UP], 1);
        cr_assert_eq(ts[i]->kinds[1], TSYNC__DISC_DAEMON_UP);
    }
    till_free(a);
    till_free(b);
    free(a);
    free(b);
}

/* avahi-daemon killed (SIGKILL) and started again: DAEMON_DOWN and LOST, then DAEMON_UP and
 * both re-published and found again, with the same objects. Then the bus goes too. */
Test(net_discovery_ns, daemon_restart_republishes)
{
    ns_require();
    start_daemons();
    till *a = new_till("till A", 7401, 1, NULL), *b = new_till("till B", 7402, 1, NULL);
    till *ts[] = {a, b};
    pair p = {a, b, NULL, NULL};
    cr_assert(pump_(ts, 2, 15000, see_each_other, &p, NULL));

    kill_wait(&avahi_pid, SIGKILL);
    int64_t t0 = now_ms();
    cr_assert(pump_(ts, 2, 10000, see_neither, &p, NULL), "no LOST after the daemon died");
    cr_log_info("LOST %lld ms after the daemon was killed", (long long)(now_ms() - t0));
    pump_(ts, 2, 1000, NULL, NULL, NULL);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(ts[i]->counts[TSYNC__DISC_DAEMON_DOWN], 1);
        cr_assert_eq(ts[i]->counts[TSYNC__DISC_LOST], 1);
    }

    start_avahi();
    t0 = now_ms();
    cr_assert(pump_(ts, 2, 20000, see_each_other, &p, NULL),
              "not found again after the daemon restarted");
    cr_log_info("found again %lld ms after the daemon restarted", (long long)(now_ms() - t0));
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(ts[i]->counts[TSYNC__DISC_DAEMON_UP], 2);
        cr_assert_eq(ts[i]->counts[TSYNC__DISC_FOUND], 2);
    }

    /* The whole bus goes (avahi with it), then both come back: retried on a timer. */
    kill_wait(&avahi_pid, SIGKILL);
    kill_wait(&dbus_pid, SIGKILL);
    cr_assert(pump_(ts, 2, 10000, see_neither, &p, NULL), "no LOST after the bus died");
    int wake = 0;
    pump_(ts, 2, 2000, NULL, NULL, &wake);
    cr_assert_lt(wake, 40, "%d wake-ups in 2 s without a bus: a busy loop", wake);
    for (int i = 0; i < 2; i++) cr_assert_eq(ts[i]->counts[TSYNC__DISC_DAEMON_DOWN], 2);
    cr_log_info("no bus: %d wake-ups in 2 s", wake);
    start_daemons();
    t0 = now_ms();
    cr_assert(pump_(ts, 2, 20000, see_each_other, &p, NULL),
              "not found again after the bus and daemon restarted");
    cr_log_info("found again %lld ms after bus and daemon restarted", (long long)(now_ms() - t0));
    for (int i = 0; i < 2; i++) cr_assert_eq(ts[i]->counts[TSYNC__DISC_DAEMON_UP], 3);
    till_free(a);
    till_free(b);
    free(a);
    free(b);
}

typedef struct {
    till *t;
    const char *name;
    const char *endpoint;
} sees_arg;

static int sees_at(void *arg)
{
    sees_arg *s = arg;
    const tsync__disc_event *ev = till_sees(s->t, s->name);
    return ev && (!s->endpoint || !strcmp(ev->endpoint, s->endpoint));
}

/* Services published with avahi-publish: a malformed TXT and our own key are ignored (and
 * counted), a good one is found; the good one's address changes and it is FOUND again. */
Test(net_discovery_ns, foreign_services)
{
    ns_require();
    start_daemons();
    till *a = new_till("till A", 7401, 1, NULL);
    till *ts[] = {a};
    uint8_t other[32];
    keypair(other);
    char pk_other[80], pk_self[80], pk_short[80];
    strcpy(pk_other, "pk=");
    hex(other, 32, pk_other + 3);
    strcpy(pk_self, "pk=");
    hex(a->pk, 32, pk_self + 3);
    snprintf(pk_short, sizeof pk_short, "%.66s", pk_other);
    char *bad1[] = {"avahi-publish", "-s",  "bad short pk", TSYNC__DISC_SERVICE_TYPE,
                    "7403",          "v=1", pk_short,       NULL};
    char *bad2[] = {"avahi-publish", "-s",    "bad version", TSYNC__DISC_SERVICE_TYPE,
                    "7404",          "v=1.0", pk_other,      NULL};
    char *mine[] = {"avahi-publish", "-s",  "clone of A", TSYNC__DISC_SERVICE_TYPE,
                    "7405",          "v=1", pk_self,      NULL};
    char *addr1[] = {"avahi-publish", "-a", "-R", "elsewhere.local", "10.77.0.1", NULL};
    char *good[] = {"avahi-publish",
                    "-s",
                    "-H",
                    "elsewhere.local",
                    "good",
                    TSYNC__DISC_SERVICE_TYPE,
                    "7406",
                    "v=2",
                    "extra=ignored",
                    pk_other,
                    NULL};
    publish_raw(bad1);
    publish_raw(bad2);
    publish_raw(mine);
    pid_t a1 = publish_raw(addr1);
    publish_raw(good);
    sees_arg s = {a, "good", "tcp://10.77.0.1:7406"};
    cr_assert(pump_(ts, 1, 15000, sees_at, &s, NULL), "the good service was not found");
    pump_(ts, 1, 2000, NULL, NULL, NULL);
    cr_assert_eq(a->nseen, 1, "%d services reported", a->nseen);
    const tsync__disc_event *ev = till_sees(a, "good");
    cr_assert_eq(ev->version, 2);
    cr_assert_arr_eq(ev->key, other, 32);
    tsync__disc_stats st;
    tsync__disc_stats_get(a->d, &st);
    cr_assert_geq(st.malformed, 2, "malformed %llu", (unsigned long long)st.malformed);
    cr_assert_geq(st.own, 2, "own %llu", (unsigned long long)st.own); /* ours + the clone */

    /* The host of "good" moves: its resolver reports the new address. */
    for (int i = 0; i < npub; i++)
        if (pub_pids[i] == a1) kill_wait(&pub_pids[i], SIGTERM);
    char *addr2[] = {"avahi-publish", "-a", "-R", "elsewhere.local", "10.77.0.2", NULL};
    publish_raw(addr2);
    s.endpoint = "tcp://10.77.0.2:7406";
    int64_t t0 = now_ms();
    cr_assert(pump_(ts, 1, 15000, sees_at, &s, NULL), "the new address was not reported (%s)",
              till_sees(a, "good") ? till_sees(a, "good")->endpoint : "lost");
    tsync__disc_stats_get(a->d, &st);
    cr_log_info("new address %lld ms after the move; events: FOUND %d LOST %d; resolver "
                "failures %llu",
                (long long)(now_ms() - t0), a->counts[TSYNC__DISC_FOUND],
                a->counts[TSYNC__DISC_LOST], (unsigned long long)st.resolve_failed);
    cr_assert_geq(a->counts[TSYNC__DISC_FOUND], 2);
    till_free(a);
    free(a);
}

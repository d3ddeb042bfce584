/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_relay_procs.h — bench_relay's other processes: the relay (`tillsync relay run`,
 * exec'd so its RSS and CPU are its own), with --nats a nats-server with JetStream on loopback
 * for the relay's store, and what is read of them (/proc: RSS, RssAnon, CPU; store bytes). Every
 * process is stopped by its PID. Part of bench_relay (included once, by bench/bench_relay.c).
 */
#ifndef TSYNC_BENCH_BENCH_RELAY_PROCS_H
#define TSYNC_BENCH_BENCH_RELAY_PROCS_H

#include <ftw.h>

#include "tests/lib/nats_server.h"

static pid_t relay_pid = -1, base_pid = -1, nats_pid = -1;

/* Stops what this process started, by PID: the relay before the NATS server it uses. */
static void kill_kids(void)
{
    if (relay_pid > 0) kill(relay_pid, SIGTERM), waitpid(relay_pid, NULL, 0), relay_pid = -1;
    if (base_pid > 0) kill(base_pid, SIGTERM), waitpid(base_pid, NULL, 0), base_pid = -1;
    if (nats_pid > 0) kill(nats_pid, SIGTERM), waitpid(nats_pid, NULL, 0), nats_pid = -1;
}

/* SIGINT / SIGTERM: the processes started here stop too (kill and waitpid are
 * async-signal-safe), then the signal ends this one as it would have. */
static void on_stop_signal(int sig)
{
    kill_kids();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* The last non-empty line of a file (for a relay that refused to start). */
static const char *last_line(const char *path)
{
    static char out[512];
    char line[512];
    out[0] = 0;
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (line[0] != '\n') snprintf(out, sizeof out, "%s", line);
    if (f) fclose(f);
    out[strcspn(out, "\n")] = 0;
    return out;
}

/* Runs argv[0] with argv in a child process, its stdout and stderr in log; its PID. */
static pid_t spawn(const char *const *argv, const char *log)
{
    fflush(NULL);
    pid_t pid = fork();
    BENCH_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(127);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Execs `tillsync relay run DIR --listen tcp://127.0.0.1:* [--store URL]`, its log in
 * relay.log; waits for "listening on ENDPOINT". */
static void relay_start(const char *dir, char *ep, size_t n)
{
    const char *log = bench_path("relay.log");
    const char *argv[] = {C.cli, "relay", "run", dir, "--listen", "tcp://127.0.0.1:*",
                          NULL,  NULL,    NULL};
    if (C.store) argv[6] = "--store", argv[7] = C.store;
    relay_pid = spawn(argv, log);
    for (int i = 0; i < 600; i++) {
        usleep(50000);
        int st;
        if (waitpid(relay_pid, &st, WNOHANG) == relay_pid) {
            relay_pid = -1;
            bench_fail(__FILE__, __LINE__, "the relay did not start%s%s (exit status %d): %s",
                       C.store ? " with --store " : "", C.store ? C.store : "",
                       WIFEXITED(st) ? WEXITSTATUS(st) : -1, last_line(log));
        }
        FILE *f = fopen(log, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            char *p = strstr(line, "listening on ");
            if (!p) continue;
            snprintf(ep, n, "%s", p + 13);
            ep[strcspn(ep, "\n")] = 0;
            fclose(f);
            return;
        }
        if (f) fclose(f);
    }
    bench_fail(__FILE__, __LINE__, "the relay did not say where it listens (%s)", log);
}

/* RSS and anonymous RSS (KiB) and CPU seconds (user + system) of a process. */
static void proc_sample(pid_t pid, long *rss, long *anon, double *cpu)
{
    char path[64], line[512];
    bench_proc_mem(pid, rss, anon);
    *cpu = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f && fgets(line, sizeof line, f)) {
        char *p = strrchr(line, ')');
        unsigned long ut = 0, stt = 0;
        /* fields 3.. after the name: state ppid pgrp session tty tpgid flags minflt cminflt
         * majflt cmajflt utime stime */
        if (p &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) == 2)
            *cpu = (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
    }
    if (f) fclose(f);
}

/* The three load averages, without bench_read_load's newline. */
static const char *load3(void)
{
    static char b[64];
    snprintf(b, sizeof b, "%s", bench_read_load());
    b[strcspn(b, "\n")] = 0;
    return b;
}

/* ---------------------------------------------------------------- nats-server (--nats) */

static uint64_t du_total; /* dir_bytes */

/* Starts one nats-server with JetStream on a loopback port, its config, log and store_dir in
 * dir/nats (its own process: its RSS is sampled beside the relay's), and waits until it is ready.
 * Writes the --store URL to url. */
static void nats_start(const char *dir, char *url, size_t n)
{
    const char *server = ns_server_path();
    BENCH_CHECK(server, "--nats: nats-server is not installed (apt-get install nats-server, or "
                        "TSYNC_NATS_SERVER=PATH)");
    char nd[4400], conf[4500], log[4500], store[4500];
    snprintf(nd, sizeof nd, "%s/nats", dir);
    snprintf(store, sizeof store, "%s/store", nd);
    BENCH_CHECK(mkdir(nd, 0700) == 0 && mkdir(store, 0700) == 0, "mkdir %s: %s", nd,
                strerror(errno));
    int port = ns_free_port();
    BENCH_CHECK(port > 0, "a free port: %s", strerror(errno));
    snprintf(conf, sizeof conf, "%s/nats.conf", nd);
    snprintf(log, sizeof log, "%s/nats.log", nd);
    FILE *f = fopen(conf, "w");
    BENCH_CHECK(f, "%s: %s", conf, strerror(errno));
    fprintf(f, "server_name: bench\nlisten: 127.0.0.1:%d\njetstream { store_dir: \"%s\" }\n", port,
            store);
    fclose(f);
    const char *argv[] = {server, "-c", conf, NULL};
    nats_pid = spawn(argv, log);
    for (int i = 0; i < 400; i++) {
        usleep(50000);
        BENCH_CHECK(waitpid(nats_pid, NULL, WNOHANG) == 0, "nats-server exited: %s",
                    last_line(log));
        FILE *lf = fopen(log, "r");
        char line[512];
        int ready = 0;
        while (lf && !ready && fgets(line, sizeof line, lf))
            ready = !!strstr(line, "Server is ready");
        if (lf) fclose(lf);
        if (ready) {
            snprintf(url, n, "nats://127.0.0.1:%d", port);
            return;
        }
    }
    bench_fail(__FILE__, __LINE__, "nats-server not ready in 20 s (%s)", log);
}

static int du_add(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path, (void)ftw;
    if (flag == FTW_F) du_total += (uint64_t)sb->st_size;
    return 0;
}

/* Bytes of the files below dir (JetStream's store_dir). */
static uint64_t dir_bytes(const char *dir)
{
    du_total = 0;
    nftw(dir, du_add, 16, FTW_PHYS);
    return du_total;
}

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/nats_server.c — where nats-server is, and a free loopback port (nats_server.h).
 */
#include "tests/lib/nats_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

const char *ns_server_path(void)
{
    const char *env = getenv("TSYNC_NATS_SERVER"); /* a server installed elsewhere */
    if (env && *env) return access(env, X_OK) == 0 ? env : NULL;
    static const char *const paths[] = {"/usr/sbin/nats-server", "/usr/bin/nats-server",
                                        "/usr/local/bin/nats-server"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (access(paths[i], X_OK) == 0) return paths[i];
    return NULL;
}

int ns_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
             getsockname(fd, (struct sockaddr *)&a, &l) == 0;
    close(fd);
    return ok ? ntohs(a.sin_port) : -1;
}

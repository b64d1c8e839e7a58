/* http_loop.c - the server's event loops (http_loop.h): a libmicrohttpd
 * daemon per thread in external-polling epoll mode on one shared listening
 * socket, the pass callback after each MHD_run, and the per-client
 * connection limit kept over all the loops. */
#include "serve/http_loop.h"
#include "base/base.h"
#include "obs/trace.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct http_loop {
    dm_http_listener *l;
    int index;
    struct MHD_Daemon *d;
    int ep;                      /* our epoll: the daemon's epoll fd and wake */
    int wake;                    /* eventfd: quiesce, stop */
    pthread_t th;
    int started;
    _Atomic int quiesced;        /* the listening socket is out of its daemon */
    _Atomic int kicked;          /* a wake-up is written and not yet taken */
} http_loop;

/* Connections open per client address (IPv4: the server binds IPv4 only). */
typedef struct ip_count {
    uint32_t ip;
    unsigned n;
    struct ip_count *next;
} ip_count;

#define IP_BUCKETS 1024

struct dm_http_listener {
    dm_http_loop_config c;
    int fd;                      /* the listening socket, -1 once closed */
    _Atomic int quiesce, stop;
    pthread_mutex_t ip_mu;
    ip_count *ip[IP_BUCKETS];
    int n;
    http_loop loops[DM_HTTP_MAX_LOOPS];
};

static _Thread_local int tl_index = -1;

int dm_http_loop_index(void) { return tl_index; }

/* ---------------------------------------------------------------- per-client limit */

static ip_count **ip_slot(dm_http_listener *l, uint32_t ip)
{
    ip_count **p = &l->ip[(ip * 2654435761u) >> 22];
    while (*p && (*p)->ip != ip) p = &(*p)->next;
    return p;
}

/* A new connection from addr: admitted (and counted) while its address has
 * fewer than per_client open. The count is taken here, where the address is
 * refused, and given back when the connection closes (on_connection): so two
 * loops accepting at once cannot both pass the limit. (Should libmicrohttpd
 * then fail to set the connection up, out of memory, the slot stays taken.) */
static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t len)
{
    dm_http_listener *l = cls;
    if (!addr || addr->sa_family != AF_INET || len < (socklen_t)sizeof(struct sockaddr_in)) return MHD_YES;
    uint32_t ip = ((const struct sockaddr_in *)addr)->sin_addr.s_addr;
    enum MHD_Result ok = MHD_YES;
    pthread_mutex_lock(&l->ip_mu);
    ip_count **p = ip_slot(l, ip);
    if (!*p && (*p = calloc(1, sizeof **p))) (*p)->ip = ip;
    if (!*p || (*p)->n >= l->c.per_client) ok = MHD_NO;
    else (*p)->n++;
    pthread_mutex_unlock(&l->ip_mu);
    return ok;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    dm_http_listener *l = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *a = ci ? ci->client_addr : NULL;
        *socket_context = NULL;
        if (a && a->sa_family == AF_INET) {
            pthread_mutex_lock(&l->ip_mu);
            *socket_context = *ip_slot(l, ((const struct sockaddr_in *)a)->sin_addr.s_addr);
            pthread_mutex_unlock(&l->ip_mu);
        }
        return;
    }
    ip_count *e = *socket_context;
    if (!e) return;
    *socket_context = NULL;
    pthread_mutex_lock(&l->ip_mu);
    if (--e->n == 0) {
        ip_count **p = ip_slot(l, e->ip);
        *p = e->next;
        free(e);
    }
    pthread_mutex_unlock(&l->ip_mu);
}

/* ---------------------------------------------------------------- loops */

static void wake(http_loop *lp)
{
    uint64_t one = 1;
    if (lp->wake >= 0 && write(lp->wake, &one, sizeof one) < 0) { /* already signalled (counter full): fine */ }
}

void dm_http_listener_kick(dm_http_listener *l, int loop)
{
    if (!l || loop < 0 || loop >= l->n) return;
    http_loop *lp = &l->loops[loop];
    if (!atomic_exchange(&lp->kicked, 1)) wake(lp);
}

static void *loop_main(void *arg)
{
    http_loop *lp = arg;
    dm_http_listener *l = lp->l;
    tl_index = lp->index;
    char name[48];
    snprintf(name, sizeof name, "%s %d", l->c.lane ? l->c.lane : "http", lp->index);
    dm_trace_thread_name(name);
    while (!atomic_load(&l->stop)) {
        if (atomic_load(&l->quiesce) && !atomic_load(&lp->quiesced)) {
            MHD_quiesce_daemon(lp->d);   /* the socket is the listener's: closed once, by it */
            atomic_store(&lp->quiesced, 1);
        }
        MHD_UNSIGNED_LONG_LONG to = 0;
        int ms = MHD_get_timeout(lp->d, &to) == MHD_YES ? (to > 1000 ? 1000 : (int)to) : -1;
        struct epoll_event ev[2];
        int n = epoll_wait(lp->ep, ev, 2, ms);
        for (int i = 0; i < n; i++)
            if (ev[i].data.fd == lp->wake) {
                uint64_t v;
                if (read(lp->wake, &v, sizeof v) < 0) { /* nothing to clear */ }
            }
        if (atomic_load(&l->stop)) break;
        atomic_store(&lp->kicked, 0);   /* what was resumed before this is in the MHD_run below */
        if (l->c.lock) pthread_rwlock_rdlock(l->c.lock);
        MHD_run(lp->d);
        if (l->c.pass) l->c.pass(l->c.cls, lp->index);
        if (l->c.lock) pthread_rwlock_unlock(l->c.lock);
        if (l->c.after) l->c.after(l->c.cls, lp->index);
    }
    return NULL;
}

static dm_status open_socket(dm_http_listener *l, int *bound, dm_error *err)
{
    const dm_http_loop_config *c = &l->c;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)c->port);
    if (!c->host || inet_pton(AF_INET, c->host, &a.sin_addr) != 1)
        return dm_fail(err, DM_ERR_ARG, "--host '%s' is not an IPv4 address", c->host ? c->host : "");
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0) return dm_fail(err, DM_ERR_IO, "cannot open a socket: %s", strerror(errno));
    int one = 1;
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l->fd, (struct sockaddr *)&a, sizeof a) || listen(l->fd, 4096))
        return dm_fail(err, DM_ERR_IO, "cannot listen on %s:%d (%s%s)", c->host, c->port, strerror(errno),
                       errno == EADDRINUSE ? ": the port is in use" : "");
    socklen_t len = sizeof a;
    *bound = getsockname(l->fd, (struct sockaddr *)&a, &len) ? c->port : ntohs(a.sin_port);
    return DM_OK;
}

static dm_status start_loop(dm_http_listener *l, http_loop *lp, unsigned conns, dm_error *err)
{
    const dm_http_loop_config *c = &l->c;
    struct MHD_OptionItem opts[10];
    int n = 0;
#define OPT(o, v, p) (opts[n++] = (struct MHD_OptionItem){(o), (intptr_t)(v), (p)})
    OPT(MHD_OPTION_LISTEN_SOCKET, l->fd, NULL);
    if (c->completed) OPT(MHD_OPTION_NOTIFY_COMPLETED, c->completed, c->cls);
    if (c->per_client) OPT(MHD_OPTION_NOTIFY_CONNECTION, on_connection, l);
    OPT(MHD_OPTION_CONNECTION_TIMEOUT, c->idle_timeout_s, NULL);
    OPT(MHD_OPTION_CONNECTION_LIMIT, conns, NULL);
    OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT, c->pool_bytes, NULL);
    OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
    lp->l = l;
    lp->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO, 0,
                             c->per_client ? accept_policy : NULL, l, c->handler, c->cls, MHD_OPTION_ARRAY, opts,
                             MHD_OPTION_END);
    if (!lp->d) return dm_fail(err, DM_ERR_IO, "cannot start the HTTP daemon on %s:%d", c->host, c->port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(lp->d, MHD_DAEMON_INFO_EPOLL_FD);
    lp->ep = epoll_create1(EPOLL_CLOEXEC);
    lp->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!info || lp->ep < 0 || lp->wake < 0)
        return dm_fail(err, DM_ERR_IO, "cannot set up an event loop: %s", strerror(errno));
    struct epoll_event e = {.events = EPOLLIN, .data.fd = info->epoll_fd};
    struct epoll_event w = {.events = EPOLLIN, .data.fd = lp->wake};
    if (epoll_ctl(lp->ep, EPOLL_CTL_ADD, info->epoll_fd, &e) || epoll_ctl(lp->ep, EPOLL_CTL_ADD, lp->wake, &w))
        return dm_fail(err, DM_ERR_IO, "cannot set up an event loop: %s", strerror(errno));
    if (pthread_create(&lp->th, NULL, loop_main, lp)) return dm_fail(err, DM_ERR_NOMEM, "server: cannot start a thread");
    lp->started = 1;
    return DM_OK;
}

dm_status dm_http_listener_start(const dm_http_loop_config *c, dm_http_listener **out, int *bound, dm_error *err)
{
    *out = NULL;
    if (!c || !c->handler || c->threads < 1 || c->threads > DM_HTTP_MAX_LOOPS || c->max_connections < 1)
        return dm_fail(err, DM_ERR_ARG, "HTTP loops: bad configuration (threads must be 1..%d)", DM_HTTP_MAX_LOOPS);
    dm_http_listener *l = calloc(1, sizeof *l);
    if (!l) return dm_fail(err, DM_ERR_NOMEM, "server: out of memory");
    l->c = *c;
    l->fd = -1;
    pthread_mutex_init(&l->ip_mu, NULL);
    for (int i = 0; i < DM_HTTP_MAX_LOOPS; i++) l->loops[i] = (http_loop){.index = i, .ep = -1, .wake = -1};
    dm_status st = open_socket(l, bound, err);
    /* each loop its share of the connection limit, as libmicrohttpd's thread pool deals it */
    unsigned share = c->max_connections / (unsigned)c->threads, left = c->max_connections % (unsigned)c->threads;
    for (int i = 0; !st && i < c->threads; i++) {
        unsigned conns = share + ((unsigned)i < left);
        st = start_loop(l, &l->loops[i], conns ? conns : 1, err);
        l->n = i + 1;
    }
    if (st) {
        dm_http_listener_stop(l);
        return st;
    }
    *out = l;
    return DM_OK;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void dm_http_listener_quiesce(dm_http_listener *l)
{
    if (!l || l->fd < 0) return;
    atomic_store(&l->quiesce, 1);
    for (int i = 0; i < l->n; i++) {
        http_loop *lp = &l->loops[i];
        if (!lp->d) continue;
        if (!lp->started) {   /* no thread runs it: quiesced here */
            MHD_quiesce_daemon(lp->d);
            atomic_store(&lp->quiesced, 1);
        }
        wake(lp);
    }
    /* a loop answers between passes: within a batch's or a model load's time */
    for (int i = 0; i < l->n; i++)
        while (l->loops[i].d && !atomic_load(&l->loops[i].quiesced)) sleep_ms(1);
    close(l->fd);
    l->fd = -1;
}

void dm_http_listener_stop(dm_http_listener *l)
{
    if (!l) return;
    dm_http_listener_quiesce(l);
    atomic_store(&l->stop, 1);
    for (int i = 0; i < l->n; i++) {
        http_loop *lp = &l->loops[i];
        if (!lp->started) continue;
        wake(lp);
        pthread_join(lp->th, NULL);
    }
    for (int i = 0; i < l->n; i++) {
        http_loop *lp = &l->loops[i];
        if (lp->d) MHD_stop_daemon(lp->d);   /* closes its connections: their completed callbacks run here */
        if (lp->ep >= 0) close(lp->ep);
        if (lp->wake >= 0) close(lp->wake);
    }
    if (l->fd >= 0) close(l->fd);
    for (int b = 0; b < IP_BUCKETS; b++)
        while (l->ip[b]) {
            ip_count *e = l->ip[b];
            l->ip[b] = e->next;
            free(e);
        }
    pthread_mutex_destroy(&l->ip_mu);
    free(l);
}

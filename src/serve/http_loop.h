/* http_loop.h - the server's event loops: one libmicrohttpd daemon per
 * thread in external-polling epoll mode, all on one listening socket. Each
 * loop thread waits for events, runs its daemon (MHD_run: every connection
 * that is ready, its handler calls included) and then calls the pass
 * callback, still on the loop thread: what the handlers of one pass set
 * aside (the inference requests that arrived together) is dealt with there,
 * at once. The limit of connections per client address is kept over all the
 * loops (an accept policy and a shared table), as libmicrohttpd's own thread
 * pool keeps it. */
#ifndef DM_SERVE_HTTP_LOOP_H
#define DM_SERVE_HTTP_LOOP_H

#include "deepmoe.h"

#include <microhttpd.h>
#include <pthread.h>

#define DM_HTTP_MAX_LOOPS 64

typedef struct dm_http_loop_config {
    const char *host;            /* IPv4 address to bind */
    int port;                    /* 0: any free port */
    int threads;                 /* loops (1..DM_HTTP_MAX_LOOPS) */
    unsigned max_connections;    /* over all the loops (each takes its share, as MHD's thread pool does) */
    unsigned per_client;         /* connections per client address over all the loops (0 = no limit) */
    unsigned idle_timeout_s;     /* MHD_OPTION_CONNECTION_TIMEOUT */
    size_t pool_bytes;           /* MHD_OPTION_CONNECTION_MEMORY_LIMIT: request line and headers */
    MHD_AccessHandlerCallback handler;
    MHD_RequestCompletedCallback completed;   /* or NULL */
    void *cls;                   /* handler's, completed's and pass's argument */
    void (*pass)(void *cls, int loop);        /* after each MHD_run on loop `loop`, under lock; or NULL */
    void (*after)(void *cls, int loop);       /* then, with lock released; or NULL */
    pthread_rwlock_t *lock;      /* held shared over each MHD_run and pass; or NULL */
    const char *lane;            /* the profiler's lane names: "<lane> <loop>" */
} dm_http_loop_config;

typedef struct dm_http_listener dm_http_listener;

/* Binds, listens and starts the loops; *bound = the port bound. */
dm_status dm_http_listener_start(const dm_http_loop_config *c, dm_http_listener **out, int *bound, dm_error *err);
/* The calling thread's loop index, or -1 when it is not a loop thread. */
int dm_http_loop_index(void);
/* After MHD_resume_connection (from any thread, the loop's own included):
 * wakes loop `loop` so that its next MHD_run picks the connection up. In
 * external-polling mode libmicrohttpd has no wake-up channel of its own
 * (it drops MHD_USE_ITC), so without this a resumed connection would wait
 * for the next network event or timeout. Several kicks before the loop runs
 * again cost one eventfd write. */
void dm_http_listener_kick(dm_http_listener *l, int loop);
/* Stops accepting: every loop takes the listening socket out of its daemon
 * (on its own thread, between passes); then the socket is closed. Open
 * connections are served on. */
void dm_http_listener_quiesce(dm_http_listener *l);
/* Quiesces, stops the loops, closes every connection (their completed
 * callbacks run here) and frees l. NULL is a no-op. */
void dm_http_listener_stop(dm_http_listener *l);

#endif

/* http_peers.c - the measurement behind the HTTP library choice: the same
 * trivial endpoint (POST or GET -> 200 with a 2 KB body, as a batch-1 binary
 * inference answer would be) served by
 *   mhd-tpc   libmicrohttpd, a thread per connection (what deepmoe serve uses)
 *   mhd-pool  libmicrohttpd, epoll with a pool of 2 threads
 *   evhttp    libevent's evhttp, one event loop
 * Run by bench/http_peers.sh with wrk. Usage: http_peers MODE PORT */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char payload[2048];

static enum MHD_Result on_req(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)cls; (void)url; (void)method; (void)version; (void)upload;
    if (!*con_cls) { *con_cls = (void *)1; return MHD_YES; }
    if (*upload_size) { *upload_size = 0; return MHD_YES; }
    struct MHD_Response *r = MHD_create_response_from_buffer(sizeof payload, payload, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_ev(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_reference(b, payload, sizeof payload, NULL, NULL);
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: http_peers mhd-tpc|mhd-pool|evhttp PORT\n"); return 2; }
    int port = atoi(argv[2]);
    signal(SIGPIPE, SIG_IGN);
    if (!strncmp(argv[1], "mhd", 3)) {
        int pool = !strcmp(argv[1], "mhd-pool");
        struct MHD_Daemon *d = pool
            ? MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, (uint16_t)port, NULL, NULL, on_req, NULL,
                               MHD_OPTION_THREAD_POOL_SIZE, (unsigned)2, MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000, MHD_OPTION_END)
            : MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL,
                               on_req, NULL, MHD_OPTION_END);
        if (!d) { fprintf(stderr, "cannot start\n"); return 1; }
        printf("ready\n");
        fflush(stdout);
        pause();
        return 0;
    }
    struct event_base *base = event_base_new();
    struct evhttp *h = evhttp_new(base);
    evhttp_set_gencb(h, on_ev, NULL);
    if (evhttp_bind_socket(h, "127.0.0.1", (uint16_t)port)) { fprintf(stderr, "cannot bind\n"); return 1; }
    printf("ready\n");
    fflush(stdout);
    event_base_dispatch(base);
    return 0;
}

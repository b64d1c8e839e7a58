/* deepmoe/api.h - the library's export macro and version.
 *
 * libdeepmoe is built with -fvisibility=hidden: only declarations marked
 * DM_API (the public headers: deepmoe.h and the deepmoe/ directory) are exported from
 * the shared library. Internal headers under src/ never use DM_API. */
#ifndef DEEPMOE_API_H
#define DEEPMOE_API_H

#if defined(__GNUC__) || defined(__clang__)
#define DM_API __attribute__((visibility("default")))
#else
#define DM_API
#endif

/* Semantic version: a minor release adds API and keeps the ABI; a major one may break it. */
#define DM_VERSION_MAJOR 0
#define DM_VERSION_MINOR 2
#define DM_VERSION_PATCH 0
#define DM_VERSION "0.2.0"
/* One number for compile-time checks: DM_VERSION_NUMBER >= DM_MAKE_VERSION(0, 2, 0). */
#define DM_MAKE_VERSION(a, b, c) ((a) * 10000 + (b) * 100 + (c))
#define DM_VERSION_NUMBER DM_MAKE_VERSION(DM_VERSION_MAJOR, DM_VERSION_MINOR, DM_VERSION_PATCH)

#endif

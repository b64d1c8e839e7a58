/* model_flags.h - the model-definition options shared by init (and later train). */
#ifndef DM_MODEL_FLAGS_H
#define DM_MODEL_FLAGS_H

#include <getopt.h>
#include "deepmoe.h"

/* Option codes >= 1000 so they never clash with a command's own short options. */
enum {
    OPT_DIM = 1000, OPT_EXPERTS, OPT_TOPK, OPT_HIDDEN, OPT_ROUTER, OPT_EXPERT_TYPE,
    OPT_SHARED, OPT_SHARED_HIDDEN, OPT_GROUPS, OPT_TOPK_GROUPS, OPT_SEL_BIAS,
    OPT_NORM_TOPK, OPT_ROUTE_SCALE, OPT_MODEL_FLAGS_END
};

#define MODEL_LONG_OPTIONS                                                         \
    {"dim", required_argument, 0, OPT_DIM},                                        \
    {"experts", required_argument, 0, OPT_EXPERTS},                                \
    {"top-k", required_argument, 0, OPT_TOPK},                                     \
    {"hidden", required_argument, 0, OPT_HIDDEN},                                  \
    {"router", required_argument, 0, OPT_ROUTER},                                  \
    {"expert-type", required_argument, 0, OPT_EXPERT_TYPE},                        \
    {"shared-experts", required_argument, 0, OPT_SHARED},                          \
    {"shared-hidden", required_argument, 0, OPT_SHARED_HIDDEN},                    \
    {"groups", required_argument, 0, OPT_GROUPS},                                  \
    {"topk-groups", required_argument, 0, OPT_TOPK_GROUPS},                        \
    {"selection-bias", no_argument, 0, OPT_SEL_BIAS},                              \
    {"norm-topk", no_argument, 0, OPT_NORM_TOPK},                                  \
    {"route-scale", required_argument, 0, OPT_ROUTE_SCALE}

#define MODEL_FLAGS_HELP                                                                       \
    "model:\n"                                                                                 \
    "  --dim D              input/output width (512)\n"                                        \
    "  --experts E          routed experts (8)\n"                                              \
    "  --top-k K            experts per row (2)\n"                                             \
    "  --hidden H           expert hidden width (D/2)\n"                                       \
    "  --router R           seed | softmax | sigmoid (seed: softmax over the k kept logits)\n" \
    "  --norm-topk          softmax router: renormalise the k weights to sum 1\n"              \
    "  --route-scale F      multiply the routed weights by F (1)\n"                            \
    "  --groups G           group-limited routing: E/G experts per group (1 = off)\n"          \
    "  --topk-groups M      groups a row may use (sum of top-2 scores ranks groups)\n"        \
    "  --selection-bias     add a per-expert bias that moves selection, not weights\n"         \
    "  --expert-type T      seed (Linear-ReLU-LayerNorm-Linear + x) | swiglu\n"                \
    "  --shared-experts S   always-active shared experts (0)\n"                                \
    "  --shared-hidden H    hidden width of a shared expert (same as --hidden)\n"

/* Applies one model option; 1 if handled, 0 if opt is not a model option,
 * -1 (after printing a usage error for cmd) if the value is bad. */
int model_flag(const char *cmd, int opt, const char *arg, dm_config *c);

#endif

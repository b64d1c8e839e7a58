/* cmd_train.c - deepmoe train: train a model on a dataset from the command line,
 * with progress, metrics.jsonl, checkpoints and bit-exact resume. */
#include "cli.h"
#include "model_flags.h"
#include "data/data.h"
#include "train_cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char help[] =
    "usage: deepmoe train --data SPEC --out DIR [options]\n\n"
    "Trains an MoE model and writes DIR/model.safetensors (the final model),\n"
    "DIR/checkpoint/state.safetensors (the whole training state, for --resume) and\n"
    "DIR/metrics.jsonl (one JSON object per logged step and per evaluation).\n"
    "With --data fashion-mnist and no other flags it trains the default classifier:\n"
    "784 -> embed 384 -> 2 MoE layers (E=8, k=2, H=384, the seed's router and experts)\n"
    "-> LayerNorm -> 10 classes; 15 epochs of batch 256, AdamW lr 5e-4 with cosine decay,\n"
    "aux-free balancing (DeepSeek-V3). docs/training.md records what it reaches.\n\n"
    "data:\n"
    "  --data SPEC          fashion-mnist[:DIR] | mnist:DIR | X.npy,Y.npy[,XT.npy,YT.npy] |\n"
    "                       synthetic[:regimes=8,dim=32,rows=20000,test=0.1,noise=0.15]\n"
    "  --task T             classify | regress (default: classify for IDX, else regress)\n"
    "  --no-shuffle         keep file order (default: a seeded shuffle per epoch)\n"
    "  --augment A          none | a comma list of shift=N (random shifts of square images by\n"
    "                       up to N pixels), flip (left-right), drop=P (input dropout) (none)\n"
    "  --seed N             seed of the model init, the shuffles and synthetic data (0)\n"
    "model (new models; ignored with --model or --resume; classifiers default to D=384,\n"
    "H=384, 2 layers, with an embedding from the data's width and a head to its classes):\n"
    "  --model PATH         start from this model file instead\n"
    "  --layers N           MoE layers (classify: 2; regress: 1, the bare seed layer)\n";
static const char help_tail[] =   /* after model_flags_help */
    "optimisation:\n"
    "  --loss L             mse | ce (default: ce for classify, mse for regress)\n"
    "  --optimizer adamw    the only optimizer (PyTorch AdamW semantics)\n"
    "  --lr F               peak learning rate (5e-4 classify, 1e-3 regress)\n"
    "  --weight-decay F     decoupled weight decay (0.01)\n"
    "  --betas F,F          AdamW betas (0.9,0.999)\n"
    "  --eps F              AdamW epsilon (1e-8)\n"
    "  --batch N            rows per micro-batch (256)\n"
    "  --steps N | --epochs N   optimizer steps in total (default: 15 epochs classify, 10 regress)\n"
    "  --warmup N           linear warm-up steps (100; a tenth of the run if that is longer)\n"
    "  --schedule S         cosine | constant (cosine, to 0 at the last step)\n"
    "  --clip F             global gradient-norm clip (1.0; 0 = off)\n"
    "  --grad-accum N       micro-batches per optimizer step (1)\n"
    "  --balance LIST       none | seed,switch,aux_free,z_loss (comma list; NAME=COEF sets a\n"
    "                       coefficient); default aux_free for new classifiers, else none.\n"
    "                       aux_free gives a new model a selection bias\n"
    "  --balance-coef F     coefficient of every enabled loss term (seed, switch, z_loss)\n"
    "  --bias-update F      aux_free step gamma (0.001)\n"
    "  --label-smoothing F  cross-entropy label smoothing (0)\n"
    "  --dropout P          dropout on the experts' hidden activations while training (0)\n"
    "run:\n"
    "  --threads N          worker threads (0 = all CPUs)\n"
    "  --eval-every N       evaluate on the test split every N steps (0 = at the end only)\n"
    "  --log-every N        metrics.jsonl / log line every N steps (50)\n"
    "  --checkpoint-every N write the checkpoint every N steps (1000, and at the end)\n"
    "  --resume DIR         continue the run saved in DIR (--out defaults to DIR); the run's\n"
    "                       own seed, batch, augmentation and optimisation settings are kept,\n"
    "                       --steps may set a new total, and --eval-every, --log-every and\n"
    "                       --checkpoint-every keep the run's values unless given; records of\n"
    "                       metrics.jsonl past the checkpoint (a killed run's) are dropped\n"
    "  --stop-at N          stop after step N (checkpoint written), keeping the schedule of\n"
    "                       the full run: a later --resume continues it exactly\n"
    "  --top-k K            k for a --model file without deepmoe metadata\n";

enum { O_DATA = 2000, O_OUT, O_TASK, O_NOSHUF, O_SEED, O_MODEL, O_LAYERS, O_LOSS, O_OPT, O_LR, O_WD, O_BETAS,
       O_EPS, O_BATCH, O_STEPS, O_EPOCHS, O_WARMUP, O_SCHED, O_CLIP, O_ACCUM, O_BAL, O_BALCOEF, O_BIASUPD,
       O_THREADS, O_EVAL, O_LOG, O_CKPT, O_RESUME, O_STOP, O_AUG, O_LS, O_DROP, O_HELP };

int parse_balance(const char *s, dm_train_config *tc)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    tc->balance = 0;
    if (!buf[0] || strspn(buf, ",") == strlen(buf)) return -1;  /* "" or ",,": say none */
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *eq = strchr(tok, '=');
        float coef = -1;
        if (eq) {
            *eq = 0;
            if (cli_float(eq + 1, &coef) || coef < 0) return -1;
        }
        if (!strcmp(tok, "none")) continue;
        else if (!strcmp(tok, "seed")) { tc->balance |= DM_BAL_SEED; if (coef >= 0) tc->coef_seed = coef; }
        else if (!strcmp(tok, "switch")) { tc->balance |= DM_BAL_SWITCH; if (coef >= 0) tc->coef_switch = coef; }
        else if (!strcmp(tok, "aux_free")) { tc->balance |= DM_BAL_AUX_FREE; if (coef >= 0) tc->bias_update = coef; }
        else if (!strcmp(tok, "z_loss") || !strcmp(tok, "z")) { tc->balance |= DM_BAL_Z; if (coef >= 0) tc->coef_z = coef; }
        else return -1;
    }
    return 0;
}

/* Each directory made is synced into its parent, so files renamed into it
 * later survive a crash with their path. */
static int mkdir_one(const char *dir)
{
    if (mkdir(dir, 0777) == 0) return dm_sync_parent(dir, NULL) == DM_OK ? 0 : -1;
    return errno == EEXIST ? 0 : -1;
}

int mkdir_p(const char *dir)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir_one(buf)) return -1;
            *p = '/';
        }
    return mkdir_one(buf);
}

/* ---------------------------------------------------------------- metrics */

void json_num(FILE *fp, const char *key, double v)
{
    if (isfinite(v)) fprintf(fp, ",\"%s\":%.6g", key, v);
    else fprintf(fp, ",\"%s\":null", key);  /* JSON has no NaN or Inf */
}

void json_load(FILE *fp, const double *load, int L, int E)
{
    fputc('[', fp);
    for (int l = 0; l < L; l++) {
        fprintf(fp, "%s[", l ? "," : "");
        for (int e = 0; e < E; e++) fprintf(fp, "%s%.5f", e ? "," : "", load[l * E + e]);
        fputc(']', fp);
    }
    fputc(']', fp);
}

void load_stats(const double *load, int L, int E, double *util, double *vio)
{
    *util = *vio = 0;
    for (int l = 0; l < L; l++) {
        *util += dm_expert_utilization(load + l * E, E) / L;
        *vio += dm_max_vio(load + l * E, E) / L;
    }
}

void bar(char *out, const double *load, int E)
{
    static const char *levels[] = {" ", "\u2581", "\u2582", "\u2583", "\u2584", "\u2585", "\u2586", "\u2587", "\u2588"};
    double mx = 0;
    for (int e = 0; e < E; e++) mx = fmax(mx, load[e]);
    out[0] = 0;
    for (int e = 0; e < E && e < 32; e++) strcat(out, levels[mx > 0 ? (int)lround(8 * load[e] / mx) : 0]);
}

/* ---------------------------------------------------------------- eval */

int evaluate(const char *cmd, dm_model *m, dm_pool *pool, const dm_data *d, int64_t oracle_rows, dm_eval *ev,
                    double *load)
{
    dm_error err;
    dm_ctx *ctx;
    if (dm_ctx_create(m, pool, &ctx, &err)) return cli_error(cmd, &err);
    ev->expert_load = load;
    const dm_dataset *t = &d->test;
    dm_status st = dm_evaluate(ctx, t->x, t->y, d->task == DM_TASK_CLASSIFY ? t->labels : NULL, t->regime, t->n,
                               oracle_rows, ev, &err);
    dm_ctx_free(ctx);
    return st ? cli_error(cmd, &err) : 0;
}

void eval_json(FILE *fp, int64_t step, const dm_eval *ev, const double *load, int L, int E)
{
    fprintf(fp, "{\"eval\":true,\"step\":%lld", (long long)step);
    json_num(fp, "loss", ev->loss);
    /* a classification result has an accuracy (a count, never NaN); otherwise report the MSE */
    if (ev->accuracy >= 0) json_num(fp, "accuracy", ev->accuracy);
    else json_num(fp, "mse", ev->mse);
    fprintf(fp, ",\"expert_load\":");
    json_load(fp, load, L, E);
    json_num(fp, "expert_utilization", ev->expert_utilization);
    json_num(fp, "max_vio", ev->max_vio);
    if (ev->routing_accuracy >= 0) json_num(fp, "routing_accuracy", ev->routing_accuracy);
    if (ev->purity >= 0) json_num(fp, "regime_purity", ev->purity);
    fprintf(fp, "}\n");
    fflush(fp);
}

/* ---------------------------------------------------------------- main */

int cmd_train(int argc, char **argv)
{
    static const struct option lo[] = {
        {"data", required_argument, 0, O_DATA}, {"out", required_argument, 0, O_OUT},
        {"task", required_argument, 0, O_TASK}, {"no-shuffle", no_argument, 0, O_NOSHUF},
        {"seed", required_argument, 0, O_SEED}, {"model", required_argument, 0, O_MODEL},
        {"layers", required_argument, 0, O_LAYERS}, {"loss", required_argument, 0, O_LOSS},
        {"optimizer", required_argument, 0, O_OPT}, {"lr", required_argument, 0, O_LR},
        {"weight-decay", required_argument, 0, O_WD}, {"betas", required_argument, 0, O_BETAS},
        {"eps", required_argument, 0, O_EPS}, {"batch", required_argument, 0, O_BATCH},
        {"steps", required_argument, 0, O_STEPS}, {"epochs", required_argument, 0, O_EPOCHS},
        {"warmup", required_argument, 0, O_WARMUP}, {"schedule", required_argument, 0, O_SCHED},
        {"clip", required_argument, 0, O_CLIP}, {"grad-accum", required_argument, 0, O_ACCUM},
        {"balance", required_argument, 0, O_BAL}, {"balance-coef", required_argument, 0, O_BALCOEF},
        {"bias-update", required_argument, 0, O_BIASUPD}, {"threads", required_argument, 0, O_THREADS},
        {"eval-every", required_argument, 0, O_EVAL}, {"log-every", required_argument, 0, O_LOG},
        {"checkpoint-every", required_argument, 0, O_CKPT}, {"resume", required_argument, 0, O_RESUME},
        {"stop-at", required_argument, 0, O_STOP}, {"augment", required_argument, 0, O_AUG},
        {"label-smoothing", required_argument, 0, O_LS}, {"dropout", required_argument, 0, O_DROP},
        {"help", no_argument, 0, O_HELP}, MODEL_LONG_OPTIONS {0, 0, 0, 0},
    };
    opts o = {.task = -1, .shuffle = 1, .layers = 0, .threads = 0, .grad_accum = 1, .batch = 256,
              .steps = 0, .epochs = 0, .warmup = 100, .eval_every = -1, .log_every = -1, .ckpt_every = -1,
              .loss = -1, .lr = 0, .wd = 0.01f, .b1 = 0.9f, .b2 = 0.999f, .eps = 1e-8f, .clip = 1.0f,
              .bal_coef = -1, .bias_update = 1e-3f, .schedule = DM_SCHED_COSINE};
    dm_config_default(&o.cfg);
    o.cfg.hidden = 0;
    dm_config flags = o.cfg;
    int top_k_flag = 0, oc;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        int r = model_flag("train", oc, optarg, &flags);
        if (r < 0) return EXIT_USAGE;
        if (r > 0) {
            o.cfg_set[oc - 1000] = 1;
            if (oc == OPT_TOPK) top_k_flag = flags.top_k;
            continue;
        }
        int iv;
        float fv;
        char *end;
        switch (oc) {
        case O_DATA: o.data = optarg; break;
        case O_OUT: o.out = optarg; break;
        case O_MODEL: o.model = optarg; break;
        case O_RESUME: o.resume = optarg; break;
        case O_NOSHUF: o.shuffle = 0; break;
        case O_TASK:
            if (!strcmp(optarg, "classify")) o.task = DM_TASK_CLASSIFY;
            else if (!strcmp(optarg, "regress")) o.task = DM_TASK_REGRESS;
            else return cli_usage("train", "--task '%s': expected classify or regress", optarg);
            break;
        case O_LOSS:
            if (!strcmp(optarg, "mse")) o.loss = DM_LOSS_MSE;
            else if (!strcmp(optarg, "ce")) o.loss = DM_LOSS_CE;
            else return cli_usage("train", "--loss '%s': expected mse or ce", optarg);
            break;
        case O_OPT:
            if (strcmp(optarg, "adamw")) return cli_usage("train", "--optimizer '%s': only adamw is implemented", optarg);
            break;
        case O_SCHED:
            if (!strcmp(optarg, "cosine")) o.schedule = DM_SCHED_COSINE;
            else if (!strcmp(optarg, "constant")) o.schedule = DM_SCHED_CONSTANT;
            else return cli_usage("train", "--schedule '%s': expected cosine or constant", optarg);
            break;
        case O_SEED:
            o.seed = strtoll(optarg, &end, 10);
            if (*end || end == optarg || o.seed < 0) return cli_usage("train", "--seed '%s' must be a non-negative integer", optarg);
            break;
        case O_BAL: o.balance = optarg; break;
        case O_AUG: o.augment = optarg; break;
#define FLOATOPT(field, name, cond) \
            if (cli_float(optarg, &fv) || !(cond)) return cli_usage("train", name " '%s' is out of range", optarg); \
            o.field = fv; break;
        case O_LR: FLOATOPT(lr, "--lr", fv > 0)
        case O_WD: FLOATOPT(wd, "--weight-decay", fv >= 0)
        case O_EPS: FLOATOPT(eps, "--eps", fv > 0)
        case O_CLIP: FLOATOPT(clip, "--clip", fv >= 0)
        case O_BALCOEF: FLOATOPT(bal_coef, "--balance-coef", fv >= 0)
        case O_BIASUPD: FLOATOPT(bias_update, "--bias-update", fv >= 0)
        case O_LS: FLOATOPT(label_smoothing, "--label-smoothing", fv >= 0 && fv < 1)
        case O_DROP: FLOATOPT(dropout, "--dropout", fv >= 0 && fv < 1)
#undef FLOATOPT
        case O_BETAS: {
            char b1s[64], *comma = strchr(optarg, ',');
            int bad = !comma || comma - optarg >= (long)sizeof b1s;
            if (!bad) {
                memcpy(b1s, optarg, (size_t)(comma - optarg));
                b1s[comma - optarg] = 0;
                bad = cli_float(b1s, &o.b1) || cli_float(comma + 1, &o.b2);
            }
            if (bad || !(o.b1 >= 0 && o.b1 < 1 && o.b2 >= 0 && o.b2 < 1))
                return cli_usage("train", "--betas '%s': expected two numbers in [0, 1), e.g. 0.9,0.999", optarg);
            break;
        }
#define INTOPT(field, name, lo_, hi_) \
            if (cli_int(optarg, lo_, hi_, &iv)) return cli_usage("train", name " '%s' must be in %ld..%ld", optarg, (long)(lo_), (long)(hi_)); \
            o.field = iv; break;
        case O_LAYERS: INTOPT(layers, "--layers", 1, 1024)
        case O_THREADS: INTOPT(threads, "--threads", 0, 1024)
        case O_ACCUM: INTOPT(grad_accum, "--grad-accum", 1, 1 << 20)
        case O_BATCH: INTOPT(batch, "--batch", 1, 1 << 24)
        case O_STEPS: INTOPT(steps, "--steps", 1, 2000000000)
        case O_EPOCHS: INTOPT(epochs, "--epochs", 1, 1000000)
        case O_WARMUP: INTOPT(warmup, "--warmup", 0, 2000000000)
        case O_EVAL: INTOPT(eval_every, "--eval-every", 0, 2000000000)
        case O_LOG: INTOPT(log_every, "--log-every", 1, 2000000000)
        case O_CKPT: INTOPT(ckpt_every, "--checkpoint-every", 1, 2000000000)
        case O_STOP: INTOPT(stop_at, "--stop-at", 1, 2000000000)
#undef INTOPT
        case O_HELP: case 'h': fputs(help, stdout); model_flags_help(stdout); fputs(help_tail, stdout); return 0;
        default: return cli_usage("train", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("train", "unexpected argument '%s'", argv[optind]);
    if (!o.out && o.resume) o.out = o.resume;
    if (!o.data || !o.out) return cli_usage("train", "--data and --out are required");
    if (o.steps && o.epochs) return cli_usage("train", "give --steps or --epochs, not both");

    return train_run(&o, &flags, top_k_flag);
}

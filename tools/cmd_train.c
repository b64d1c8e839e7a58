/* cmd_train.c - deepmoe train: the command line of dm_run_train (deepmoe/train.h).
 * Parses argv into the run's options, runs, and prints the run's progress;
 * the run itself (metrics.jsonl, checkpoints, resume) is the library's. */
#include "cli.h"
#include "model_flags.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    "  --holdout F          share of the rows held out for evaluation when the data has no test\n"
    "                       split (X.npy,Y.npy: the last floor(n*F) rows; synthetic: its test=\n"
    "                       key, the last round(rows*F)) (0.1: synthetic's 20000 rows train on\n"
    "                       18000, 2000 held out); 0 = train on every row, no evaluation. The\n"
    "                       first output line says how many rows were held out\n"
    "  --normalize M        how the features are scaled: none | minmax | standard | pixel\n"
    "                       (default: pixel for IDX images, p/127.5 - 1; minmax for .npy, each\n"
    "                       column to [-1, 1] by the train split's min and max; none for\n"
    "                       synthetic rows, made in [-1, 1]). standard: (x - mean) / std of the\n"
    "                       train split. Constant columns become 0. The map is stored in the\n"
    "                       model, which applies it itself: infer, eval and serve take raw\n"
    "                       rows. With --model: that model's own unless given; --resume keeps\n"
    "                       the run's\n"
    "  --task T             classify | regress (default: classify for IDX, else regress)\n"
    "  --no-shuffle         keep file order (default: a seeded shuffle per epoch)\n"
    "  --augment A          none | a comma list of shift=N (random shifts of square images by\n"
    "                       up to N pixels), flip (left-right), drop=P (input dropout) (none)\n"
    "  --seed N             seed of the model init, the shuffles and synthetic data (0)\n"
    "model (new models; ignored with --model or --resume; classifiers default to D=384,\n"
    "H=384, 2 layers, with an embedding from the data's width and a head to its classes):\n"
    "  --model PATH         start from this model file instead\n"
    "  --keep-sparsity      fine-tune a 2:4-pruned --model (deepmoe quantize --type nm24):\n"
    "                       its experts' zeros stay fixed (NVIDIA ASP's recipe); the run\n"
    "                       also writes OUT/model.packed.safetensors in the file's type\n"
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
    CLI_PRECISION_HELP
    "run:\n"
    "  --threads N          worker threads (0 = all CPUs)\n"
    "  --eval-every N       evaluate on the test split every N steps (0 = at the end only)\n"
    "  --log-every N        metrics.jsonl / log line every N steps (50)\n"
    "  --checkpoint-every N write the checkpoint every N steps (1000, and at the end)\n"
    "  --resume DIR         continue the run saved in DIR (--out defaults to DIR); the run's\n"
    "                       own seed, holdout, normalization, batch, augmentation and\n"
    "                       optimisation settings are kept, --steps may set a new total, and\n"
    "                       --eval-every, --log-every and --checkpoint-every keep the run's\n"
    "                       values unless given; records of metrics.jsonl past the checkpoint\n"
    "                       (a killed run's) are dropped.\n"
    "                       A checkpoint of an older deepmoe is refused: train from its model\n"
    "                       file with --model instead\n"
    "  --stop-at N          stop after step N (checkpoint written), keeping the schedule of\n"
    "                       the full run: a later --resume continues it exactly\n"
    "  --top-k K            k for a --model file without deepmoe metadata\n"
    "  --dist MODE          dp | zero1 | zero2 | zero3: train over the ranks of mpirun -np N.\n"
    "                       dp all-reduces gradients in buckets during the backward; zero1 also\n"
    "                       shards the AdamW moments, zero2 the gradients, zero3 the parameters\n"
    "                       (gathered per layer). Each rank takes --batch x --grad-accum rows a\n"
    "                       step: a step is one process's --grad-accum (A x ranks) step. Rank 0\n"
    "                       writes DIR (model, checkpoint, metrics.jsonl with comm_share, bytes,\n"
    "                       memory and every rank's expert load); --threads is per rank\n"
    CLI_DIST_HELP
    CLI_PROFILE_HELP;

enum { O_DATA = 2000, O_OUT, O_TASK, O_NOSHUF, O_SEED, O_MODEL, O_LAYERS, O_LOSS, O_OPT, O_LR, O_WD, O_BETAS,
       O_EPS, O_BATCH, O_STEPS, O_EPOCHS, O_WARMUP, O_SCHED, O_CLIP, O_ACCUM, O_BAL, O_BALCOEF, O_BIASUPD,
       O_THREADS, O_EVAL, O_LOG, O_CKPT, O_RESUME, O_STOP, O_AUG, O_LS, O_DROP, O_PREC, O_HOLDOUT, O_NORM, O_KEEPSP, O_DIST, O_EP, O_DTIME, O_HELP };

/* --balance LIST: flags into *flags, NAME=COEF into tc's coefficients. */
static int parse_balance(const char *s, int *flags, dm_train_config *tc)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    unsigned bal = 0;
    if (!buf[0] || strspn(buf, ",") == strlen(buf)) return -1;  /* "" or ",,": say none */
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *eq = strchr(tok, '=');
        float coef = -1;
        if (eq) {
            *eq = 0;
            if (cli_float(eq + 1, &coef) || coef < 0) return -1;
        }
        if (!strcmp(tok, "none")) continue;
        else if (!strcmp(tok, "seed")) { bal |= DM_BAL_SEED; if (coef >= 0) tc->coef_seed = coef; }
        else if (!strcmp(tok, "switch")) { bal |= DM_BAL_SWITCH; if (coef >= 0) tc->coef_switch = coef; }
        else if (!strcmp(tok, "aux_free")) { bal |= DM_BAL_AUX_FREE; if (coef >= 0) tc->bias_update = coef; }
        else if (!strcmp(tok, "z_loss") || !strcmp(tok, "z")) { bal |= DM_BAL_Z; if (coef >= 0) tc->coef_z = coef; }
        else return -1;
    }
    *flags = (int)bal;
    return 0;
}

/* --augment A: none, or a comma list of shift=N, flip, drop=P. */
static int parse_augment(const char *s, dm_run_opts *o)
{
    if (!strcmp(s, "none")) return 0;
    char buf[128];
    if (strlen(s) >= sizeof buf) return -1;
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int ok = 1;
        if (!strncmp(tok, "shift=", 6)) ok = cli_int(tok + 6, 0, 8, &o->aug_shift) == 0;
        else if (!strcmp(tok, "flip")) o->aug_flip = 1;
        else if (!strncmp(tok, "drop=", 5)) ok = cli_float(tok + 5, &o->aug_drop) == 0 && o->aug_drop >= 0 && o->aug_drop < 1;
        else ok = 0;
        if (!ok) return -1;
    }
    return 0;
}

/* --holdout F: a double, so that 0.1 is the 0.1 of a synthetic spec's test=0.1. */
static int parse_share(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0 && v < 1)) return -1;
    *out = v;
    return 0;
}

/* ---------------------------------------------------------------- progress */

typedef struct view {
    int tty;
    int live;                /* a \r progress line is on the screen, without its newline */
    const char *out, *resume;
    char data_name[64];
    int64_t test_rows;
    double holdout;
} view;

static void end_live(view *v)
{
    if (v->live) printf("\n");
    v->live = 0;
}

static void fmt_eta(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e7) snprintf(buf, n, "?");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else if (s >= 60) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, n, "%.0fs", s);
}

static void bar(char *out, const double *load, int E)
{
    static const char *levels[] = {" ", "\u2581", "\u2582", "\u2583", "\u2584", "\u2585", "\u2586", "\u2587", "\u2588"};
    double mx = 0;
    for (int e = 0; e < E; e++) mx = fmax(mx, load[e]);
    out[0] = 0;
    for (int e = 0; e < E && e < 32; e++) strcat(out, levels[mx > 0 ? (int)lround(8 * load[e] / mx) : 0]);
}

static void print_start(view *v, const dm_run_progress *p)
{
    const dm_data *d = p->data;
    const dm_config *c = dm_model_config(p->model);
    snprintf(v->data_name, sizeof v->data_name, "%s", d->name);
    v->test_rows = d->test.n;
    v->holdout = d->holdout;
    if (d->holdout >= 0)
        printf("data: %lld train rows, %lld held out (--holdout %g)%s\n", (long long)d->train.n, (long long)d->test.n,
               d->holdout, d->test.n ? "" : ": no evaluation");
    else
        printf("data: %lld train rows, %lld test rows (%s's own test split)\n", (long long)d->train.n,
               (long long)d->test.n, d->name);
    if (p->resumed)
        printf("resuming %s: its seed, holdout, normalization, batch, shuffle, augmentation and optimisation "
               "settings are kept\n", v->resume);
    printf("training %s on %s: %lld steps of %lld rows (%.2f epochs), %d threads\n",
           c->n_classes ? "classifier" : "regressor", d->name, (long long)p->total_steps, (long long)p->step_rows,
           (double)p->total_steps * (double)p->step_rows / (double)d->train.n, p->threads);
    if (p->ranks > 1) {
        const dm_train_memory *m = &p->memory;
        double np = (double)m->n_params;
        printf("distributed: %d ranks x %d threads, %lld rows per rank a step; per rank: params %.1f, grads %.1f, "
               "moments %.1f bytes/param (ZeRO's 16 = %.1f), packed copies %.1f MiB, RSS %.1f MiB\n", p->ranks,
               p->threads, (long long)(p->step_rows / p->ranks), m->params / np, m->grads / np, m->moments / np,
               (m->params + m->grads + m->moments) / np, m->packed / 1048576.0, m->rss / 1048576.0);
        if (p->host_ranks > 1)
            printf("gradients: summed through shared memory by the %d ranks of each host (%d host%s%s)\n",
                   p->host_ranks, p->hosts, p->hosts == 1 ? "" : "s", p->hosts > 1 ? ", then MPI across hosts" : "");
        else
            printf("gradients: summed by MPI\n");
        if (p->shared_replica)
            printf("parameters: one copy per host (parameters, packed copies, AdamW moments), each of its ranks "
                   "updating its share of the layers' groups\n");
    }
    printf("model: in %d -> D=%d, %d MoE layer(s) E=%d k=%d H=%d %s/%s%s%s, %lld parameters\n", d->train.dim, c->dim,
           c->n_layers, c->n_experts, c->top_k, c->hidden, dm_router_name(c->router), dm_expert_name(c->expert),
           c->n_classes ? ", head " : "", c->n_classes ? "LayerNorm+Linear" : "", (long long)dm_model_param_count(p->model));
    const char *pre;
    if (dm_model_preprocess(p->model, &pre, NULL, NULL))
        printf("features: %s scaling, stored in the model (which scales raw rows itself)\n", pre);
    else
        printf("features: raw (--normalize none)\n");
    if (p->aug_shift || p->aug_flip || p->aug_drop > 0)
        printf("augmentation: shifts up to %d pixels%s, input dropout %.2f\n", p->aug_shift,
               p->aug_flip ? ", left-right flips" : "", (double)p->aug_drop);
    if (p->step > 0)
        printf("resumed at step %lld (epoch %lld, row %lld)\n", (long long)p->step, (long long)p->data_epoch,
               (long long)p->data_pos);
}

static void print_step(view *v, const dm_run_progress *p)
{
    char eta[32], bars[128], accs[32] = "";
    fmt_eta(eta, sizeof eta, p->eta_s);
    if (p->train_accuracy >= 0) snprintf(accs, sizeof accs, " acc %.3f", p->train_accuracy);
    if (v->tty) {
        bar(bars, p->expert_load, p->n_experts);
        printf("\rstep %lld/%lld  epoch %.2f  loss %.4f %s  %.0f rows/s  ETA %s  load |%s|   ", (long long)p->step,
               (long long)p->total_steps, p->epoch, p->loss, accs, p->rows_per_s, eta, bars);
        v->live = 1;
    } else if (p->event == DM_RUN_LOG) {
        char comm[64] = "";
        if (p->ranks > 1) snprintf(comm, sizeof comm, " comm %.1f%%", 100 * p->comm_share);
        printf("step %lld/%lld epoch %.2f loss %.4f%s rows/s %.0f util %.3f%s ETA %s\n", (long long)p->step,
               (long long)p->total_steps, p->epoch, p->loss, accs, p->rows_per_s, p->expert_utilization, comm, eta);
    }
}

static int on_progress(const dm_run_progress *p, void *user)
{
    view *v = user;
    switch (p->event) {
    case DM_RUN_START: print_start(v, p); break;
    case DM_RUN_STEP:
    case DM_RUN_LOG: print_step(v, p); break;
    case DM_RUN_EVAL:
        if (p->final) break;   /* printed with the result */
        end_live(v);
        printf("eval step %lld: loss %.4f%s%.4f utilization %.3f\n", (long long)p->step, p->eval->loss,
               p->eval->accuracy >= 0 ? " accuracy " : " mse ", p->eval->accuracy >= 0 ? p->eval->accuracy : p->eval->mse,
               p->eval->expert_utilization);
        break;
    case DM_RUN_CHECKPOINT: break;
    }
    fflush(stdout);
    return 0;
}

static void print_result(const view *v, const dm_run_result *r, double t_start)
{
    if (!r->completed) {
        printf("stopped at step %lld of %lld; continue with --resume %s\n", (long long)r->step, (long long)r->total_steps,
               v->out);
        return;
    }
    if (!r->evaluated) {
        if (v->holdout == 0) printf("no rows held out (--holdout 0): no evaluation\n");
        else printf("the test split is empty: no evaluation\n");
        printf("train time %.1f s\n", r->train_seconds);
        return;
    }
    const dm_eval *ev = &r->eval;
    printf("test: loss %.4f", ev->loss);
    if (ev->accuracy >= 0) printf(", accuracy %.4f", ev->accuracy);
    if (ev->mse >= 0) printf(", mse %.5f", ev->mse);
    printf(", expert utilization %.3f, MaxVio %.3f", ev->expert_utilization, ev->max_vio);
    if (ev->routing_accuracy >= 0) printf(", routing accuracy %.3f (%lld rows)", ev->routing_accuracy, (long long)ev->oracle_rows);
    if (ev->purity >= 0) printf(", regime purity %.3f", ev->purity);
    printf("\ntrain time %.1f s (%.0f rows/s), total %.1f s\n", r->train_seconds,
           (double)r->steps_run * (double)r->step_rows / fmax(r->train_seconds, 1e-9), cli_now() - t_start);
    if (!strncmp(v->data_name, "fashion-mnist", 13) && ev->accuracy >= 0)
        printf("Fashion-MNIST benchmark (non-convolutional): MLP 256-128-100 0.883, SVC 0.897, XGBoost 0.898; "
               "deepmoe %.4f\n", ev->accuracy);
    printf("wrote %s/model.safetensors, %s/checkpoint/, %s/metrics.jsonl\n", v->out, v->out, v->out);
}

/* ---------------------------------------------------------------- main */

int cmd_train(int argc, char **argv)
{
    static const struct option own[] = {
        {"data", required_argument, 0, O_DATA}, {"out", required_argument, 0, O_OUT},
        {"task", required_argument, 0, O_TASK}, {"no-shuffle", no_argument, 0, O_NOSHUF},
        {"seed", required_argument, 0, O_SEED}, {"model", required_argument, 0, O_MODEL},
        {"keep-sparsity", no_argument, 0, O_KEEPSP},
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
        {"precision", required_argument, 0, O_PREC},
        {"holdout", required_argument, 0, O_HOLDOUT}, {"normalize", required_argument, 0, O_NORM},
        {"dist", required_argument, 0, O_DIST}, {"expert-parallel", required_argument, 0, O_EP},
        {"dist-timeout", required_argument, 0, O_DTIME}, {"profile", required_argument, 0, CLI_PROFILE_OPT},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
    };
    const struct option *lo = model_long_options(own);
    int opt_topk = model_flag_code("top_k");
    double dist_timeout = 120;
    dm_run_opts o;
    dm_run_opts_init(&o);
    const char *balance = NULL, *augment = NULL, *profile = NULL;
    float bal_coef = -1;
    int oc;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        int r = model_flag("train", oc, optarg, &o.config);
        if (r < 0) return EXIT_USAGE;
        if (r > 0) {
            if (oc == opt_topk) o.model_top_k = o.config.top_k;
            continue;
        }
        int iv;
        float fv;
        char *end;
        long long llv;
        switch (oc) {
        case O_DATA: o.data = optarg; break;
        case O_OUT: o.out = optarg; break;
        case O_MODEL: o.model = optarg; break;
        case O_KEEPSP: o.keep_sparsity = 1; break;
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
            if (!strcmp(optarg, "cosine")) o.train.schedule = DM_SCHED_COSINE;
            else if (!strcmp(optarg, "constant")) o.train.schedule = DM_SCHED_CONSTANT;
            else return cli_usage("train", "--schedule '%s': expected cosine or constant", optarg);
            break;
        case O_SEED:
            errno = 0;
            llv = strtoll(optarg, &end, 10);
            if (errno || *end || end == optarg || llv < 0)
                return cli_usage("train", "--seed '%s' must be a non-negative integer", optarg);
            o.seed = (uint64_t)llv;
            break;
        case O_HOLDOUT:
            if (parse_share(optarg, &o.holdout))
                return cli_usage("train", "--holdout '%s' must be a share in [0, 1), e.g. 0.1", optarg);
            break;
        case O_NORM:
            if ((o.normalize = dm_normalize_parse(optarg)) < 0)
                return cli_usage("train", "--normalize '%s': expected none, minmax, standard or pixel", optarg);
            break;
        case O_DIST:
            if ((o.dist = dm_dist_mode_parse(optarg)) < 0 || o.dist == DM_DIST_NONE)
                return cli_usage("train", "--dist '%s': expected dp, zero1, zero2 or zero3", optarg);
            break;
        case O_DTIME:
            if (cli_dist_timeout(optarg, &dist_timeout))
                return cli_usage("train", "--dist-timeout '%s' must be seconds > 0", optarg);
            break;
        case O_BAL: balance = optarg; break;
        case O_AUG: augment = optarg; break;
#define FLOATOPT(field, name, cond) \
            if (cli_float(optarg, &fv) || !(cond)) return cli_usage("train", name " '%s' is out of range", optarg); \
            field = fv; break;
        case O_LR: FLOATOPT(o.train.lr, "--lr", fv > 0)
        case O_WD: FLOATOPT(o.train.weight_decay, "--weight-decay", fv >= 0)
        case O_EPS: FLOATOPT(o.train.eps, "--eps", fv > 0)
        case O_CLIP: FLOATOPT(o.train.clip, "--clip", fv >= 0)
        case O_BALCOEF: FLOATOPT(bal_coef, "--balance-coef", fv >= 0)
        case O_BIASUPD: FLOATOPT(o.train.bias_update, "--bias-update", fv >= 0)
        case O_LS: FLOATOPT(o.train.label_smoothing, "--label-smoothing", fv >= 0 && fv < 1)
        case O_DROP: FLOATOPT(o.train.dropout, "--dropout", fv >= 0 && fv < 1)
#undef FLOATOPT
        case O_PREC:
            if (cli_precision(optarg, &o.train.precision))
                return cli_usage("train", "--precision '%s': expected fp32 or bf16", optarg);
            break;
        case O_BETAS: {
            char b1s[64], *comma = strchr(optarg, ',');
            float b1 = 0, b2 = 0;
            int bad = !comma || comma - optarg >= (long)sizeof b1s;
            if (!bad) {
                memcpy(b1s, optarg, (size_t)(comma - optarg));
                b1s[comma - optarg] = 0;
                bad = cli_float(b1s, &b1) || cli_float(comma + 1, &b2);
            }
            if (bad || !(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1))
                return cli_usage("train", "--betas '%s': expected two numbers in [0, 1), e.g. 0.9,0.999", optarg);
            o.train.beta1 = b1, o.train.beta2 = b2;
            break;
        }
#define INTOPT(field, name, lo_, hi_) \
            if (cli_int(optarg, lo_, hi_, &iv)) return cli_usage("train", name " '%s' must be in %ld..%ld", optarg, (long)(lo_), (long)(hi_)); \
            field = iv; break;
        case O_LAYERS: INTOPT(o.config.n_layers, "--layers", 1, 1024)
        case O_THREADS: INTOPT(o.threads, "--threads", 0, 1024)
        case O_ACCUM: INTOPT(o.train.grad_accum, "--grad-accum", 1, 1 << 20)
        case O_BATCH: INTOPT(o.batch, "--batch", 1, 1 << 24)
        case O_STEPS: INTOPT(o.steps, "--steps", 1, 2000000000)
        case O_EPOCHS: INTOPT(o.epochs, "--epochs", 1, 1000000)
        case O_WARMUP: INTOPT(o.train.warmup, "--warmup", 0, 2000000000)
        case O_EVAL: INTOPT(o.eval_every, "--eval-every", 0, 2000000000)
        case O_LOG: INTOPT(o.log_every, "--log-every", 1, 2000000000)
        case O_CKPT: INTOPT(o.checkpoint_every, "--checkpoint-every", 1, 2000000000)
        case O_STOP: INTOPT(o.stop_at, "--stop-at", 1, 2000000000)
        case O_EP: INTOPT(o.expert_parallel, "--expert-parallel", 1, 1 << 20)
#undef INTOPT
        case CLI_PROFILE_OPT: profile = optarg; break;
        case O_HELP: case 'h': fputs(help, stdout); model_flags_help(stdout); fputs(help_tail, stdout); return 0;
        default: return cli_usage("train", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("train", "unexpected argument '%s'", argv[optind]);
    if (!o.out && o.resume) o.out = o.resume;
    if (!o.data || !o.out) return cli_usage("train", "--data and --out are required");
    if (o.steps && o.epochs) return cli_usage("train", "give --steps or --epochs, not both");
    /* after every flag: NAME=COEF wins over --bias-update, --balance-coef over both */
    if (balance && parse_balance(balance, &o.balance, &o.train))
        return cli_usage("train", "--balance '%s': expected none or a list of seed, switch, aux_free, z_loss", balance);
    if (bal_coef >= 0) o.train.coef_seed = o.train.coef_switch = o.train.coef_z = bal_coef;
    if (augment && parse_augment(augment, &o))
        return cli_usage("train", "--augment '%s': expected none or a list of shift=N (0..8), flip, drop=P (0..1)", augment);

    if (o.expert_parallel > 1 && o.dist == DM_DIST_NONE)
        return cli_usage("train", "--expert-parallel needs --dist dp (and mpirun -np N)");
    int rc;
    if (o.dist != DM_DIST_NONE && (rc = cli_dist_start("train", dist_timeout, &o.comm))) return rc;

    int prank = o.comm ? dm_comm_rank(o.comm) : 0;
    if ((rc = cli_profile_start("train", profile, prank))) return cli_dist_end(o.comm, rc);
    view v = {.tty = isatty(STDOUT_FILENO), .out = o.out, .resume = o.resume, .holdout = -1};
    if (v.tty) o.progress_every = 5;
    double t_start = cli_now();
    dm_run_result res = {.struct_size = sizeof res};
    dm_error err;
    if (o.train.precision == DM_PREC_BF16 && !dm_precision_native(DM_PREC_BF16, DM_ISA_AUTO))
        fprintf(stderr, "deepmoe train: note: no AVX512_BF16 here (the CPU lacks it, or DEEPMOE_ISA is below "
                        "avx512): --precision bf16 computes the same numbers from rounded fp32 copies, slower "
                        "than fp32\n");
    dm_status st = dm_run_train(&o, on_progress, &v, &res, &err);
    end_live(&v);
    fflush(stdout);
    if (st) {
        return cli_dist_end(o.comm, cli_profile_stop("train", profile, o.comm, cli_error("train", &err)));
    }
    if (!o.comm || dm_comm_rank(o.comm) == 0) print_result(&v, &res, t_start);
    return cli_dist_end(o.comm, cli_profile_stop("train", profile, o.comm, 0));
}

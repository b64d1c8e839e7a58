/* cmd_quantize.c - deepmoe quantize: a model's experts in a compressed weight
 * type (bf16, f16, q8, 2:4 sparse), the top-k flip rate it causes. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char help[] =
    "usage: deepmoe quantize --model IN --out OUT --type T [--router f32|same] [--embed f32|same]\n"
    "                        [--group G] [--data SPEC] [options]\n\n"
    "Writes IN's model with its experts' weights converted to type T (docs/formats.md\n"
    "has the file layout of every type):\n"
    "  bf16        bfloat16 (round to nearest even); the GEMM rounds activations to bf16\n"
    "              and sums in fp32 (AVX512_BF16 vdpbf16ps)\n"
    "  f16         IEEE half (PyTorch's model.half() storage); fp32 activations (F16C)\n"
    "  q8          int8, symmetric, one fp32 scale per output row (or per --group G\n"
    "              values along K); activations quantized to int8 per row at run time\n"
    "              (AVX-512 VNNI)\n"
    "  nm24[:V]    2:4 structured sparsity along K: of every 4 weights the 2 largest in\n"
    "              magnitude are kept, values V = f32 (default), bf16 or q8, with 2-bit\n"
    "              positions; fine-tune the pruned model with deepmoe train --model OUT\n"
    "              --keep-sparsity (the mask stays fixed)\n"
    "  f32         dequantize a compressed model back to a trainable fp32 model\n"
    "The router is kept in fp32 (routing decisions are sensitive) unless --router\n"
    "same; the embedding and the head stay fp32 unless --embed same (--router same --embed\n"
    "same converts every linear layer, as PyTorch's quantize_dynamic). With --data, the\n"
    "top-k flip rate on\n"
    "its test split is reported: the share of rows whose chosen expert set (in any\n"
    "layer) differs from IN's.\n\n"
    "  --model PATH    the model to convert (f32, or any type: it is dequantized first)\n"
    "  --out PATH      the file to write\n"
    "  --type T        bf16 | f16 | q8 | nm24 | nm24:f32 | nm24:bf16 | nm24:q8 | f32\n"
    "  --router R      f32 (default) or same (the router in T too)\n"
    "  --embed E       f32 (default) or same: the embedding and the classifier head in T\n"
    "  --group G       q8 only: one scale per G = 32, 64 or 128 values along K (default:\n"
    "                  one per output row)\n"
    "  --data SPEC     rows to measure the top-k flip rate on: X.npy (raw rows, as infer\n"
    "                  takes them) or a dataset SPEC (its test split; deepmoe train --help)\n"
    "  --rows N        at most N rows of --data (default 10000; 0 = all)\n"
    "  --threads N     worker threads (0 = all CPUs)\n"
    "  --top-k K       k for a model file without deepmoe metadata\n"
    "  --json          print one JSON object on the last line\n";

static long long file_size(const char *path)
{
    struct stat s;
    return stat(path, &s) ? -1 : (long long)s.st_size;
}

/* The rows of SPEC for model m: a bare X.npy as it is (raw rows, as infer takes
 * them), else SPEC's test split, raw when m records its preprocessing. */
static int load_rows(const char *spec, const dm_model *m, dm_data *d, dm_array *a, dm_error *err)
{
    const dm_config *c = dm_model_config(m);
    size_t len = strlen(spec);
    if (len > 4 && !strcmp(spec + len - 4, ".npy") && !strchr(spec, ',')) {
        if (dm_npy_read(spec, a, err)) return -1;
        int in = c->in_dim ? c->in_dim : c->dim;
        if (a->cols != in) {
            snprintf(err->msg, sizeof err->msg, "%s has %lld features per row, the model takes %d", spec,
                     (long long)a->cols, in);
            err->code = DM_ERR_SHAPE;
            return -1;
        }
        d->test.x = a->data;
        d->test.n = a->rows;
        snprintf(d->name, sizeof d->name, "%s", spec);
        return 0;
    }
    const char *pre = NULL;
    dm_model_preprocess(m, &pre, NULL, NULL);
    dm_task task = c->n_classes ? DM_TASK_CLASSIFY : DM_TASK_REGRESS;
    if (dm_data_load_norm(spec, task, 0, -1, pre ? DM_NORM_NONE : DM_NORM_DEFAULT, d, err)) return -1;
    int in = c->in_dim ? c->in_dim : c->dim;
    if (d->test.dim != in) {
        snprintf(err->msg, sizeof err->msg, "%s has %d features per row, the model takes %d", spec, d->test.dim, in);
        err->code = DM_ERR_SHAPE;
        return -1;
    }
    return 0;
}

int cmd_quantize(int argc, char **argv)
{
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'}, {"out", required_argument, 0, 'o'},
        {"type", required_argument, 0, 'T'}, {"router", required_argument, 0, 'r'},
        {"group", required_argument, 0, 'g'}, {"data", required_argument, 0, 'd'},
        {"embed", required_argument, 0, 'e'},
        {"rows", required_argument, 0, 'n'}, {"threads", required_argument, 0, 't'},
        {"top-k", required_argument, 0, 'k'}, {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *in = NULL, *out = NULL, *data = NULL;
    dm_quantize_opts q;
    dm_quantize_opts_default(&q);
    q.type = NULL;
    int rows = 10000, threads = 0, top_k = 0, json = 0, oc;
    optind = 1;
    opterr = 0;
    while ((oc = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (oc) {
        case 'm': in = optarg; break;
        case 'o': out = optarg; break;
        case 'T': q.type = optarg; break;
        case 'd': data = optarg; break;
        case 'j': json = 1; break;
        case 'r':
            if (!strcmp(optarg, "f32")) q.router_same = 0;
            else if (!strcmp(optarg, "same")) q.router_same = 1;
            else return cli_usage("quantize", "--router '%s': expected f32 or same", optarg);
            break;
        case 'e':
            if (!strcmp(optarg, "f32")) q.embed_same = 0;
            else if (!strcmp(optarg, "same")) q.embed_same = 1;
            else return cli_usage("quantize", "--embed '%s': expected f32 or same", optarg);
            break;
        case 'g':
            if (cli_int(optarg, 0, 1 << 20, &q.group) || (q.group && q.group != 32 && q.group != 64 && q.group != 128))
                return cli_usage("quantize", "--group '%s' must be 32, 64 or 128 (or 0: one scale per row)", optarg);
            break;
        case 'n': if (cli_int(optarg, 0, 1 << 30, &rows)) return cli_usage("quantize", "--rows '%s' must be >= 0", optarg); break;
        case 't': if (cli_int(optarg, 0, 1024, &threads)) return cli_usage("quantize", "--threads '%s' must be in 0..1024", optarg); break;
        case 'k': if (cli_int(optarg, 1, 4096, &top_k)) return cli_usage("quantize", "--top-k '%s' must be in 1..4096", optarg); break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("quantize", "unknown option or missing value: '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("quantize", "unexpected argument '%s'", argv[optind]);
    if (!in || !out || !q.type) return cli_usage("quantize", "--model, --out and --type are required");
    if (q.group && strcmp(q.type, "q8"))
        return cli_usage("quantize", "--group applies to --type q8 only (not %s)", q.type);

    dm_error err;
    dm_model *src = NULL, *dst = NULL;
    dm_pool *pool = NULL;
    dm_data d = {0};
    dm_array rowsx = {0};
    int rc = 1;
    dm_model_opts mo;
    dm_model_opts_default(&mo);
    mo.top_k = top_k;
    mo.packed_only = 1;
    if (dm_model_load(in, &mo, &src, &err) || dm_model_quantize(src, &q, &dst, &err)) {
        rc = cli_error("quantize", &err);
        goto done;
    }
    if (dm_model_save(dst, out, &err)) {
        rc = cli_error("quantize", &err);
        goto done;
    }
    long long before = file_size(in), after = file_size(out);
    printf("%s -> %s: experts %s -> %s, router %s -> %s, embedding/head %s -> %s\n", in, out, dm_model_wtype(src),
           dm_model_wtype(dst), dm_model_router_wtype(src), dm_model_router_wtype(dst), dm_model_embed_wtype(src),
           dm_model_embed_wtype(dst));
    printf("  file %lld -> %lld bytes (%.1f%% smaller)\n", before, after,
           before > 0 ? 100.0 * (double)(before - after) / (double)before : 0.0);
    double flip = -1;
    int64_t n = 0;
    if (data) {
        /* against the fp32 values of IN (a compressed IN: its own routing) */
        if (load_rows(data, src, &d, &rowsx, &err) || dm_pool_create(threads, &pool, &err)) {
            rc = cli_error("quantize", &err);
            goto done;
        }
        n = rows && d.test.n > rows ? rows : d.test.n;
        const dm_config *c = dm_model_config(src);
        double *per = calloc((size_t)c->n_layers, sizeof *per);
        if (!per || dm_topk_flip_rate(src, dst, pool, d.test.x, n, &flip, per, &err)) {
            free(per);
            rc = per ? cli_error("quantize", &err) : (fprintf(stderr, "deepmoe quantize: out of memory\n"), 1);
            goto done;
        }
        printf("  top-k flip rate %.4f on %lld rows of %s (%s)", flip, (long long)n, d.name,
               c->n_layers > 1 ? "any layer" : "one layer");
        if (c->n_layers > 1) {
            printf("; per layer");
            for (int l = 0; l < c->n_layers; l++) printf(" %.4f", per[l]);
        }
        printf("\n");
        free(per);
    }
    if (json) {
        printf("{\"type\":\"%s\",\"router\":\"%s\",\"embed\":\"%s\",\"group\":%d,\"bytes_in\":%lld,\"bytes_out\":%lld",
               dm_model_wtype(dst), dm_model_router_wtype(dst), dm_model_embed_wtype(dst), q.group, before, after);
        if (flip >= 0) printf(",\"flip_rate\":%.6f,\"flip_rows\":%lld", flip, (long long)n);
        else printf(",\"flip_rate\":null");
        printf("}\n");
    }
    rc = 0;
done:
    if (rowsx.data) {
        dm_array_free(&rowsx);
        memset(&d, 0, sizeof d);  /* its rows were rowsx's */
    }
    dm_data_free(&d);
    dm_pool_free(pool);
    dm_model_free(dst);
    dm_model_free(src);
    return rc;
}

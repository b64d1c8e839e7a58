/* deepmoe/report.h - the training report: one self-contained HTML file (inline
 * SVG, no script, nothing fetched) from training run directories. */
#ifndef DEEPMOE_REPORT_H
#define DEEPMOE_REPORT_H

#ifdef __cplusplus
extern "C" {
#endif

/* Reads each run directory (1 to 16, written by dm_run_train / deepmoe train): its
 * metrics.jsonl (required), model.safetensors (the config) and
 * checkpoint/state.safetensors (the training settings), and writes one page to
 * out_path (atomically). The page holds:
 *  - loss, accuracy (or MSE), learning rate and throughput over steps;
 *  - expert utilization with the seed's 85% line, MaxVio and routing accuracy, and for
 *    distributed runs the communication share with the seed's 15% line;
 *  - per run and layer, a heatmap of expert load over steps and the aux-free biases;
 *  - a table of every setting and final result, with the rows that differ between
 *    runs marked.
 * Several runs share each chart, one color each. Errors name the file. */
DM_API dm_status dm_report_write(const char *const *run_dirs, int n_runs, const char *out_path, dm_error *err);

#ifdef __cplusplus
}
#endif

#endif

/* train/plot.h - `trainer plot`: SVG charts with no dependency (a run's curves, a results table).
 *
 *   trainer plot --metrics OUT/metrics.jsonl --out curves.svg    one panel per metric family:
 *       loss, rewards (chosen/rejected), margins, accuracies, log-probs (chosen/rejected); the
 *       training lines solid, the eval_ lines (evaluations) dashed with dots
 *   trainer plot --table results.tsv --out bars.svg             grouped bars with error bars
 *       from a TSV with a header: column 1 the group, column 2 the series, a "mean" column
 *       (else column 3) and an optional "std" column */
#ifndef TRAIN_PLOT_H
#define TRAIN_PLOT_H

int cmd_plot(int argc, char **argv);

#endif

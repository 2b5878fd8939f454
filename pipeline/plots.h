/* plots.h - the pipeline report's plots (gnuplot; see plots.c). */
#ifndef KD_PIPELINE_PLOTS_H
#define KD_PIPELINE_PLOTS_H

#include <jansson.h>

#include "pipeline/run.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Write OUTPUT/plots/{loss,acceptance,lengths,pass1}.{dat,gp} for what the
 * pipeline has, and draw each as .svg with gnuplot when it is installed.
 * *drawn receives the array of the SVGs' paths, relative to OUTPUT (new
 * reference). A plot gnuplot could not draw is a warning, not an error.
 * Errors: KD_E_IO (the plots folder), KD_E_NOMEM. */
int kd_pipeline_plots(const kd_pipeline_config *c, json_t *state, json_t **drawn);

#ifdef __cplusplus
}
#endif
#endif

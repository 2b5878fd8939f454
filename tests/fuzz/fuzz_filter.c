/* fuzz_filter.c - libFuzzer harness for the curation filter language
 * (kd_filter_parse in data/curate.h). Each input is parsed as an expression;
 * a parse must either succeed or fail with KD_E_CONFIG naming a column, never
 * crash, and an accepted expression is evaluated on a few rows (which must
 * give 0 or 1 and the same answer twice).
 *
 *     build-cur-fuzz/tests/fuzz_filter /tmp/corpus_filter -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "data/curate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0; /* the language reads a C string: stop at the first NUL */
    kd_filter *f = NULL;
    int st = kd_filter_parse(s, &f);
    if (st == KD_OK) {
        static const kd_filter_row rows[] = {
            {.chars = 10, .tokens = 5, .verdict = "accepted", .source = "a", .finish_reason = "stop", .lang = "latin"},
            {.chars = 1e9, .pass_rate = 0.5, .verdict = "none", .source = "", .finish_reason = "length", .lang = "cjk"},
            {0},
        };
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
            int a = kd_filter_eval(f, &rows[i]), b = kd_filter_eval(f, &rows[i]);
            if ((a != 0 && a != 1) || a != b)
                abort();
        }
        kd_filter_free(f);
    } else if (st != KD_E_CONFIG && st != KD_E_NOMEM) {
        abort();
    } else if (st == KD_E_CONFIG && !strstr(kd_strerror(st), "column ")) {
        abort();
    }
    free(s);
    return 0;
}

/* fuzz_safetensors.c - libFuzzer harness for the safetensors reader.
 *
 * Each input is validated in memory with kd_st_validate, then written to a
 * per-process file and opened with kd_st_open, the mmap path the tool uses.
 * When the open succeeds, the first and last byte of every tensor are read
 * so that ASan catches a tensor that reaches outside the mapping.
 *
 *     ./fuzz_safetensors -max_total_time=60 corpus/   (seeds: tests/fuzz/corpus/safetensors)
 */
#include "core/safetensors.h"
#include "core/status.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* assert() is compiled out in RelWithDebInfo (NDEBUG); the harness's checks must not be */
#define MUST(cond)                                                                  \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #cond,   \
                    kd_strerror(kd_st_validate(data, size, "fuzz")));               \
            abort();                                                                \
        }                                                                           \
    } while (0)

static char path_[64];

static void remove_path_(void)
{
    unlink(path_);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int vrc = kd_st_validate(data, size, "fuzz");
    MUST(vrc == KD_OK || vrc == KD_E_FORMAT);
    if (vrc != KD_OK)
        (void)kd_strerror(vrc); /* the message must format without faults */

    if (!path_[0]) {
        snprintf(path_, sizeof path_, "/tmp/fuzz_safetensors.%ld.safetensors", (long)getpid());
        atexit(remove_path_);
    }
    FILE *f = fopen(path_, "wb");
    if (!f)
        abort(); /* the harness cannot work without /tmp */
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);

    kd_st *st;
    int orc = kd_st_open(path_, &st);
    MUST(orc == vrc); /* the mapping and the buffer must agree */
    if (orc != KD_OK)
        return 0;
    volatile unsigned sink = 0;
    for (size_t i = 0; i < kd_st_count(st); i++) {
        const kd_st_tensor *t = kd_st_at(st, i);
        MUST(kd_st_find(st, t->name) == t);
        if (t->nbytes) {
            const unsigned char *p = t->data;
            sink += p[0];
            sink += p[t->nbytes - 1];
        }
    }
    (void)kd_st_metadata(st, "format");
    (void)sink;
    kd_st_free(st);
    return 0;
}

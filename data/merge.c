/* merge.c - `distill data merge OUT SHARD...`: one dataset from the shards that
 * independent generation nodes wrote. See tools.h for the rules. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/status.h"
#include "tools.h"

/* Copy the lineage table of `in` into the batch (equal entries are shared);
 * (*map)[id in the shard] = id in the output. */
static int merge_lineage(kd_store_read *in, kd_store_batch *b, uint32_t **map, size_t *nmap)
{
    json_t *all;
    KD_TRY(kd_store_meta_list(in, "lineage/", &all));
    const char *key;
    json_t *e;
    int st = KD_OK;
    json_object_foreach(all, key, e)
    {
        unsigned long id = strtoul(key + strlen("lineage/"), NULL, 10);
        if (id == 0 || id >= UINT32_MAX)
            continue;
        if (id >= *nmap) {
            size_t n = id + 16;
            uint32_t *m = realloc(*map, n * sizeof *m);
            if (!m) {
                st = kd_err(KD_E_NOMEM, "lineage map");
                break;
            }
            memset(m + *nmap, 0, (n - *nmap) * sizeof *m);
            *map = m;
            *nmap = n;
        }
        uint32_t got;
        if ((st = kd_store_lineage_add_json(b, e, 1, &got)) != KD_OK)
            break;
        (*map)[id] = got;
    }
    json_decref(all);
    return st;
}

/* 1 when two prompt records agree on what makes them the same prompt. */
static int same_prompt(const kd_record *a, const kd_record *b)
{
    return a->chat == b->chat && a->text.len == b->text.len && !memcmp(a->text.ptr, b->text.ptr, a->text.len) &&
           a->messages.len == b->messages.len && !memcmp(a->messages.ptr, b->messages.ptr, a->messages.len);
}

static int merge_shard(kd_store *out, const char *shard, const kd_merge_opts *o, kd_merge_stats *ms,
                       kd_progress *prog)
{
    kd_store *in;
    kd_store_read *r = NULL;
    kd_store_batch *b = NULL;
    kd_store_cursor *c = NULL;
    uint32_t *map = NULL;
    size_t nmap = 0, batch_bytes = o->batch_bytes ? o->batch_bytes : 16u << 20;
    unsigned char *copy = NULL;
    size_t copy_cap = 0;
    KD_TRY(kd_store_open(shard, KD_STORE_RDONLY, &in));
    int st = kd_store_read_begin(in, &r);
    if (st == KD_OK)
        st = kd_store_batch_begin(out, &b);
    if (st == KD_OK) {
        uint64_t before = 0;
        json_t *all = NULL;
        if ((st = kd_store_meta_list(kd_store_batch_view(b), "lineage/", &all)) == KD_OK)
            before = json_object_size(all);
        json_decref(all);
        if (st == KD_OK)
            st = merge_lineage(r, b, &map, &nmap);
        if (st == KD_OK && (st = kd_store_meta_list(kd_store_batch_view(b), "lineage/", &all)) == KD_OK)
            ms->lineages += json_object_size(all) - before;
        json_decref(all);
    }
    for (int db = 0; db < KD_DB_COUNT && st == KD_OK; db++) {
        kd_record rec;
        int rc;
        if ((st = kd_store_cursor_open(r, (kd_db)db, &c)) != KD_OK)
            break;
        while (st == KD_OK && (rc = kd_store_cursor_next(c, &rec)) == 1) {
            const void *key, *val;
            size_t klen, vlen;
            int added = 0;
            kd_store_cursor_raw(c, &key, &klen, &val, &vlen);
            if (prog)
                kd_progress_add(prog, 1);
            if (db == KD_DB_PROMPTS) {
                kd_record have;
                int g = kd_store_get(kd_store_batch_view(b), KD_DB_PROMPTS, rec.id, 0, &have);
                if (g == KD_OK) {
                    if (!same_prompt(&rec, &have))
                        st = kd_err(KD_E_FORMAT,
                                    "merge: prompt %" PRIu64 " in shard '%s' has a different text than the "
                                    "prompt %" PRIu64 " already in '%s' (the shards disagree on prompt ids)",
                                    rec.id, shard, rec.id, kd_store_path(out));
                    ms->duplicates[db]++;
                    continue;
                }
                if (g != KD_E_NOTFOUND) {
                    st = g;
                    break;
                }
                kd_err_clear();
            }
            if (db == KD_DB_VERDICTS) {
                /* a verdict travels with its generation: copy it only when the
                 * output's generation of the unit is this shard's (or neither has one) */
                const void *go, *gs;
                size_t gol, gsl;
                int a = kd_store_get_raw(kd_store_batch_view(b), KD_DB_GENERATIONS, rec.id, rec.sample, &go, &gol);
                int c2 = kd_store_get_raw(r, KD_DB_GENERATIONS, rec.id, rec.sample, &gs, &gsl);
                if ((a != KD_OK && a != KD_E_NOTFOUND) || (c2 != KD_OK && c2 != KD_E_NOTFOUND)) {
                    st = a != KD_OK && a != KD_E_NOTFOUND ? a : c2;
                    break;
                }
                kd_err_clear();
                int same = (a == KD_E_NOTFOUND && c2 == KD_E_NOTFOUND) ||
                           (a == KD_OK && c2 == KD_OK && kd_record_same_but_lineage(go, gol, gs, gsl));
                if (!same) {
                    ms->duplicates[db]++;
                    continue;
                }
            }
            if (vlen > copy_cap) {
                unsigned char *p = realloc(copy, vlen);
                if (!p) {
                    st = kd_err(KD_E_NOMEM, "record copy");
                    break;
                }
                copy = p;
                copy_cap = vlen;
            }
            memcpy(copy, val, vlen);
            kd_record_set_lineage(copy, vlen, rec.lineage < nmap ? map[rec.lineage] : 0);
            st = kd_store_put_raw(b, (kd_db)db, rec.id, rec.sample, copy, vlen, KD_PUT_KEEP, &added);
            if (added)
                ms->added[db]++;
            else
                ms->duplicates[db]++;
            if (st == KD_OK && kd_store_batch_bytes(b) >= batch_bytes) {
                /* commit and go on; the cursor stays on the read side */
                st = kd_store_batch_commit(b);
                b = NULL;
                if (st == KD_OK)
                    st = kd_store_batch_begin(out, &b);
            }
        }
        if (st == KD_OK && rc < 0)
            st = rc;
        kd_store_cursor_close(c);
        c = NULL;
    }
    if (b) {
        if (st == KD_OK)
            st = kd_store_batch_commit(b);
        else
            kd_store_batch_abort(b);
    }
    if (r)
        kd_store_read_end(r);
    kd_store_close(in);
    free(map);
    free(copy);
    if (st)
        kd_err_wrap(st, "merging shard '%s'", shard);
    return st;
}

int kd_data_merge(const char *outp, const char *const *shards, int nshards, const kd_merge_opts *o,
                  kd_merge_stats *stats)
{
    kd_merge_stats local;
    kd_merge_stats *ms = stats ? stats : &local;
    static const kd_merge_opts defaults = {0};
    if (!o)
        o = &defaults;
    memset(ms, 0, sizeof *ms);
    uint64_t total = 0;
    for (int i = 0; i < nshards; i++) {
        kd_store *in;
        kd_store_read *r;
        KD_TRY(kd_err_wrap(kd_store_open(shards[i], KD_STORE_RDONLY, &in), "merge"));
        int st = kd_store_read_begin(in, &r);
        for (int db = 0; db < KD_DB_COUNT && st == KD_OK; db++) {
            uint64_t n = 0;
            st = kd_store_count(r, (kd_db)db, &n);
            total += n;
        }
        if (r)
            kd_store_read_end(r);
        kd_store_close(in);
        KD_TRY(st);
    }
    kd_store *out;
    kd_store_opts so = {.flags = KD_STORE_CREATE | o->store_flags};
    KD_TRY(kd_store_open_opts(outp, &so, &out));
    kd_progress prog;
    if (o->progress)
        kd_progress_init(&prog, "merge", total);
    int st = KD_OK;
    for (int i = 0; i < nshards && st == KD_OK; i++)
        st = merge_shard(out, shards[i], o, ms, o->progress ? &prog : NULL);
    if (o->progress)
        kd_progress_finish(&prog);
    int c = kd_store_close(out);
    return st ? st : c;
}

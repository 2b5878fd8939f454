/* train.c - the SFT loop: schedule, steps, eval, checkpoints, resume, export.
 * See sft.h for the contract and configs/sft/tiny_cpu.yaml for every key.
 */
#include "sft/sft_impl.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/log.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "core/util.h"
#include "student/export.h"
#include "student/model.h"

/* ---- configuration ------------------------------------------------------------------ */

static const kd_cfg_field data_fields_[] = {
    KD_CFG_STRING(kd_sft_data, train, NULL, "training examples: a dataset folder or a .jsonl of chats"),
    KD_CFG_STRING(kd_sft_data, eval, NULL, "held-out examples (same kinds); ~ = eval_fraction of train"),
    KD_CFG_FLOAT(kd_sft_data, eval_fraction, "0", 0, 0.5, "share of train held out when eval is ~"),
    {"template", KD_CFG_T_STRING, offsetof(kd_sft_data, template_name), "chatml", 0, 0, NULL, NULL,
     "chat template for .jsonl chats (chatml, qwen3, llama3, llama3_1, deepseek_v3, deepseek_r1)", NULL},
    KD_CFG_STRING(kd_sft_data, tokenizer, NULL, "folder with tokenizer.json; ~ = the model folder"),
    KD_CFG_STRING(kd_sft_data, messages_field, "messages", ".jsonl: the key of the messages array"),
    KD_CFG_INT(kd_sft_data, max_len, "4096", 2, 1 << 24, "tokens per packed row"),
    KD_CFG_ENUM(kd_sft_data, overlong, "truncate", "truncate|drop", "examples longer than max_len"),
    KD_CFG_ENUM(kd_sft_data, loss_on, "assistant", "assistant|all",
                "tokens that count in the loss: assistant turns with their end-of-turn, or all"),
    KD_CFG_BOOL(kd_sft_data, allow_empty, "false",
                "no usable training example: export the model unchanged (warned) instead of failing"),
    KD_CFG_END};

static const kd_cfg_field optim_fields_[] = {
    KD_CFG_FLOAT(kd_sft_optim, lr, "5e-5", 0, 1, "peak learning rate"),
    KD_CFG_FLOAT(kd_sft_optim, min_lr_ratio, "0.1", 0, 1, "the schedule ends at lr * min_lr_ratio"),
    KD_CFG_FLOAT(kd_sft_optim, warmup_ratio, "0.03", 0, 1, "share of the steps spent warming up"),
    KD_CFG_INT(kd_sft_optim, warmup_steps, "0", 0, 1e12, "warmup steps; > 0 overrides warmup_ratio"),
    KD_CFG_ENUM(kd_sft_optim, schedule, "cosine", "cosine|linear|constant", "lr after warmup"),
    KD_CFG_FLOAT(kd_sft_optim, weight_decay, "0", 0, 10, "AdamW decoupled weight decay"),
    KD_CFG_BOOL(kd_sft_optim, decay_norm_bias, "false", "also decay norm weights and biases"),
    KD_CFG_FLOAT(kd_sft_optim, beta1, "0.9", 0, 0.999999, "AdamW beta1"),
    KD_CFG_FLOAT(kd_sft_optim, beta2, "0.95", 0, 0.999999999, "AdamW beta2"),
    KD_CFG_FLOAT(kd_sft_optim, eps, "1e-8", 0, 1, "AdamW epsilon"),
    KD_CFG_FLOAT(kd_sft_optim, grad_clip, "1.0", 0, 1e9, "global gradient-norm clip; 0 = off"),
    KD_CFG_END};

static const kd_cfg_field train_fields_[] = {
    KD_CFG_INT(kd_sft_train, epochs, "3", 1, 1e6, "passes over the training examples"),
    KD_CFG_INT(kd_sft_train, max_steps, "0", 0, 1e12, "stop after this many optimizer steps; 0 = epochs"),
    KD_CFG_INT(kd_sft_train, micro_batch, "1", 1, 1e6, "packed rows per forward/backward"),
    KD_CFG_INT(kd_sft_train, grad_accum, "1", 1, 1e6, "micro-batches per optimizer step"),
    KD_CFG_ENUM(kd_sft_train, nonfinite, "stop", "stop|skip",
                "a nan/inf loss or gradient: stop the run, or skip the step with a warning"),
    KD_CFG_INT(kd_sft_train, stop_after, "0", 0, 1e12,
               "stop this process after N steps, checkpointing (a time-limited job); 0 = off"),
    KD_CFG_BOOL(kd_sft_train, recompute, "false",
                "CUDA: activation checkpointing per layer (keep layer inputs, redo the forward in the backward)"),
    KD_CFG_END};

static const kd_cfg_field output_fields_[] = {
    KD_CFG_STRING(kd_sft_output, dir, "runs/sft", "output folder: metrics, checkpoints, final export"),
    KD_CFG_INT(kd_sft_output, log_every, "1", 1, 1e9, "steps between metrics lines"),
    KD_CFG_INT(kd_sft_output, eval_every, "0", 0, 1e12, "steps between eval losses; 0 = at the end only"),
    KD_CFG_INT(kd_sft_output, save_every, "0", 0, 1e12, "steps between checkpoints; 0 = at the end only"),
    KD_CFG_INT(kd_sft_output, keep_last, "2", 1, 1e6, "checkpoints kept"),
    KD_CFG_BOOL(kd_sft_output, resume, "false", "continue from the newest checkpoint in dir"),
    {"export", KD_CFG_T_BOOL, offsetof(kd_sft_output, do_export), "true", 0, 0, NULL, NULL,
     "write the HF export to dir/final at the end", NULL},
    KD_CFG_ENUM(kd_sft_output, export_dtype, "bf16", "bf16|f32", "dtype of the exported weights"),
    KD_CFG_INT(kd_sft_output, shard_mb, "5000", 1, 1e9, "export shards above this many MB"),
    KD_CFG_BOOL(kd_sft_output, progress, "true", "draw a progress bar"),
    KD_CFG_END};

static const kd_cfg_field sft_fields_[] = {
    KD_CFG_STRING(kd_sft_config, model, NULL, "HF folder of the student to fine-tune (qwen2 or llama)"),
    KD_CFG_SECTION(kd_sft_config, data, data_fields_, "examples"),
    KD_CFG_SECTION(kd_sft_config, optim, optim_fields_, "AdamW and the learning-rate schedule"),
    KD_CFG_SECTION(kd_sft_config, train, train_fields_, "steps and batches"),
    KD_CFG_SECTION(kd_sft_config, output, output_fields_, "what the run writes"),
    KD_CFG_SECTION(kd_sft_config, runtime, kd_runtime_fields, "seed, device, threads, logging"),
    KD_CFG_END};

const kd_cfg_schema kd_sft_schema = {"sft", sft_fields_, sizeof(kd_sft_config)};

/* ---- schedule: transformers' get_*_schedule_with_warmup, with a floor ---------------- */

double kd_sft_lr(const kd_sft_optim *o, int64_t step, int64_t total)
{
    int64_t warm = o->warmup_steps > 0 ? o->warmup_steps
                                       : (int64_t)ceil(o->warmup_ratio * (double)total);
    if (step < warm) /* as HF: step 0 runs at lr 0 when there is a warmup */
        return o->lr * (double)step / (double)warm;
    if (o->schedule == KD_SFT_CONSTANT || total <= warm)
        return o->lr;
    double prog = (double)(step - warm) / (double)(total - warm);
    if (prog > 1)
        prog = 1;
    double f = o->schedule == KD_SFT_COSINE ? 0.5 * (1.0 + cos(M_PI * prog)) : 1.0 - prog;
    return o->lr * (o->min_lr_ratio + (1.0 - o->min_lr_ratio) * f);
}

/* ---- checkpoints ------------------------------------------------------------------- */

#define CKPT_PREFIX "step-"

/* The checkpoint steps in dir/checkpoints, ascending. */
static int list_ckpts_(const char *dir, int64_t **steps, int64_t *n)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/checkpoints", dir);
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(p);
    if (!d)
        return KD_OK;
    struct dirent *e;
    int64_t cap = 0;
    while ((e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, CKPT_PREFIX, 5))
            continue;
        long long s = strtoll(e->d_name + 5, &end, 10);
        if (*end || s < 0)
            continue; /* step-N.tmp: an interrupted save */
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *ns = realloc(*steps, (size_t)cap * sizeof *ns);
            if (!ns) {
                closedir(d);
                return kd_err(KD_E_NOMEM, "checkpoint list");
            }
            *steps = ns;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    for (int64_t i = 1; i < *n; i++) /* insertion sort: a handful */
        for (int64_t j = i; j > 0 && (*steps)[j - 1] > (*steps)[j]; j--) {
            int64_t t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = t;
        }
    return KD_OK;
}

/* What must agree between a checkpoint and the run resuming from it, stored as
 * trainer_state.json's "run": the model's shape, the examples and their order,
 * how a step is split, the schedule's length (these ten in every checkpoint),
 * and every setting that enters the loss or the update (added 2026-12-07, so
 * older checkpoints lack them: each optim key and data.loss_on/overlong, named
 * by their config path, read through the schema so that a new optim key joins
 * them).
 * Left out, because they change neither the losses nor the update: the output's
 * cadence and looks (log/eval/save_every, keep_last, progress, export),
 * train.stop_after, train.nonfinite, train.recompute, and the runtime's device
 * and threads (a run may stop on one device and resume on the other;
 * docs/training.md). */
typedef struct run_key_ {
    int64_t vocab, hidden, layers, max_len, micro_batch, grad_accum, seed, total_steps;
    int64_t train_examples, train_tokens;
    const kd_sft_config *cfg; /* the update's settings */
} run_key_;

/* The part of the key that every checkpoint has. */
static json_t *key_json_(const run_key_ *k)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "vocab_size",
                     (json_int_t)k->vocab, "hidden_size", (json_int_t)k->hidden, "num_layers",
                     (json_int_t)k->layers, "max_len", (json_int_t)k->max_len, "micro_batch",
                     (json_int_t)k->micro_batch, "grad_accum", (json_int_t)k->grad_accum, "seed",
                     (json_int_t)k->seed, "total_steps", (json_int_t)k->total_steps,
                     "train_examples", (json_int_t)k->train_examples, "train_tokens",
                     (json_int_t)k->train_tokens);
}

/* Set o["SECTION.KEY"] to the field's value in `base` (its section's struct),
 * typed as the schema says: an enum by its choice's name, a float as a JSON
 * real (jansson writes 17 digits, so the double comes back exactly). Returns
 * 0, or -1 when out of memory. */
static int put_setting_(json_t *o, const char *section, const kd_cfg_field *f, const void *base)
{
    const char *p = (const char *)base + f->offset;
    char name[128];
    snprintf(name, sizeof name, "%s.%s", section, f->key);
    json_t *v = NULL;
    switch (f->type) {
    case KD_CFG_T_INT:
        v = json_integer((json_int_t) * (const int64_t *)p);
        break;
    case KD_CFG_T_FLOAT:
        v = json_real(*(const double *)p);
        break;
    case KD_CFG_T_BOOL:
        v = json_boolean(*(const int *)p);
        break;
    case KD_CFG_T_ENUM: {
        const char *c = f->choices, *bar;
        for (int i = *(const int *)p; i > 0 && (bar = strchr(c, '|')); i--)
            c = bar + 1;
        bar = strchr(c, '|');
        v = json_stringn(c, bar ? (size_t)(bar - c) : strlen(c));
        break;
    }
    default:
        assert(!"a run-key setting must be an int, float, bool or enum");
    }
    return json_object_set_new(o, name, v);
}

/* The part of the key added later: the settings of the loss and the update.
 * NULL when out of memory; the caller owns the object. */
static json_t *settings_json_(const kd_sft_config *c)
{
    json_t *o = json_object();
    int bad = !o;
    for (const kd_cfg_field *f = optim_fields_; f->key && !bad; f++)
        bad = put_setting_(o, "optim", f, &c->optim);
    for (const kd_cfg_field *f = data_fields_; f->key && !bad; f++)
        if (!strcmp(f->key, "loss_on") || !strcmp(f->key, "overlong"))
            bad = put_setting_(o, "data", f, &c->data);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* A key's value for a message: a real in the fewest digits that give it back. */
static char *value_text_(const json_t *v)
{
    if (!v)
        return strdup("missing");
    if (json_is_real(v)) {
        char b[64];
        for (int prec = 6; prec <= 17; prec++) {
            snprintf(b, sizeof b, "%.*g", prec, json_real_value(v));
            if (strtod(b, NULL) == json_real_value(v))
                break;
        }
        return strdup(b);
    }
    return json_dumps(v, JSON_ENCODE_ANY);
}

/* Compare every key of `want` (this run) with the checkpoint's `run`. A key the
 * checkpoint lacks is an error when `required`; otherwise it is counted in
 * *unchecked, the first one named in *first (an older checkpoint; the name is
 * valid while `want` lives). */
static int key_check_(const char *cdir, const json_t *run, json_t *want, int required,
                      int *unchecked, const char **first)
{
    const char *k;
    json_t *v;
    json_object_foreach(want, k, v)
    {
        json_t *have = json_object_get(run, k);
        if (!have && !required) {
            if (!(*unchecked)++)
                *first = k;
            continue;
        }
        if (have && json_equal(have, v))
            continue;
        char *there = value_text_(have), *here = value_text_(v);
        int st = kd_err(KD_E_CONFIG, "checkpoint '%s' does not match this run: %s is %s there and "
                        "%s here (start a new output.dir, or restore the old settings)", cdir, k,
                        there ? there : "?", here ? here : "?");
        free(there);
        free(here);
        return st;
    }
    return KD_OK;
}

typedef struct run_pos_ {
    int64_t step, epoch, step_in_epoch, steps_skipped;
} run_pos_;

static int save_ckpt_(sft_model *m, const char *src_dir, const char *dir, const run_key_ *key,
                      const run_pos_ *pos, int64_t keep)
{
    char final[4096], tmp[4200], p[4400];
    snprintf(final, sizeof final, "%s/checkpoints/" CKPT_PREFIX "%08lld", dir, (long long)pos->step);
    snprintf(tmp, sizeof tmp, "%s.tmp", final);
    KD_TRY(kd_rmtree(tmp));
    KD_TRY(kd_mkdirs(tmp));
    int st = KD_OK;
    /* config.json: the checkpoint is itself a loadable model folder */
    char *cfg = NULL;
    size_t clen = 0;
    snprintf(p, sizeof p, "%s/config.json", src_dir);
    if ((st = kd_read_file(p, 64u << 20, &cfg, &clen)))
        return st;
    snprintf(p, sizeof p, "%s/config.json", tmp);
    st = kd_write_file_atomic(p, cfg, clen);
    free(cfg);
    kd_tensor_spec *specs = NULL; /* the manifest, for the shapes; same order as the names */
    size_t nspecs = 0;
    if (st == KD_OK)
        st = kd_model_tensors(sft_model_config(m), &specs, &nspecs);
    for (int which = 0; which < 2 && st == KD_OK; which++) {
        kd_st_writer *w = NULL;
        if ((st = kd_st_writer_new(&w)))
            break;
        for (size_t i = 0; i < nspecs && st == KD_OK; i++) {
            const char *name = specs[i].name;
            float *d;
            size_t numel;
            char nm[512];
            if (which && sft_model_is_buffer(m, name))
                continue; /* no moments */
            for (int mom = 0; mom < (which ? 2 : 1) && st == KD_OK; mom++) {
                st = sft_model_tensor(m, name, which ? 2 + mom : 0, &d, &numel);
                snprintf(nm, sizeof nm, "%s%s", which ? (mom ? "exp_avg_sq." : "exp_avg.") : "", name);
                if (st == KD_OK)
                    st = kd_st_writer_add(w, nm, KD_F32, specs[i].ndim, specs[i].shape, d);
            }
        }
        if (st == KD_OK && !which)
            st = kd_st_writer_meta(w, "format", "pt");
        snprintf(p, sizeof p, "%s/%s", tmp, which ? "optimizer.safetensors" : "model.safetensors");
        if (st == KD_OK)
            st = kd_st_writer_write(w, p);
        kd_st_writer_free(w);
    }
    free(specs);
    if (st)
        return st;
    json_t *run = key_json_(key), *set = settings_json_(key->cfg);
    if (!run || !set || json_object_update(run, set)) {
        json_decref(run);
        json_decref(set);
        return kd_err(KD_E_NOMEM, "trainer state");
    }
    json_decref(set);
    json_t *s = json_pack("{s:I, s:I, s:I, s:I, s:I, s:o}", "step", (json_int_t)pos->step, "epoch",
                          (json_int_t)pos->epoch, "step_in_epoch", (json_int_t)pos->step_in_epoch,
                          "steps_skipped", (json_int_t)pos->steps_skipped, "optimizer_step",
                          (json_int_t)sft_model_step(m), "run", run);
    snprintf(p, sizeof p, "%s/trainer_state.json", tmp);
    st = s ? kd_write_json_atomic(p, s, JSON_INDENT(2) | JSON_SORT_KEYS)
           : kd_err(KD_E_NOMEM, "trainer state");
    json_decref(s);
    if (st)
        return st;
    KD_TRY(kd_rmtree(final));
    if (rename(tmp, final))
        return kd_err(KD_E_IO, "rename '%s': %s", tmp, strerror(errno));
    /* keep the newest `keep` */
    int64_t *steps, n;
    KD_TRY(list_ckpts_(dir, &steps, &n));
    for (int64_t i = 0; i + keep < n; i++) {
        snprintf(p, sizeof p, "%s/checkpoints/" CKPT_PREFIX "%08lld", dir, (long long)steps[i]);
        st = kd_rmtree(p);
        if (st)
            kd_warn("sft: could not remove old checkpoint: %s", kd_strerror(st));
        kd_err_clear();
    }
    free(steps);
    kd_info("sft: checkpoint %s", final);
    return KD_OK;
}

/* Restore model, moments and position from dir's newest checkpoint; *found = 0 if none. */
static int load_ckpt_(sft_model *m, const char *dir, const run_key_ *key, run_pos_ *pos,
                      int *found)
{
    int64_t *steps, n;
    *found = 0;
    KD_TRY(list_ckpts_(dir, &steps, &n));
    if (!n) {
        free(steps);
        return KD_OK;
    }
    char cdir[4096], p[4200];
    snprintf(cdir, sizeof cdir, "%s/checkpoints/" CKPT_PREFIX "%08lld", dir, (long long)steps[n - 1]);
    free(steps);
    snprintf(p, sizeof p, "%s/trainer_state.json", cdir);
    json_error_t je;
    json_t *s = json_load_file(p, 0, &je);
    if (!s)
        return kd_err(KD_E_FORMAT, "'%s': %s", p, je.text);
    int st = KD_OK;
    json_t *run = json_object_get(s, "run"), *want = key_json_(key), *set = settings_json_(key->cfg);
    int unchecked = 0;
    const char *first = NULL;
    if (!want || !set)
        st = kd_err(KD_E_NOMEM, "run key");
    /* the settings first: a changed data.loss_on or overlong also changes the
     * example counts, and the message should name the cause */
    if (st == KD_OK)
        st = key_check_(cdir, run, set, 0, &unchecked, &first);
    if (st == KD_OK)
        st = key_check_(cdir, run, want, 1, &unchecked, &first);
    if (st == KD_OK && unchecked)
        kd_warn("sft: checkpoint '%s' predates the check of the optimizer's settings: %d of them "
                "(%s first) are taken from the config unchecked", cdir, unchecked, first);
    json_decref(want);
    json_decref(set);
    pos->step = json_integer_value(json_object_get(s, "step"));
    pos->epoch = json_integer_value(json_object_get(s, "epoch"));
    pos->step_in_epoch = json_integer_value(json_object_get(s, "step_in_epoch"));
    pos->steps_skipped = json_integer_value(json_object_get(s, "steps_skipped"));
    int64_t ostep = json_integer_value(json_object_get(s, "optimizer_step"));
    json_decref(s);
    if (st)
        return st;
    kd_st *w = NULL, *o = NULL;
    snprintf(p, sizeof p, "%s/model.safetensors", cdir);
    if ((st = kd_st_open(p, &w)))
        return st;
    snprintf(p, sizeof p, "%s/optimizer.safetensors", cdir);
    if ((st = kd_st_open(p, &o))) {
        kd_st_free(w);
        return st;
    }
    kd_tensor_spec *specs = NULL;
    size_t nspecs = 0;
    if ((st = sft_model_set_step(m, ostep)) || (st = kd_model_tensors(sft_model_config(m), &specs, &nspecs)))
        goto done;
    for (size_t i = 0; i < nspecs && st == KD_OK; i++) {
        const char *name = specs[i].name;
        const int kinds = sft_model_is_buffer(m, name) ? 1 : 3;
        for (int which = 0; which < kinds && st == KD_OK; which++) {
            char nm[512];
            snprintf(nm, sizeof nm, "%s%s", which == 1 ? "exp_avg." : which == 2 ? "exp_avg_sq." : "",
                     name);
            const kd_st_tensor *t = kd_st_find(which ? o : w, nm);
            float *d;
            size_t numel;
            if ((st = sft_model_tensor(m, name, which ? which + 1 : 0, &d, &numel)))
                break;
            if (!t || t->dtype != KD_F32 || t->numel != numel)
                st = kd_err(KD_E_FORMAT, "checkpoint '%s': tensor '%s' is missing or not F32 [%zu]",
                            cdir, nm, numel);
            else
                memcpy(d, t->data, numel * sizeof(float));
        }
    }
done:
    free(specs);
    kd_st_free(w);
    kd_st_free(o);
    if (st == KD_OK)
        st = sft_model_push(m); /* to the GPU, when training there */
    if (st == KD_OK) {
        *found = 1;
        kd_info("sft: resuming from %s (step %lld)", cdir, (long long)pos->step);
    }
    return st;
}

/* ---- the run -------------------------------------------------------------------------- */

static int64_t steps_in_(int64_t rows, int64_t per_step) { return (rows + per_step - 1) / per_step; }

/* Mean eval loss over the eval documents (packed once, no shuffle). */
static int eval_(sft_model *m, const sft_docs *ev, const sft_plan *plan, int64_t mb, int loss_on,
                 sft_batch *b, double *out)
{
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t r = 0; r < plan->nrows; r += mb) {
        int64_t n = plan->nrows - r < mb ? plan->nrows - r : mb;
        KD_TRY(sft_batch_fill(b, ev, plan, r, n, loss_on));
        double s;
        int64_t c;
        KD_TRY(sft_model_loss(m, b->ids, b->labels, b->pos, b->B, b->T, &s, &c));
        sum += s;
        cnt += c;
    }
    *out = cnt ? sum / (double)cnt : NAN;
    return KD_OK;
}

static int open_tok_(const kd_sft_config *c, sft_tok *tk)
{
    memset(tk, 0, sizeof *tk);
    KD_TRY(kd_chat_template_find(c->data.template_name ? c->data.template_name : "chatml", &tk->tpl));
    char p[4096];
    const char *dir = c->data.tokenizer ? c->data.tokenizer : c->model;
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    if (access(p, R_OK)) {
        if (c->data.tokenizer)
            return kd_err(KD_E_NOTFOUND, "data.tokenizer: no tokenizer.json in '%s'", dir);
        return KD_OK; /* no tokenizer: .jsonl chats are refused, the vocabulary is checked by size */
    }
    KD_TRY(kd_tok_load(dir, &tk->tok));
    tk->fingerprint = kd_tok_fingerprint(tk->tok);
    return KD_OK;
}

/* The HF export into OUTPUT/final (replacing an older one). */
static int export_(const kd_sft_config *c, sft_model *m, const sft_tok *tk)
{
    int st = KD_OK;
    char fin[4200];
    snprintf(fin, sizeof fin, "%s/final", c->output.dir);
    int64_t eos[2];
    int neos = 0;
    if (tk->tok) {
        int32_t e = kd_tok_token_to_id(tk->tok, kd_chat_template_eot(tk->tpl));
        if (e >= 0)
            eos[neos++] = e;
        int32_t e2 = kd_tok_eos_id(tk->tok);
        if (e2 >= 0 && e2 != e)
            eos[neos++] = e2;
    }
    kd_export_opts eo = {.src_dir = c->model, .tokenizer_dir = c->data.tokenizer,
                         .dtype = c->output.export_dtype == KD_SFT_EXPORT_F32 ? KD_F32 : KD_BF16,
                         .max_shard_bytes = (uint64_t)c->output.shard_mb * 1000000ull,
                         .eos_ids = eos, .neos = neos};
    if (kd_is_dir(fin))
        st = kd_rmtree(fin); /* a resumed run that finishes again replaces its export */
    if (st == KD_OK)
        st = sft_model_export(m, fin, &eo);
    if (st == KD_OK)
        kd_info("sft: exported %s", fin);
    return st;
}

int kd_sft_run(const kd_sft_config *c, kd_sft_result *res)
{
    memset(res, 0, sizeof *res);
    res->last_loss = res->last_eval_loss = NAN;
    if (!c->model)
        return kd_err(KD_E_CONFIG, "sft: 'model' is not set");
    if (!c->data.train)
        return kd_err(KD_E_CONFIG, "sft: 'data.train' is not set");
    const double t0 = kd_now();
    sft_model mm = {0}, *m = &mm;
    sft_tok tk = {0};
    sft_source src = {0}, esrc = {0};
    sft_docs train = {0}, ev = {0};
    sft_plan plan = {0}, eplan = {0};
    sft_batch batch = {0};
    FILE *metrics = NULL;
    kd_progress pb;
    int pb_on = 0;
    const sft_model_opts mo = {.cuda = c->runtime.device == KD_DEVICE_CUDA,
                               .max_tokens = c->train.micro_batch * c->data.max_len,
                               .max_T = c->data.max_len,
                               .recompute = c->train.recompute};
    int st = sft_model_load(c->model, &mo, m);
    batch.flat = !m->g;
    if (st == KD_OK)
        st = open_tok_(c, &tk);
    const int64_t V = st == KD_OK ? sft_model_config(m)->vocab_size : 0;
    if (st == KD_OK && tk.tok && kd_tok_vocab_size(tk.tok) > V)
        st = kd_err(KD_E_CONFIG, "the tokenizer has %d tokens but the model's vocabulary %lld",
                    kd_tok_vocab_size(tk.tok), (long long)V);
    /* examples */
    if (st == KD_OK)
        st = sft_source_open(&src, c->data.train, &tk, c->data.messages_field, &train);
    if (st == KD_OK && src.has_fingerprint && tk.tok && src.fingerprint != tk.fingerprint)
        st = kd_err(KD_E_CONFIG, "'%s' was tokenized with another vocabulary than the model's "
                    "tokenizer (fingerprint %016" PRIx64 ", the model's %016" PRIx64 "): re-tokenize "
                    "it with the model's tokenizer", c->data.train, src.fingerprint, tk.fingerprint);
    if (st == KD_OK && !src.has_fingerprint)
        kd_warn("sft: '%s' does not record its tokenizer; only the id range is checked",
                c->data.train);
    if (st == KD_OK)
        st = sft_docs_prepare(&train, &c->data, V, "train", res);
    if (st == KD_E_NOTFOUND && c->data.allow_empty && train.n == 0) {
        kd_warn("sft: no usable training example in '%s' (data.allow_empty): nothing to train; the model "
                "is exported unchanged", c->data.train);
        kd_err_clear();
        st = kd_mkdirs(c->output.dir);
        if (st == KD_OK && c->output.do_export)
            st = export_(c, m, &tk);
        goto done;
    }
    if (st == KD_OK && c->data.eval) {
        st = sft_source_open(&esrc, c->data.eval, &tk, c->data.messages_field, &ev);
        if (st == KD_OK && esrc.has_fingerprint && tk.tok && esrc.fingerprint != tk.fingerprint)
            st = kd_err(KD_E_CONFIG, "'%s' was tokenized with another vocabulary than the model's",
                        c->data.eval);
        kd_sft_result er = {0};
        if (st == KD_OK)
            st = sft_docs_prepare(&ev, &c->data, V, "eval", &er);
    } else if (st == KD_OK && c->data.eval_fraction > 0) {
        st = sft_docs_split(&train, &ev, c->data.eval_fraction, (uint64_t)c->runtime.seed);
    }
    if (st)
        goto done;
    res->examples = train.n;
    const int64_t per_step = c->train.micro_batch * c->train.grad_accum;
    const uint64_t seed = (uint64_t)c->runtime.seed;
    /* every epoch's row count, for the schedule's length */
    int64_t total = 0, train_tokens = 0;
    int64_t *epoch_steps = calloc((size_t)c->train.epochs, sizeof *epoch_steps);
    if (!epoch_steps) {
        st = kd_err(KD_E_NOMEM, "epochs");
        goto done;
    }
    for (int64_t i = 0; i < train.n; i++)
        train_tokens += train.d[i].n;
    for (int64_t e = 0; e < c->train.epochs && st == KD_OK; e++) {
        st = sft_plan_make(&plan, &train, c->data.max_len, seed, e, 1);
        if (st == KD_OK) {
            epoch_steps[e] = steps_in_(plan.nrows, per_step);
            total += epoch_steps[e];
            if (!e)
                res->rows = plan.nrows;
        }
    }
    if (st == KD_OK && c->train.max_steps > 0 && c->train.max_steps < total)
        total = c->train.max_steps;
    if (st == KD_OK && ev.n)
        st = sft_plan_make(&eplan, &ev, c->data.max_len, seed, 0, 0);
    if (st) {
        free(epoch_steps);
        goto done;
    }
    kd_info("sft: %lld examples (%lld tokens) in %lld rows of <= %lld; %lld eval examples; "
            "%lld optimizer steps; truncated %lld, dropped (too long) %lld, skipped empty %lld, "
            "skipped without target %lld",
            (long long)train.n, (long long)train_tokens, (long long)res->rows,
            (long long)c->data.max_len, (long long)ev.n, (long long)total, (long long)res->truncated,
            (long long)res->dropped_long, (long long)res->skipped_empty,
            (long long)res->skipped_no_target);

    const kd_model_config *mc = sft_model_config(m);
    run_key_ key = {mc->vocab_size, mc->hidden_size, mc->num_layers, c->data.max_len,
                    c->train.micro_batch, c->train.grad_accum, c->runtime.seed, total, train.n,
                    train_tokens, c};
    run_pos_ pos = {0};
    if ((st = kd_mkdirs(c->output.dir)))
        goto done_e;
    if (c->output.resume) {
        int found;
        if ((st = load_ckpt_(m, c->output.dir, &key, &pos, &found)))
            goto done_e;
        if (!found)
            kd_info("sft: no checkpoint in '%s'; starting from the model", c->output.dir);
    } else {
        int64_t *steps, n;
        if ((st = list_ckpts_(c->output.dir, &steps, &n)))
            goto done_e;
        free(steps);
        if (n) {
            st = kd_err(KD_E_CONFIG, "'%s' already holds checkpoints: resume with --resume "
                        "(output.resume: true), or choose another output.dir", c->output.dir);
            goto done_e;
        }
    }
    char mp[4200];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", c->output.dir);
    if (c->output.resume && pos.step > 0) {
        /* drop metric lines past the checkpoint (the run after it is redone) */
        char *txt = NULL;
        size_t len = 0;
        if (kd_read_file(mp, (size_t)1 << 34, &txt, &len) == KD_OK) {
            size_t keep = 0, at = 0;
            while (at < len) {
                char *nl = memchr(txt + at, '\n', len - at);
                size_t end = nl ? (size_t)(nl - txt) + 1 : len;
                json_t *o = json_loadb(txt + at, end - at, 0, NULL);
                int64_t s = o ? json_integer_value(json_object_get(o, "step")) : INT64_MAX;
                json_decref(o);
                if (s > pos.step || !nl)
                    break;
                keep = at = end;
            }
            st = kd_write_file_atomic(mp, txt, keep);
            free(txt);
            if (st)
                goto done_e;
        }
        kd_err_clear();
    }
    metrics = fopen(mp, c->output.resume ? "ab" : "wb");
    if (!metrics) {
        st = kd_err(KD_E_IO, "'%s': %s", mp, strerror(errno));
        goto done_e;
    }
    kd_adamw hp = {c->optim.lr, c->optim.beta1, c->optim.beta2, c->optim.eps, c->optim.weight_decay};
    if (c->output.progress) {
        kd_progress_init(&pb, "sft", (uint64_t)total);
        kd_progress_add(&pb, (uint64_t)pos.step);
        pb_on = 1;
    }
    double t_run = kd_now(), tok_run = 0;
    int64_t loaded_epoch = -1, done_here = 0;
    while (st == KD_OK && pos.step < total) {
        if (c->train.stop_after > 0 && done_here == c->train.stop_after)
            break;
        if (pos.step_in_epoch >= epoch_steps[pos.epoch]) {
            pos.epoch++;
            pos.step_in_epoch = 0;
            continue;
        }
        if (loaded_epoch != pos.epoch) {
            if ((st = sft_plan_make(&plan, &train, c->data.max_len, seed, pos.epoch, 1)))
                break;
            loaded_epoch = pos.epoch;
        }
        const int64_t r0 = pos.step_in_epoch * per_step;
        const int64_t r1 = r0 + per_step < plan.nrows ? r0 + per_step : plan.nrows;
        /* the step's targets, for the normalisation */
        int64_t targets = 0, tokens = 0;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t k = plan.row_start[r]; k < plan.row_start[r + 1]; k++) {
                targets += train.d[plan.doc[k]].targets;
                tokens += train.d[plan.doc[k]].n;
            }
        const double t_step = kd_now();
        double loss_sum = 0;
        st = sft_model_zero_grad(m);
        for (int64_t r = r0; r < r1 && st == KD_OK; r += c->train.micro_batch) {
            int64_t n = r1 - r < c->train.micro_batch ? r1 - r : c->train.micro_batch;
            double s = 0;
            st = sft_batch_fill(&batch, &train, &plan, r, n, c->data.loss_on);
            if (st == KD_OK)
                st = sft_model_backward(m, batch.ids, batch.labels, batch.pos, batch.B, batch.T,
                                         1.0 / (double)targets, &s, NULL);
            loss_sum += s;
        }
        if (st)
            break;
        const double lr = kd_sft_lr(&c->optim, pos.step, total);
        double gnorm;
        if (m->g) { /* clip, update (a non-finite step is skipped there) and read the figures back */
            hp.lr = lr;
            if ((st = sft_model_gpu_step(m, &hp, !c->optim.decay_norm_bias, c->optim.grad_clip, &loss_sum, &gnorm)))
                break;
        } else {
            gnorm = sft_model_grad_norm(m);
        }
        const double loss = loss_sum / (double)targets;
        int skipped = 0;
        if (!isfinite(loss) || !isfinite(gnorm)) {
            if (c->train.nonfinite == KD_SFT_NONFINITE_STOP) {
                st = kd_err(KD_E_RANGE, "step %lld: the loss is %g and the gradient norm %g; "
                            "stopping (train.nonfinite: skip would skip such steps)",
                            (long long)pos.step + 1, loss, gnorm);
                break;
            }
            skipped = 1;
            pos.steps_skipped++;
            kd_warn("sft: step %lld: loss %g, gradient norm %g: step skipped (%lld so far)",
                    (long long)pos.step + 1, loss, gnorm, (long long)pos.steps_skipped);
        } else if (!m->g) {
            if (c->optim.grad_clip > 0 && gnorm > c->optim.grad_clip) /* torch clip_grad_norm_ */
                sft_model_scale_grads(m, (float)(c->optim.grad_clip / (gnorm + 1e-6)));
            hp.lr = lr;
            if ((st = sft_model_adamw(m, &hp, !c->optim.decay_norm_bias)))
                break;
        }
        pos.step++;
        pos.step_in_epoch++;
        done_here++;
        res->tokens += tokens;
        tok_run += (double)tokens;
        const double now = kd_now(), tps = tok_run / (now - t_run);
        if (!skipped)
            res->last_loss = loss;
        if (pos.step % c->output.log_every == 0 || pos.step == total) {
            fprintf(metrics,
                    "{\"step\": %lld, \"epoch\": %lld, \"loss\": %.17g, \"lr\": %.17g, "
                    "\"grad_norm\": %.17g, \"tokens\": %lld, \"targets\": %lld, \"skipped\": %s, "
                    "\"step_seconds\": %.4f, \"tokens_per_second\": %.1f}\n",
                    (long long)pos.step, (long long)pos.epoch, loss, lr, gnorm, (long long)tokens,
                    (long long)targets, skipped ? "true" : "false", now - t_step, tps);
            fflush(metrics);
        }
        const int last = pos.step == total;
        const int pause = c->train.stop_after > 0 && done_here == c->train.stop_after;
        if (ev.n && ((c->output.eval_every && pos.step % c->output.eval_every == 0) || last)) {
            double el;
            if ((st = eval_(m, &ev, &eplan, c->train.micro_batch, c->data.loss_on, &batch, &el)))
                break;
            res->last_eval_loss = el;
            fprintf(metrics, "{\"step\": %lld, \"eval_loss\": %.17g, \"eval_examples\": %lld}\n",
                    (long long)pos.step, el, (long long)ev.n);
            fflush(metrics);
            kd_info("sft: step %lld eval loss %.4f", (long long)pos.step, el);
        }
        if (pb_on) {
            kd_progress_note(&pb, "loss %.4f lr %.3g gnorm %.3g %.0f tok/s", loss, lr, gnorm, tps);
            kd_progress_add(&pb, 1);
        }
        if ((c->output.save_every && pos.step % c->output.save_every == 0) || last || pause)
            st = save_ckpt_(m, c->model, c->output.dir, &key, &pos, c->output.keep_last);
    }
    if (pb_on)
        kd_progress_finish(&pb);
    res->steps = pos.step;
    res->steps_skipped = pos.steps_skipped;
    if (st == KD_OK && pos.step < total)
        kd_info("sft: stopped after %lld steps (train.stop_after); --resume continues",
                (long long)done_here);
    if (st == KD_OK && c->output.do_export && pos.step == total)
        st = export_(c, m, &tk);
done_e:
    free(epoch_steps);
done:
    res->seconds = kd_now() - t0;
    if (metrics)
        fclose(metrics);
    sft_batch_free(&batch);
    sft_plan_free(&plan);
    sft_plan_free(&eplan);
    free(train.d);
    free(ev.d);
    sft_source_close(&src);
    sft_source_close(&esrc);
    kd_tok_free(tk.tok);
    sft_model_free(m);
    return st;
}

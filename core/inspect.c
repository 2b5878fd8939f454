/* inspect.c - check a model folder against its manifest and describe it.
 * See inspect.h.
 *
 * Legend: L layers, C hidden, H heads, K kv heads, D head dim, R kv_lora_rank,
 * Dr qk_rope_head_dim, E routed experts.
 */
#include "inspect.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "safetensors.h"
#include "status.h"
#include "util.h"

/* ---- names and numbers --------------------------------------------------- */

static const char *rope_name_(kd_rope_type t)
{
    switch (t) {
    case KD_ROPE_DEFAULT: return "default";
    case KD_ROPE_LINEAR: return "linear";
    case KD_ROPE_DYNAMIC: return "dynamic";
    case KD_ROPE_YARN: return "yarn";
    case KD_ROPE_LLAMA3: return "llama3";
    }
    return "?";
}

static const char *scoring_name_(kd_scoring s) { return s == KD_SCORE_SIGMOID ? "sigmoid" : "softmax"; }

static const char *topk_name_(kd_topk_method m)
{
    switch (m) {
    case KD_TOPK_GREEDY: return "greedy";
    case KD_TOPK_GROUP_LIMITED: return "group_limited_greedy";
    case KD_TOPK_NOAUX_TC: return "noaux_tc";
    }
    return "?";
}

static const char *hf_dtype_name_(kd_dtype t)
{
    switch (t) {
    case KD_BF16: return "bfloat16";
    case KD_F16: return "float16";
    default: return "float32";
    }
}

/* 4346112 -> "4,346,112" */
static char *fmt_exact_(char *buf, size_t cap, uint64_t v)
{
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = 0;
    return buf;
}

/* "4,346,112 (4.35M)" */
static char *fmt_params_(char *buf, size_t cap, uint64_t v)
{
    char exact[40], human[32];
    snprintf(buf, cap, "%s (%s)", fmt_exact_(exact, sizeof exact, v), kd_fmt_count(human, sizeof human, (double)v));
    return buf;
}

static char *fmt_shape_(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < cap)
        snprintf(buf + o, cap - o, "]");
    return buf;
}

/* ---- checking ------------------------------------------------------------ */

static int cmp_spec_ptr_(const void *a, const void *b)
{
    return strcmp((*(const kd_tensor_spec *const *)a)->name, (*(const kd_tensor_spec *const *)b)->name);
}

static const kd_tensor_spec *find_spec_(const kd_tensor_spec *const *sorted, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(sorted[mid]->name, name);
        if (c == 0)
            return sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int has_suffix_(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* The layer index of "model.layers.N.…", or -1. */
static int64_t layer_of_(const char *name)
{
    static const char pre[] = "model.layers.";
    if (strncmp(name, pre, sizeof pre - 1))
        return -1;
    const char *p = name + sizeof pre - 1;
    if (*p < '0' || *p > '9')
        return -1;
    char *end;
    long long l = strtoll(p, &end, 10);
    return *end == '.' ? (int64_t)l : -1;
}

/* FP8 weight `t` of spec `sp`: its F32 block scales must be there, shaped
 * [ceil(out / block0), ceil(in / block1)]. */
static int check_scale_(const kd_model_config *c, const kd_st *st, const kd_tensor_spec *sp, const char *dir)
{
    char name[160], want[64], got[64];
    snprintf(name, sizeof name, "%s_scale_inv", sp->name); /* "x.weight" -> "x.weight_scale_inv" */
    const kd_st_tensor *s = kd_st_find(st, name);
    int64_t shape[2] = {(sp->shape[0] + c->fp8_block[0] - 1) / c->fp8_block[0],
                        (sp->shape[1] + c->fp8_block[1] - 1) / c->fp8_block[1]};
    fmt_shape_(want, sizeof want, 2, shape);
    if (!s)
        return kd_err(KD_E_NOTFOUND, "tensor '%s' (F32 %s, the block scales of F8_E4M3 '%s') is missing from '%s'",
                      name, want, sp->name, dir);
    if (s->dtype != KD_F32)
        return kd_err(KD_E_DTYPE, "tensor '%s' is %s, block scales must be F32", name, kd_dtype_name(s->dtype));
    if (s->ndim != 2 || s->shape[0] != shape[0] || s->shape[1] != shape[1])
        return kd_err(KD_E_SHAPE, "tensor '%s' has shape %s, config says %s (%lldx%lld blocks over %s [%lld, %lld])",
                      name, fmt_shape_(got, sizeof got, s->ndim, s->shape), want, (long long)c->fp8_block[0],
                      (long long)c->fp8_block[1], sp->name, (long long)sp->shape[0], (long long)sp->shape[1]);
    return KD_OK;
}

/* One manifest tensor: present, shaped as the config says, of a usable dtype. */
static int check_tensor_(const kd_model_config *c, const kd_st *st, const kd_tensor_spec *sp, const char *dir,
                         size_t *n_fp8)
{
    char want[64], got[64];
    const kd_st_tensor *t = kd_st_find(st, sp->name);
    fmt_shape_(want, sizeof want, sp->ndim, sp->shape);
    if (!t)
        return kd_err(KD_E_NOTFOUND, "tensor '%s' (shape %s) is missing from '%s'", sp->name, want, dir);
    int same = t->ndim == sp->ndim;
    for (int i = 0; same && i < sp->ndim; i++)
        same = t->shape[i] == sp->shape[i];
    if (!same)
        return kd_err(KD_E_SHAPE, "tensor '%s' has shape %s, config says %s", sp->name,
                      fmt_shape_(got, sizeof got, t->ndim, t->shape), want);
    switch (t->dtype) {
    case KD_F32:
    case KD_F16:
    case KD_BF16:
        return KD_OK;
    case KD_F8_E4M3:
        if (!c->fp8)
            return kd_err(KD_E_DTYPE, "tensor '%s' is F8_E4M3, but config.json has no fp8 quantization_config",
                          sp->name);
        if (!sp->quantizable)
            return kd_err(KD_E_DTYPE, "tensor '%s' is F8_E4M3, but only linear weights are quantized in an FP8 "
                          "checkpoint (embeddings, norms, the router and lm_head stay in bf16)", sp->name);
        KD_TRY(check_scale_(c, st, sp, dir));
        (*n_fp8)++;
        return KD_OK;
    default:
        return kd_err(KD_E_DTYPE, "tensor '%s' is %s, weights must be F32, F16 or BF16%s", sp->name,
                      kd_dtype_name(t->dtype), c->fp8 ? " (or F8_E4M3 with scales)" : "");
    }
}

/* Sort every tensor of the files that is not in the manifest. */
static void classify_rest_(const kd_model_config *c, const kd_st *st, const kd_tensor_spec *const *sorted,
                           size_t n_specs, kd_inspect_result *r)
{
    size_t n = kd_st_count(st);
    for (size_t i = 0; i < n; i++) {
        const kd_st_tensor *t = kd_st_at(st, i);
        r->dtype_count[t->dtype]++;
        r->dtype_bytes[t->dtype] += t->nbytes;
        r->bytes_stored += t->nbytes;
        if (find_spec_(sorted, n_specs, t->name))
            continue;
        if (has_suffix_(t->name, ".weight_scale_inv")) {
            /* a scale is expected when its weight is a manifest F8_E4M3 tensor */
            char base[160];
            size_t len = strlen(t->name) - strlen("_scale_inv");
            if (len < sizeof base) {
                memcpy(base, t->name, len);
                base[len] = 0;
                const kd_tensor_spec *sp = find_spec_(sorted, n_specs, base);
                const kd_st_tensor *w = sp ? kd_st_find(st, base) : NULL;
                if (w && w->dtype == KD_F8_E4M3)
                    continue;
            }
        }
        int64_t l = layer_of_(t->name);
        if (l >= c->num_layers && l < c->num_layers + c->num_nextn_predict_layers) {
            r->n_mtp++;
            r->bytes_mtp += t->nbytes;
            continue;
        }
        if (has_suffix_(t->name, "rotary_emb.inv_freq")) {
            r->n_ignored++;
            continue;
        }
        if (r->n_unexpected < KD_INSPECT_MAX_NAMES)
            snprintf(r->unexpected[r->n_unexpected], sizeof r->unexpected[0], "%s", t->name);
        r->n_unexpected++;
    }
}

static void warn_unexpected_(const kd_inspect_result *r)
{
    if (!r->n_unexpected)
        return;
    char list[KD_INSPECT_MAX_NAMES * 140] = "";
    size_t o = 0, shown = r->n_unexpected < KD_INSPECT_MAX_NAMES ? r->n_unexpected : KD_INSPECT_MAX_NAMES;
    for (size_t i = 0; i < shown && o < sizeof list; i++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s'%s'", i ? ", " : "", r->unexpected[i]);
    if (r->n_unexpected > shown)
        kd_warn("'%s': %zu tensors are not used by a %s model: %s and %zu more", r->dir, r->n_unexpected,
                r->cfg.model_type, list, r->n_unexpected - shown);
    else
        kd_warn("'%s': %zu tensor%s not used by a %s model: %s", r->dir, r->n_unexpected,
                r->n_unexpected == 1 ? " is" : "s are", r->cfg.model_type, list);
}

static void kv_cache_(kd_inspect_result *r)
{
    const kd_model_config *c = &r->cfg;
    uint64_t L = (uint64_t)c->num_layers;
    if (c->arch == KD_ARCH_DEEPSEEK_V3 || c->arch == KD_ARCH_DEEPSEEK_V2) {
        r->kv_mla = 1; /* one latent of R + Dr per token and layer */
        r->kv_bytes_per_token = L * (uint64_t)(c->kv_lora_rank + c->qk_rope_head_dim) * 2;
    } else {
        r->kv_mla = 0; /* K and V, each K*D per token and layer */
        r->kv_bytes_per_token = 2 * L * (uint64_t)c->num_kv_heads * (uint64_t)c->head_dim * 2;
    }
    if (kd_mul_overflow(r->kv_bytes_per_token, (uint64_t)c->max_position, &r->kv_bytes_context))
        r->kv_bytes_context = UINT64_MAX;
}

static int inspect_(const char *dir, kd_inspect_result *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    if (!kd_is_dir(dir))
        return kd_err(KD_E_NOTFOUND, "model folder '%s' does not exist or is not a folder", dir);
    KD_TRY(kd_model_config_load(dir, &r->cfg));
    const kd_model_config *c = &r->cfg;

    kd_tensor_spec *specs = NULL;
    size_t n_specs = 0;
    KD_TRY(kd_model_tensors(c, &specs, &n_specs));
    const kd_tensor_spec **sorted = malloc((n_specs ? n_specs : 1) * sizeof *sorted);
    if (!sorted) {
        free(specs);
        return kd_err(KD_E_NOMEM, "cannot allocate %zu tensor names", n_specs);
    }
    for (size_t i = 0; i < n_specs; i++)
        sorted[i] = &specs[i];
    qsort(sorted, n_specs, sizeof *sorted, cmp_spec_ptr_);

    kd_st *st = NULL;
    int rc = kd_st_open(dir, &st);
    for (size_t i = 0; rc == KD_OK && i < n_specs; i++)
        rc = check_tensor_(c, st, &specs[i], dir, &r->n_fp8);
    if (rc == KD_OK) {
        r->n_tensors = kd_st_count(st);
        r->n_shards = kd_st_shard_count(st);
        r->n_manifest = n_specs;
        classify_rest_(c, st, sorted, n_specs, r);
        kd_model_param_counts(c, specs, n_specs, &r->total_params, &r->active_params);
        r->bytes_bf16 = r->total_params * 2;
        kv_cache_(r);
    }
    kd_st_free(st);
    free(sorted);
    free(specs);
    return rc;
}

int kd_inspect_model(const char *dir, FILE *out, kd_inspect_result *res)
{
    kd_inspect_result *r = res ? res : malloc(sizeof *r);
    if (!r)
        return kd_err(KD_E_NOMEM, "cannot allocate an inspection result");
    int rc = inspect_(dir, r);
    if (rc == KD_OK) {
        warn_unexpected_(r);
        if (out)
            kd_inspect_print(r, out);
    }
    if (!res)
        free(r);
    return rc;
}

/* ---- the report ---------------------------------------------------------- */

#define ROW "%-14s"

static void print_rope_(const kd_model_config *c, FILE *out)
{
    const kd_rope *r = &c->rope;
    fprintf(out, ROW "%s, theta %.10g", "rope", rope_name_(r->type), r->theta);
    if (r->type != KD_ROPE_DEFAULT)
        fprintf(out, ", factor %g", r->factor);
    if (r->original_max_position)
        fprintf(out, ", original context %lld", (long long)r->original_max_position);
    if (r->type == KD_ROPE_LLAMA3)
        fprintf(out, ", low_freq_factor %g, high_freq_factor %g", r->low_freq_factor, r->high_freq_factor);
    if (r->type == KD_ROPE_YARN) {
        fprintf(out, ", beta_fast %g, beta_slow %g, mscale %g, mscale_all_dim %g", r->beta_fast, r->beta_slow,
                r->mscale, r->mscale_all_dim);
        if (r->attention_factor > 0)
            fprintf(out, ", attention_factor %g", r->attention_factor);
    }
    if ((c->arch == KD_ARCH_DEEPSEEK_V3 || c->arch == KD_ARCH_DEEPSEEK_V2) && c->rope_interleave)
        fprintf(out, ", interleaved pairs");
    fputc('\n', out);
}

static void print_deepseek_(const kd_model_config *c, FILE *out)
{
    fprintf(out, ROW "MLA, %lld heads, ", "attention", (long long)c->num_heads);
    if (c->q_lora_rank)
        fprintf(out, "q_lora_rank %lld, ", (long long)c->q_lora_rank);
    else
        fprintf(out, "q projected directly (no q_lora_rank), ");
    fprintf(out, "kv_lora_rank %lld; qk head dim %lld nope + %lld rope, v head dim %lld\n",
            (long long)c->kv_lora_rank, (long long)c->qk_nope_head_dim, (long long)c->qk_rope_head_dim,
            (long long)c->v_head_dim);
    fprintf(out, ROW "dense width %lld\n", "mlp", (long long)c->intermediate_size);
    if (!c->n_routed_experts)
        return;
    fprintf(out, ROW "%lld routed experts, top-%lld, %lld shared, expert width %lld", "moe",
            (long long)c->n_routed_experts, (long long)c->num_experts_per_tok, (long long)c->n_shared_experts,
            (long long)c->moe_intermediate_size);
    fprintf(out, "; MoE from layer %lld", (long long)c->first_k_dense_replace);
    if (c->moe_layer_freq != 1)
        fprintf(out, ", every %lld layers", (long long)c->moe_layer_freq);
    fputc('\n', out);
    fprintf(out, ROW "%s scores, %s top-k, %lld groups keep %lld, %s, scaled by %g\n", "routing",
            scoring_name_(c->scoring_func), topk_name_(c->topk_method), (long long)c->n_group,
            (long long)c->topk_group, c->norm_topk_prob ? "weights normalized" : "weights not normalized",
            c->routed_scaling_factor);
}

static void print_dense_(const kd_model_config *c, FILE *out)
{
    fprintf(out, ROW "%lld heads, %lld kv heads, head dim %lld", "attention", (long long)c->num_heads,
            (long long)c->num_kv_heads, (long long)c->head_dim);
    if (c->num_kv_heads != c->num_heads)
        fprintf(out, " (GQA, %lld queries per kv head)", (long long)(c->num_heads / c->num_kv_heads));
    fprintf(out, "%s\n", c->attention_bias ? ", q/k/v biases" : "");
    fprintf(out, ROW "width %lld%s\n", "mlp", (long long)c->intermediate_size, c->mlp_bias ? ", biases" : "");
}

void kd_inspect_print(const kd_inspect_result *r, FILE *out)
{
    const kd_model_config *c = &r->cfg;
    char a[64], b[64];
    fprintf(out, ROW "%s\n", "model folder", r->dir);
    fprintf(out, ROW "%s (model_type %s), dtype %s\n", "architecture", kd_arch_name(c->arch), c->model_type,
            hf_dtype_name_(c->torch_dtype));
    int64_t moe_layers = 0;
    for (int64_t l = 0; l < c->num_layers; l++)
        moe_layers += kd_model_layer_is_moe(c, l);
    fprintf(out, ROW "%lld", "layers", (long long)c->num_layers);
    if (moe_layers)
        fprintf(out, " (%lld dense, %lld MoE)", (long long)(c->num_layers - moe_layers), (long long)moe_layers);
    if (c->num_nextn_predict_layers)
        fprintf(out, ", + %lld MTP layer%s in config", (long long)c->num_nextn_predict_layers,
                c->num_nextn_predict_layers == 1 ? "" : "s");
    fputc('\n', out);
    fprintf(out, ROW "hidden %lld, vocab %lld, max position ", "dimensions", (long long)c->hidden_size,
            (long long)c->vocab_size);
    if (c->max_position)
        fprintf(out, "%lld\n", (long long)c->max_position);
    else
        fprintf(out, "unknown\n");
    if (c->arch == KD_ARCH_DEEPSEEK_V3 || c->arch == KD_ARCH_DEEPSEEK_V2)
        print_deepseek_(c, out);
    else
        print_dense_(c, out);
    print_rope_(c, out);
    fprintf(out, ROW "%s\n", "embeddings", c->tie_word_embeddings ? "tied (lm_head = embed_tokens)" : "untied");

    fprintf(out, ROW "%s total", "parameters", fmt_params_(a, sizeof a, r->total_params));
    if (r->active_params != r->total_params)
        fprintf(out, ", %s active per token", fmt_params_(b, sizeof b, r->active_params));
    fputc('\n', out);

    fprintf(out, ROW "%zu in %d file%s:", "tensors", r->n_tensors, r->n_shards, r->n_shards == 1 ? "" : "s");
    int first = 1;
    for (int d = 0; d < KD_DTYPE_COUNT; d++) {
        if (!r->dtype_count[d])
            continue;
        fprintf(out, "%s %s %zu (%s)", first ? "" : ",", kd_dtype_name((kd_dtype)d), r->dtype_count[d],
                kd_fmt_bytes(a, sizeof a, (double)r->dtype_bytes[d]));
        first = 0;
    }
    fputc('\n', out);
    if (c->fp8)
        fprintf(out, ROW "%zu weights in F8_E4M3 with %lldx%lld block scales\n", "fp8", r->n_fp8,
                (long long)c->fp8_block[0], (long long)c->fp8_block[1]);
    if (r->n_mtp)
        fprintf(out, ROW "MTP layer(s) present, %zu tensors, not used (%s)\n", "mtp", r->n_mtp,
                kd_fmt_bytes(a, sizeof a, (double)r->bytes_mtp));
    if (r->n_ignored)
        fprintf(out, ROW "%zu rotary_emb.inv_freq buffer%s ignored\n", "buffers", r->n_ignored,
                r->n_ignored == 1 ? "" : "s");
    if (r->n_unexpected)
        fprintf(out, ROW "%zu unexpected tensor%s (see the warning)\n", "unexpected", r->n_unexpected,
                r->n_unexpected == 1 ? "" : "s");

    fprintf(out, ROW "weights as stored %s, in bf16 %s\n", "memory", kd_fmt_bytes(a, sizeof a, (double)r->bytes_stored),
            kd_fmt_bytes(b, sizeof b, (double)r->bytes_bf16));
    fprintf(out, ROW "%s per token in bf16 (%s)", "kv cache", kd_fmt_bytes(a, sizeof a, (double)r->kv_bytes_per_token),
            r->kv_mla ? "MLA latent, kv_lora_rank + qk_rope_head_dim per layer" : "K and V per layer");
    if (c->max_position)
        fprintf(out, "; %s for %lld tokens", kd_fmt_bytes(b, sizeof b, (double)r->kv_bytes_context),
                (long long)c->max_position);
    fputc('\n', out);
}

/* ---- JSON ---------------------------------------------------------------- */

/* json_object_set_new that remembers a failed allocation in *bad. */
static void set_(json_t *o, const char *key, json_t *v, int *bad)
{
    if (!v || json_object_set_new(o, key, v)) /* json_object_set_new drops v on failure */
        *bad = 1;
}

static json_t *u64_(uint64_t v) { return json_integer((json_int_t)(v > INT64_MAX ? INT64_MAX : v)); }

static json_t *rope_json_(const kd_rope *r, int *bad)
{
    json_t *o = json_object();
    set_(o, "type", json_string(rope_name_(r->type)), bad);
    set_(o, "theta", json_real(r->theta), bad);
    set_(o, "factor", json_real(r->factor), bad);
    set_(o, "original_max_position_embeddings", json_integer(r->original_max_position), bad);
    if (r->type == KD_ROPE_LLAMA3) {
        set_(o, "low_freq_factor", json_real(r->low_freq_factor), bad);
        set_(o, "high_freq_factor", json_real(r->high_freq_factor), bad);
    }
    if (r->type == KD_ROPE_YARN) {
        set_(o, "beta_fast", json_real(r->beta_fast), bad);
        set_(o, "beta_slow", json_real(r->beta_slow), bad);
        set_(o, "mscale", json_real(r->mscale), bad);
        set_(o, "mscale_all_dim", json_real(r->mscale_all_dim), bad);
        set_(o, "attention_factor", json_real(r->attention_factor), bad);
    }
    return o;
}

static void deepseek_json_(const kd_model_config *c, json_t *root, int *bad)
{
    json_t *m = json_object();
    set_(m, "q_lora_rank", json_integer(c->q_lora_rank), bad);
    set_(m, "kv_lora_rank", json_integer(c->kv_lora_rank), bad);
    set_(m, "qk_nope_head_dim", json_integer(c->qk_nope_head_dim), bad);
    set_(m, "qk_rope_head_dim", json_integer(c->qk_rope_head_dim), bad);
    set_(m, "v_head_dim", json_integer(c->v_head_dim), bad);
    set_(m, "rope_interleave", json_boolean(c->rope_interleave), bad);
    set_(root, "mla", m, bad);
    if (!c->n_routed_experts)
        return;
    json_t *e = json_object();
    set_(e, "n_routed_experts", json_integer(c->n_routed_experts), bad);
    set_(e, "num_experts_per_tok", json_integer(c->num_experts_per_tok), bad);
    set_(e, "n_shared_experts", json_integer(c->n_shared_experts), bad);
    set_(e, "moe_intermediate_size", json_integer(c->moe_intermediate_size), bad);
    set_(e, "first_k_dense_replace", json_integer(c->first_k_dense_replace), bad);
    set_(e, "moe_layer_freq", json_integer(c->moe_layer_freq), bad);
    set_(e, "n_group", json_integer(c->n_group), bad);
    set_(e, "topk_group", json_integer(c->topk_group), bad);
    set_(e, "scoring_func", json_string(scoring_name_(c->scoring_func)), bad);
    set_(e, "topk_method", json_string(topk_name_(c->topk_method)), bad);
    set_(e, "norm_topk_prob", json_boolean(c->norm_topk_prob), bad);
    set_(e, "routed_scaling_factor", json_real(c->routed_scaling_factor), bad);
    set_(root, "moe", e, bad);
}

int kd_inspect_write_json(const kd_inspect_result *r, FILE *out)
{
    const kd_model_config *c = &r->cfg;
    int bad = 0;
    json_t *root = json_object();
    set_(root, "dir", json_string(r->dir), &bad);
    set_(root, "architecture", json_string(kd_arch_name(c->arch)), &bad);
    set_(root, "model_type", json_string(c->model_type), &bad);
    set_(root, "dtype", json_string(hf_dtype_name_(c->torch_dtype)), &bad);
    set_(root, "num_hidden_layers", json_integer(c->num_layers), &bad);
    set_(root, "hidden_size", json_integer(c->hidden_size), &bad);
    set_(root, "intermediate_size", json_integer(c->intermediate_size), &bad);
    set_(root, "num_attention_heads", json_integer(c->num_heads), &bad);
    set_(root, "num_key_value_heads", json_integer(c->num_kv_heads), &bad);
    set_(root, "head_dim", json_integer(c->head_dim), &bad);
    set_(root, "vocab_size", json_integer(c->vocab_size), &bad);
    set_(root, "max_position_embeddings", json_integer(c->max_position), &bad);
    set_(root, "tie_word_embeddings", json_boolean(c->tie_word_embeddings), &bad);
    set_(root, "num_nextn_predict_layers", json_integer(c->num_nextn_predict_layers), &bad);
    set_(root, "rope", rope_json_(&c->rope, &bad), &bad);
    if (c->arch == KD_ARCH_DEEPSEEK_V3 || c->arch == KD_ARCH_DEEPSEEK_V2)
        deepseek_json_(c, root, &bad);
    if (c->fp8) {
        json_t *f = json_object();
        set_(f, "weight_block_size", json_pack("[II]", (json_int_t)c->fp8_block[0], (json_int_t)c->fp8_block[1]),
             &bad);
        set_(f, "fp8_weights", json_integer((json_int_t)r->n_fp8), &bad);
        set_(root, "fp8", f, &bad);
    }

    json_t *p = json_object();
    set_(p, "total", u64_(r->total_params), &bad);
    set_(p, "active", u64_(r->active_params), &bad);
    set_(root, "params", p, &bad);

    json_t *t = json_object(), *names = json_array();
    set_(t, "count", json_integer((json_int_t)r->n_tensors), &bad);
    set_(t, "files", json_integer(r->n_shards), &bad);
    set_(t, "manifest", json_integer((json_int_t)r->n_manifest), &bad);
    set_(t, "mtp", json_integer((json_int_t)r->n_mtp), &bad);
    set_(t, "ignored", json_integer((json_int_t)r->n_ignored), &bad);
    set_(t, "unexpected", json_integer((json_int_t)r->n_unexpected), &bad);
    for (size_t i = 0; i < r->n_unexpected && i < KD_INSPECT_MAX_NAMES; i++)
        if (json_array_append_new(names, json_string(r->unexpected[i])))
            bad = 1;
    set_(t, "unexpected_names", names, &bad);
    json_t *dt = json_object();
    for (int d = 0; d < KD_DTYPE_COUNT; d++) {
        if (!r->dtype_count[d])
            continue;
        json_t *e = json_object();
        set_(e, "count", json_integer((json_int_t)r->dtype_count[d]), &bad);
        set_(e, "bytes", u64_(r->dtype_bytes[d]), &bad);
        set_(dt, kd_dtype_name((kd_dtype)d), e, &bad);
    }
    set_(t, "dtypes", dt, &bad);
    set_(root, "tensors", t, &bad);

    json_t *m = json_object();
    set_(m, "weights_stored_bytes", u64_(r->bytes_stored), &bad);
    set_(m, "weights_bf16_bytes", u64_(r->bytes_bf16), &bad);
    set_(m, "mtp_bytes", u64_(r->bytes_mtp), &bad);
    set_(m, "kv_cache", json_string(r->kv_mla ? "mla" : "dense"), &bad);
    set_(m, "kv_cache_bytes_per_token", u64_(r->kv_bytes_per_token), &bad);
    set_(m, "kv_cache_bytes_context", u64_(r->kv_bytes_context), &bad);
    set_(root, "memory", m, &bad);

    if (bad) {
        json_decref(root);
        return kd_err(KD_E_NOMEM, "cannot build the JSON report of '%s'", r->dir);
    }
    int rc = json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (rc != 0 || fputc('\n', out) == EOF || fflush(out) != 0)
        return kd_err(KD_E_IO, "cannot write the JSON report of '%s'", r->dir);
    return KD_OK;
}

/* math_eval.c - numeric evaluation of expression trees for the math verifier.
 *
 * A value is exact (GMP mpq) for as long as the operations allow: + - * /,
 * integer powers, exact roots, factorials and binomials. Anything else (pi,
 * trig, logs, inexact roots) turns it into a complex MPFR pair at
 * cfg->mpfr_bits. Exact integers are capped at cfg->max_bits: past the cap
 * a value is approximated instead and x->approx_big is set, so that the
 * caller never calls two different huge numbers equal on an approximation;
 * past MPFR's exponent range a value cannot be evaluated at all.
 *
 * Free variables are bound to pseudo-random rationals (and small integers,
 * for sums whose bounds need them), the same for the same name on both
 * sides; undefined functions f(x) and indexed names F_{n} evaluate to a hash
 * of their name and argument values, so f(x) = f(x) and f(x) != f(y).
 */
#include <gmp.h>
#include <math.h>
#include <mpfr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rejection/math_int.h"

typedef struct val {
    int ex; /* exact: q holds the value; else re + i*im */
    mpq_t q;
    mpfr_t re, im;
} val;

typedef struct bindv {
    const char *name;
    val *v;
} bindv;

typedef struct env_ {
    bindv b[40];
    int n;
} env_;

static void vinit_(km_ctx *x, val *v)
{
    v->ex = 1;
    mpq_init(v->q);
    mpfr_init2(v->re, x->cfg->mpfr_bits);
    mpfr_init2(v->im, x->cfg->mpfr_bits);
    mpfr_set_zero(v->re, 1);
    mpfr_set_zero(v->im, 1);
}

static void vclear_(val *v)
{
    mpq_clear(v->q);
    mpfr_clear(v->re);
    mpfr_clear(v->im);
}

static void vset_(val *d, const val *s)
{
    d->ex = s->ex;
    if (s->ex) {
        mpq_set(d->q, s->q);
    } else {
        mpfr_set(d->re, s->re, MPFR_RNDN);
        mpfr_set(d->im, s->im, MPFR_RNDN);
    }
}

static void vtor_(val *v)
{
    if (v->ex) {
        mpfr_set_q(v->re, v->q, MPFR_RNDN);
        mpfr_set_zero(v->im, 1);
        v->ex = 0;
    }
}

static int vreal_(const val *v) { return v->ex || mpfr_zero_p(v->im); }

static long qbits_(const mpq_t q)
{
    return (long)(mpz_sizeinbase(mpq_numref(q), 2) + mpz_sizeinbase(mpq_denref(q), 2));
}

/* Past max_bits an exact value becomes an approximation. */
static int check_size_(km_ctx *x, val *v)
{
    if (v->ex) {
        long b = qbits_(v->q);
        if (!km_step(x, b / 256))
            return 0;
        if (b > x->cfg->max_bits) {
            vtor_(v);
            x->approx_big = 1;
        }
    } else if (!mpfr_number_p(v->re) || !mpfr_number_p(v->im)) {
        x->approx_big = 1;
        return 0;
    }
    return 1;
}

static int ev_(km_ctx *x, km_node *t, env_ *E, val *out);

static void add_(val *a, val *b) /* a += b */
{
    if (a->ex && b->ex) {
        mpq_add(a->q, a->q, b->q);
        return;
    }
    vtor_(a);
    if (b->ex) {
        mpfr_t t;
        mpfr_init2(t, mpfr_get_prec(a->re));
        mpfr_set_q(t, b->q, MPFR_RNDN);
        mpfr_add(a->re, a->re, t, MPFR_RNDN);
        mpfr_clear(t);
        return;
    }
    mpfr_add(a->re, a->re, b->re, MPFR_RNDN);
    mpfr_add(a->im, a->im, b->im, MPFR_RNDN);
}

static void mul_(val *a, val *b) /* a *= b (b may be converted) */
{
    if (a->ex && b->ex) {
        mpq_mul(a->q, a->q, b->q);
        return;
    }
    vtor_(a);
    vtor_(b);
    mpfr_prec_t pr = mpfr_get_prec(a->re);
    mpfr_t r, i, t;
    mpfr_inits2(pr, r, i, t, (mpfr_ptr)0);
    mpfr_mul(r, a->re, b->re, MPFR_RNDN);
    mpfr_mul(t, a->im, b->im, MPFR_RNDN);
    mpfr_sub(r, r, t, MPFR_RNDN);
    mpfr_mul(i, a->re, b->im, MPFR_RNDN);
    mpfr_mul(t, a->im, b->re, MPFR_RNDN);
    mpfr_add(i, i, t, MPFR_RNDN);
    mpfr_set(a->re, r, MPFR_RNDN);
    mpfr_set(a->im, i, MPFR_RNDN);
    mpfr_clears(r, i, t, (mpfr_ptr)0);
}

static int iszero_(val *v)
{
    if (v->ex)
        return mpq_sgn(v->q) == 0;
    return mpfr_zero_p(v->re) && mpfr_zero_p(v->im);
}

static int div_(val *a, val *b) /* a /= b; 0 on division by zero */
{
    if (iszero_(b))
        return 0;
    if (a->ex && b->ex) {
        mpq_div(a->q, a->q, b->q);
        return 1;
    }
    vtor_(a);
    vtor_(b);
    mpfr_prec_t pr = mpfr_get_prec(a->re);
    mpfr_t d, r, i, t;
    mpfr_inits2(pr, d, r, i, t, (mpfr_ptr)0);
    mpfr_sqr(d, b->re, MPFR_RNDN);
    mpfr_sqr(t, b->im, MPFR_RNDN);
    mpfr_add(d, d, t, MPFR_RNDN);
    mpfr_mul(r, a->re, b->re, MPFR_RNDN);
    mpfr_mul(t, a->im, b->im, MPFR_RNDN);
    mpfr_add(r, r, t, MPFR_RNDN);
    mpfr_mul(i, a->im, b->re, MPFR_RNDN);
    mpfr_mul(t, a->re, b->im, MPFR_RNDN);
    mpfr_sub(i, i, t, MPFR_RNDN);
    mpfr_div(a->re, r, d, MPFR_RNDN);
    mpfr_div(a->im, i, d, MPFR_RNDN);
    mpfr_clears(d, r, i, t, (mpfr_ptr)0);
    return 1;
}

/* a = a^e for an integer e, complex or real approximate a. */
static int cpow_int_(km_ctx *x, val *a, long e)
{
    if (labs(e) > 100000)
        return 0;
    val r, b;
    vinit_(x, &r);
    vinit_(x, &b);
    mpq_set_ui(r.q, 1, 1);
    vset_(&b, a);
    long k = labs(e);
    int ok = 1;
    while (k) {
        if (!km_step(x, 1)) {
            ok = 0;
            break;
        }
        if (k & 1) {
            val c;
            vinit_(x, &c);
            vset_(&c, &b);
            mul_(&r, &c);
            vclear_(&c);
        }
        k >>= 1;
        if (k) {
            val c;
            vinit_(x, &c);
            vset_(&c, &b);
            mul_(&b, &c);
            vclear_(&c);
        }
    }
    if (ok && e < 0) {
        val one;
        vinit_(x, &one);
        mpq_set_ui(one.q, 1, 1);
        ok = div_(&one, &r);
        if (ok)
            vset_(&r, &one);
        vclear_(&one);
    }
    if (ok)
        vset_(a, &r);
    vclear_(&r);
    vclear_(&b);
    return ok && check_size_(x, a);
}

/* a = a^e = exp(e log a) on the principal branch, for complex a or e. */
static int cpow_(km_ctx *x, val *a, val *e)
{
    if (iszero_(a))
        return 0;
    vtor_(a);
    val w;
    vinit_(x, &w);
    vset_(&w, e);
    vtor_(&w);
    mpfr_prec_t pr = mpfr_get_prec(a->re);
    mpfr_t lr, li, r, i, t;
    mpfr_inits2(pr, lr, li, r, i, t, (mpfr_ptr)0);
    mpfr_hypot(lr, a->re, a->im, MPFR_RNDN);
    mpfr_log(lr, lr, MPFR_RNDN);
    mpfr_atan2(li, a->im, a->re, MPFR_RNDN);
    /* (wr + i wi)(lr + i li) */
    mpfr_mul(r, w.re, lr, MPFR_RNDN);
    mpfr_mul(t, w.im, li, MPFR_RNDN);
    mpfr_sub(r, r, t, MPFR_RNDN);
    mpfr_mul(i, w.re, li, MPFR_RNDN);
    mpfr_mul(t, w.im, lr, MPFR_RNDN);
    mpfr_add(i, i, t, MPFR_RNDN);
    mpfr_exp(r, r, MPFR_RNDN);
    mpfr_cos(a->re, i, MPFR_RNDN);
    mpfr_sin(a->im, i, MPFR_RNDN);
    mpfr_mul(a->re, a->re, r, MPFR_RNDN);
    mpfr_mul(a->im, a->im, r, MPFR_RNDN);
    int ok = mpfr_number_p(a->re) && mpfr_number_p(a->im);
    mpfr_clears(lr, li, r, i, t, (mpfr_ptr)0);
    vclear_(&w);
    return ok;
}

static int pow_(km_ctx *x, val *a, val *e)
{
    /* exact integer exponent */
    if (e->ex && mpz_cmp_ui(mpq_denref(e->q), 1) == 0) {
        if (!mpz_fits_slong_p(mpq_numref(e->q))) {
            /* astronomically large exponent: |a| = 0 or 1 are the only exact cases */
            if (a->ex && (mpq_sgn(a->q) == 0 || (mpz_cmpabs_ui(mpq_numref(a->q), 1) == 0 && mpz_cmp_ui(mpq_denref(a->q), 1) == 0))) {
                if (mpq_sgn(a->q) == 0)
                    return mpq_sgn(e->q) > 0;
                if (mpq_sgn(a->q) < 0 && mpz_odd_p(mpq_numref(e->q)) == 0)
                    mpq_neg(a->q, a->q);
                return 1;
            }
            x->approx_big = 1;
            return 0;
        }
        long k = mpz_get_si(mpq_numref(e->q));
        if (a->ex) {
            if (mpq_sgn(a->q) == 0)
                return k >= 0 ? (k == 0 ? (mpq_set_ui(a->q, 1, 1), 1) : 1) : 0;
            long est = labs(k) * qbits_(a->q);
            if (labs(k) <= (1L << 40) && est / (labs(k) ? labs(k) : 1) == qbits_(a->q) && est <= x->cfg->max_bits) {
                if (!km_step(x, est / 256 + 1))
                    return 0;
                unsigned long u = (unsigned long)labs(k);
                mpz_pow_ui(mpq_numref(a->q), mpq_numref(a->q), u);
                mpz_pow_ui(mpq_denref(a->q), mpq_denref(a->q), u);
                if (k < 0)
                    mpq_inv(a->q, a->q);
                return 1;
            }
            /* too large to hold exactly: approximate */
            x->approx_big = 1;
            vtor_(a);
            mpfr_t ee;
            mpfr_init2(ee, mpfr_get_prec(a->re));
            mpfr_set_si(ee, k, MPFR_RNDN);
            mpfr_pow(a->re, a->re, ee, MPFR_RNDN);
            mpfr_clear(ee);
            return mpfr_number_p(a->re);
        }
        if (vreal_(a)) {
            mpfr_pow_si(a->re, a->re, k, MPFR_RNDN);
            return mpfr_number_p(a->re);
        }
        return cpow_int_(x, a, k);
    }
    /* exact rational exponent p/q: exact roots when they exist */
    if (e->ex && a->ex && mpz_cmp_ui(mpq_denref(e->q), 64) <= 0) {
        unsigned long qd = mpz_get_ui(mpq_denref(e->q));
        int neg = mpq_sgn(a->q) < 0;
        if (!neg || (qd & 1)) {
            mpz_t rn, rd;
            mpz_inits(rn, rd, NULL);
            mpz_abs(rn, mpq_numref(a->q));
            int okn = mpz_root(rn, rn, qd);
            int okd = mpz_root(rd, mpq_denref(a->q), qd);
            if (okn && okd) {
                mpq_set_num(a->q, rn);
                mpq_set_den(a->q, rd);
                mpq_canonicalize(a->q);
                if (neg)
                    mpq_neg(a->q, a->q);
                mpz_clears(rn, rd, NULL);
                val ie;
                vinit_(x, &ie);
                mpq_set_z(ie.q, mpq_numref(e->q));
                int ok = pow_(x, a, &ie);
                vclear_(&ie);
                return ok;
            }
            mpz_clears(rn, rd, NULL);
        }
    }
    /* approximate */
    if (!vreal_(a) || !vreal_(e))
        return cpow_(x, a, e);
    int odd_root = e->ex && mpz_odd_p(mpq_denref(e->q));
    int half = e->ex && mpz_cmp_ui(mpq_denref(e->q), 2) == 0;
    vtor_(a);
    val ee;
    vinit_(x, &ee);
    vset_(&ee, e);
    vtor_(&ee);
    int ok = 0;
    if (vreal_(a) && mpfr_zero_p(ee.im)) {
        if (mpfr_sgn(a->re) >= 0) {
            mpfr_pow(a->re, a->re, ee.re, MPFR_RNDN);
            ok = mpfr_number_p(a->re);
        } else if (odd_root) {
            /* real odd root of a negative number */
            mpfr_neg(a->re, a->re, MPFR_RNDN);
            mpfr_pow(a->re, a->re, ee.re, MPFR_RNDN);
            if (mpz_odd_p(mpq_numref(e->q)))
                mpfr_neg(a->re, a->re, MPFR_RNDN);
            ok = mpfr_number_p(a->re);
        } else if (half && !x->real_only) {
            /* (-a)^(k/2) = (sqrt(a) i)^k */
            mpfr_neg(a->re, a->re, MPFR_RNDN);
            mpfr_sqrt(a->im, a->re, MPFR_RNDN);
            mpfr_set_zero(a->re, 1);
            long k = mpz_get_si(mpq_numref(e->q));
            ok = labs(k) < 100000 ? cpow_int_(x, a, k) : 0;
        }
    }
    vclear_(&ee);
    return ok;
}

static unsigned long long hash_mix_(unsigned long long h, unsigned long long v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

static unsigned long long hash_val_(unsigned long long h, val *v)
{
    if (v->ex) {
        size_t n = mpz_size(mpq_numref(v->q));
        for (size_t i = 0; i < n; i++)
            h = hash_mix_(h, (unsigned long long)mpz_getlimbn(mpq_numref(v->q), (mp_size_t)i));
        h = hash_mix_(h, (unsigned long long)(mpq_sgn(v->q) + 7));
        n = mpz_size(mpq_denref(v->q));
        for (size_t i = 0; i < n; i++)
            h = hash_mix_(h, (unsigned long long)mpz_getlimbn(mpq_denref(v->q), (mp_size_t)i));
        return h;
    }
    /* an approximate argument: hash it to ~12 significant digits */
    double d = mpfr_get_d(v->re, MPFR_RNDN), e = mpfr_get_d(v->im, MPFR_RNDN);
    char buf[64];
    snprintf(buf, sizeof buf, "%.11e %.11e", d, fabs(e) < 1e-30 ? 0.0 : e);
    for (char *c = buf; *c; c++)
        h = hash_mix_(h, (unsigned char)*c);
    return h;
}

static int func_(km_ctx *x, km_node *t, env_ *E, val *out)
{
    int n = t->n, ok = 1;
    val a[4];
    if (n > 4 || n < 1)
        return 0;
    for (int i = 0; i < n; i++)
        vinit_(x, &a[i]);
    for (int i = 0; i < n && ok; i++)
        ok = ev_(x, t->kids[i], E, &a[i]);
    if (!ok)
        goto done;
    int id = t->op;
    val *v = &a[0];
    switch (id) {
    case KF_ABS:
        if (v->ex) {
            mpq_abs(out->q, v->q);
            out->ex = 1;
        } else {
            out->ex = 0;
            mpfr_hypot(out->re, v->re, v->im, MPFR_RNDN);
            mpfr_set_zero(out->im, 1);
        }
        goto done;
    case KF_FLOOR:
    case KF_CEIL:
        if (!vreal_(v)) {
            ok = 0;
            goto done;
        }
        if (v->ex) {
            out->ex = 1;
            if (id == KF_FLOOR)
                mpz_fdiv_q(mpq_numref(out->q), mpq_numref(v->q), mpq_denref(v->q));
            else
                mpz_cdiv_q(mpq_numref(out->q), mpq_numref(v->q), mpq_denref(v->q));
            mpz_set_ui(mpq_denref(out->q), 1);
        } else {
            mpfr_t f;
            mpfr_init2(f, mpfr_get_prec(v->re));
            if (id == KF_FLOOR)
                mpfr_floor(f, v->re);
            else
                mpfr_ceil(f, v->re);
            mpz_t z;
            mpz_init(z);
            mpfr_get_z(z, f, MPFR_RNDN);
            out->ex = 1;
            mpq_set_z(out->q, z);
            mpz_clear(z);
            mpfr_clear(f);
        }
        goto done;
    case KF_BINOM:
    case KF_GCD:
    case KF_LCM:
        if (n != 2 || !a[0].ex || !a[1].ex || mpz_cmp_ui(mpq_denref(a[0].q), 1) || mpz_cmp_ui(mpq_denref(a[1].q), 1)) {
            ok = 0;
            goto done;
        }
        out->ex = 1;
        mpz_set_ui(mpq_denref(out->q), 1);
        if (id == KF_BINOM) {
            if (!mpz_fits_slong_p(mpq_numref(a[1].q)) || mpz_sgn(mpq_numref(a[1].q)) < 0 ||
                mpz_cmp_ui(mpq_numref(a[1].q), 200000) > 0 ||
                (long)mpz_sizeinbase(mpq_numref(a[0].q), 2) * mpz_get_si(mpq_numref(a[1].q)) > x->cfg->max_bits) {
                if (mpz_sgn(mpq_numref(a[1].q)) < 0) {
                    mpq_set_ui(out->q, 0, 1);
                    goto done;
                }
                x->approx_big = 1;
                ok = 0;
                goto done;
            }
            mpz_bin_ui(mpq_numref(out->q), mpq_numref(a[0].q), mpz_get_ui(mpq_numref(a[1].q)));
        } else if (id == KF_GCD) {
            mpz_gcd(mpq_numref(out->q), mpq_numref(a[0].q), mpq_numref(a[1].q));
        } else {
            mpz_lcm(mpq_numref(out->q), mpq_numref(a[0].q), mpq_numref(a[1].q));
        }
        goto done;
    case KF_MIN:
    case KF_MAX: {
        int best = 0;
        for (int i = 0; i < n; i++) {
            if (!vreal_(&a[i])) {
                ok = 0;
                goto done;
            }
        }
        for (int i = 1; i < n; i++) {
            int c;
            if (a[i].ex && a[best].ex) {
                c = mpq_cmp(a[i].q, a[best].q);
            } else {
                vtor_(&a[i]);
                vtor_(&a[best]);
                c = mpfr_cmp(a[i].re, a[best].re);
            }
            if ((id == KF_MIN && c < 0) || (id == KF_MAX && c > 0))
                best = i;
        }
        vset_(out, &a[best]);
        goto done;
    }
    default:
        break;
    }
    /* transcendental: exact at 0 / 1 where that is trivial, else MPFR, real only */
    if (!vreal_(v)) {
        ok = 0;
        goto done;
    }
    if (v->ex && mpq_sgn(v->q) == 0 && (id == KF_SIN || id == KF_TAN || id == KF_ASIN || id == KF_ATAN ||
                                        id == KF_SINH || id == KF_TANH)) {
        out->ex = 1;
        mpq_set_ui(out->q, 0, 1);
        goto done;
    }
    if (v->ex && mpq_sgn(v->q) == 0 && (id == KF_COS || id == KF_COSH || id == KF_EXP || id == KF_SEC)) {
        out->ex = 1;
        mpq_set_ui(out->q, 1, 1);
        goto done;
    }
    if (v->ex && mpq_cmp_ui(v->q, 1, 1) == 0 && (id == KF_LN || (id == KF_LOG && n == 1))) {
        out->ex = 1;
        mpq_set_ui(out->q, 0, 1);
        goto done;
    }
    vtor_(v);
    out->ex = 0;
    mpfr_set_zero(out->im, 1);
    mpfr_ptr r = out->re, s = v->re;
    switch (id) {
    case KF_SIN: mpfr_sin(r, s, MPFR_RNDN); break;
    case KF_COS: mpfr_cos(r, s, MPFR_RNDN); break;
    case KF_TAN: mpfr_tan(r, s, MPFR_RNDN); break;
    case KF_SEC: mpfr_sec(r, s, MPFR_RNDN); break;
    case KF_CSC: mpfr_csc(r, s, MPFR_RNDN); break;
    case KF_COT: mpfr_cot(r, s, MPFR_RNDN); break;
    case KF_ASIN: mpfr_asin(r, s, MPFR_RNDN); break;
    case KF_ACOS: mpfr_acos(r, s, MPFR_RNDN); break;
    case KF_ATAN: mpfr_atan(r, s, MPFR_RNDN); break;
    case KF_SINH: mpfr_sinh(r, s, MPFR_RNDN); break;
    case KF_COSH: mpfr_cosh(r, s, MPFR_RNDN); break;
    case KF_TANH: mpfr_tanh(r, s, MPFR_RNDN); break;
    case KF_EXP: mpfr_exp(r, s, MPFR_RNDN); break;
    case KF_LN:
    case KF_LOG:
        if (mpfr_sgn(s) <= 0) {
            ok = 0;
            goto done;
        }
        mpfr_log(r, s, MPFR_RNDN);
        if (n == 2) {
            if (!vreal_(&a[1])) {
                ok = 0;
                goto done;
            }
            vtor_(&a[1]);
            if (mpfr_sgn(a[1].re) <= 0 || mpfr_cmp_ui(a[1].re, 1) == 0) {
                ok = 0;
                goto done;
            }
            mpfr_t lb;
            mpfr_init2(lb, mpfr_get_prec(r));
            mpfr_log(lb, a[1].re, MPFR_RNDN);
            mpfr_div(r, r, lb, MPFR_RNDN);
            mpfr_clear(lb);
        }
        break;
    default:
        ok = 0;
        goto done;
    }
    ok = mpfr_number_p(r);
done:
    for (int i = 0; i < n; i++)
        vclear_(&a[i]);
    return ok;
}

static int num_(km_ctx *x, km_node *t, val *out)
{
    const char *s = t->s;
    size_t len = strlen(s);
    const char *dot = strchr(s, '.');
    if ((double)len > (double)x->cfg->max_bits * 0.30103) {
        x->approx_big = 1;
        out->ex = 0;
        mpfr_set_str(out->re, s, 10, MPFR_RNDN);
        mpfr_set_zero(out->im, 1);
        return mpfr_number_p(out->re);
    }
    if (!km_step(x, (long)len / 64))
        return 0;
    out->ex = 1;
    if (!dot) {
        if (mpz_set_str(mpq_numref(out->q), s, 10))
            return 0;
        mpz_set_ui(mpq_denref(out->q), 1);
        return 1;
    }
    /* "12.50" = 1250 / 10^2 */
    char stack[128], *buf = len < sizeof stack ? stack : malloc(len + 1);
    if (!buf) {
        x->fail |= KM_F_NOMEM;
        return 0;
    }
    size_t k = 0;
    for (const char *c = s; *c; c++)
        if (*c != '.')
            buf[k++] = *c;
    buf[k] = 0;
    int ok = mpz_set_str(mpq_numref(out->q), buf, 10) == 0;
    mpz_ui_pow_ui(mpq_denref(out->q), 10, (unsigned long)strlen(dot + 1));
    mpq_canonicalize(out->q);
    if (buf != stack)
        free(buf);
    return ok;
}

static int fact_(km_ctx *x, val *v)
{
    if (v->ex && mpz_cmp_ui(mpq_denref(v->q), 1) == 0) {
        if (mpz_sgn(mpq_numref(v->q)) < 0)
            return 0;
        if (!mpz_fits_ulong_p(mpq_numref(v->q)) || mpz_cmp_ui(mpq_numref(v->q), 100000000) > 0) {
            x->approx_big = 1;
            return 0;
        }
        unsigned long nn = mpz_get_ui(mpq_numref(v->q));
        double bits = nn < 2 ? 1 : (lgamma((double)nn + 1.0) / log(2.0));
        if (bits <= (double)x->cfg->max_bits) {
            if (!km_step(x, (long)(bits / 64) + 1))
                return 0;
            mpz_fac_ui(mpq_numref(v->q), nn);
            return 1;
        }
        x->approx_big = 1;
        vtor_(v);
        mpfr_add_ui(v->re, v->re, 1, MPFR_RNDN);
        mpfr_gamma(v->re, v->re, MPFR_RNDN);
        return mpfr_number_p(v->re);
    }
    if (!vreal_(v))
        return 0;
    vtor_(v);
    if (mpfr_sgn(v->re) < 0 && mpfr_integer_p(v->re))
        return 0;
    mpfr_add_ui(v->re, v->re, 1, MPFR_RNDN);
    mpfr_gamma(v->re, v->re, MPFR_RNDN);
    return mpfr_number_p(v->re);
}

static int ev_(km_ctx *x, km_node *t, env_ *E, val *out)
{
    if (!t || !km_step(x, 1))
        return 0;
    int ok = 1;
    switch (t->kind) {
    case KN_NUM:
        return num_(x, t, out);
    case KN_SYM:
        for (int i = E->n - 1; i >= 0; i--)
            if (!strcmp(E->b[i].name, t->s)) {
                vset_(out, E->b[i].v);
                return 1;
            }
        return 0;
    case KN_CONST:
        out->ex = 0;
        mpfr_set_zero(out->im, 1);
        if (t->op == KC_PI) {
            mpfr_const_pi(out->re, MPFR_RNDN);
        } else if (t->op == KC_E) {
            mpfr_set_ui(out->re, 1, MPFR_RNDN);
            mpfr_exp(out->re, out->re, MPFR_RNDN);
        } else if (t->op == KC_I) {
            mpfr_set_zero(out->re, 1);
            mpfr_set_ui(out->im, 1, MPFR_RNDN);
        } else {
            return 0;
        }
        return 1;
    case KN_ADD:
    case KN_MUL: {
        out->ex = 1;
        mpq_set_ui(out->q, t->kind == KN_ADD ? 0 : 1, 1);
        val v;
        vinit_(x, &v);
        for (int i = 0; i < t->n && ok; i++) {
            ok = ev_(x, t->kids[i], E, &v);
            if (ok) {
                if (t->kind == KN_ADD)
                    add_(out, &v);
                else
                    mul_(out, &v);
                ok = check_size_(x, out);
            }
        }
        vclear_(&v);
        return ok;
    }
    case KN_DIV: {
        val v;
        vinit_(x, &v);
        ok = ev_(x, t->kids[0], E, out) && ev_(x, t->kids[1], E, &v) && div_(out, &v) && check_size_(x, out);
        vclear_(&v);
        return ok;
    }
    case KN_POW: {
        val v;
        vinit_(x, &v);
        ok = ev_(x, t->kids[0], E, out) && ev_(x, t->kids[1], E, &v) && pow_(x, out, &v) && check_size_(x, out);
        vclear_(&v);
        return ok;
    }
    case KN_NEG:
        if (!ev_(x, t->kids[0], E, out))
            return 0;
        if (out->ex) {
            mpq_neg(out->q, out->q);
        } else {
            mpfr_neg(out->re, out->re, MPFR_RNDN);
            mpfr_neg(out->im, out->im, MPFR_RNDN);
        }
        return 1;
    case KN_PCT: {
        if (!ev_(x, t->kids[0], E, out))
            return 0;
        val h;
        vinit_(x, &h);
        mpq_set_ui(h.q, 100, 1);
        ok = div_(out, &h);
        vclear_(&h);
        return ok;
    }
    case KN_FACT:
        return ev_(x, t->kids[0], E, out) && fact_(x, out) && check_size_(x, out);
    case KN_FUNC:
        return func_(x, t, E, out) && check_size_(x, out);
    case KN_UF: {
        unsigned long long h = 1469598103934665603ull;
        for (const char *c = t->s; *c; c++)
            h = hash_mix_(h, (unsigned char)*c);
        val v;
        vinit_(x, &v);
        for (int i = 0; i < t->n && ok; i++) {
            ok = ev_(x, t->kids[i], E, &v);
            if (ok)
                h = hash_val_(h, &v);
        }
        vclear_(&v);
        if (!ok)
            return 0;
        out->ex = 1;
        mpq_set_ui(out->q, (unsigned long)(h % 1999993ull) + 1, 1000003ul);
        mpq_canonicalize(out->q);
        return 1;
    }
    case KN_SUM: {
        val lo, hi, v, idx;
        vinit_(x, &lo);
        vinit_(x, &hi);
        vinit_(x, &v);
        vinit_(x, &idx);
        ok = ev_(x, t->kids[0], E, &lo) && ev_(x, t->kids[1], E, &hi) && lo.ex && hi.ex &&
             !mpz_cmp_ui(mpq_denref(lo.q), 1) && !mpz_cmp_ui(mpq_denref(hi.q), 1) &&
             mpz_fits_slong_p(mpq_numref(lo.q)) && mpz_fits_slong_p(mpq_numref(hi.q)) && E->n < 40;
        if (ok) {
            long a = mpz_get_si(mpq_numref(lo.q)), b = mpz_get_si(mpq_numref(hi.q));
            /* an empty sum (b = a - 1) is 0; one that runs backwards is
             * undefined, not 0: sum_{k=1}^{n} k at n = -3 is not n(n+1)/2 */
            if (b - a > 10000 || b < a - 1) {
                ok = 0;
            } else {
                out->ex = 1;
                mpq_set_ui(out->q, t->op ? 1 : 0, 1);
                E->b[E->n].name = t->s;
                E->b[E->n].v = &idx;
                E->n++;
                for (long k = a; k <= b && ok; k++) {
                    mpq_set_si(idx.q, k, 1);
                    idx.ex = 1;
                    ok = ev_(x, t->kids[2], E, &v);
                    if (ok) {
                        if (t->op)
                            mul_(out, &v);
                        else
                            add_(out, &v);
                        ok = check_size_(x, out);
                    }
                }
                E->n--;
            }
        }
        vclear_(&lo);
        vclear_(&hi);
        vclear_(&v);
        vclear_(&idx);
        return ok;
    }
    default:
        return 0;
    }
}

/* ---- free variables and sample points --------------------------------------------- */

static int add_name_(const char **names, int *n, int max, const char *s)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(names[i], s))
            return 1;
    if (*n >= max)
        return 0;
    names[(*n)++] = s;
    return 1;
}

static int vars_(km_node *t, const char **names, int *n, int max, const char **bound, int nb)
{
    if (!t)
        return 1;
    if (t->kind == KN_SYM) {
        for (int i = 0; i < nb; i++)
            if (!strcmp(bound[i], t->s))
                return 1;
        return add_name_(names, n, max, t->s);
    }
    if (t->kind == KN_SUM) {
        if (!vars_(t->kids[0], names, n, max, bound, nb) || !vars_(t->kids[1], names, n, max, bound, nb))
            return 0;
        const char *b2[16];
        if (nb >= 15)
            return 0;
        if (nb)
            memcpy(b2, bound, (size_t)nb * sizeof *b2);
        b2[nb] = t->s;
        return vars_(t->kids[2], names, n, max, b2, nb + 1);
    }
    for (int i = 0; i < t->n; i++)
        if (!vars_(t->kids[i], names, n, max, bound, nb))
            return 0;
    return 1;
}

static int namecmp_(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

int km_free_vars(km_ctx *x, km_node *t, const char **names, int max)
{
    (void)x;
    int n = 0;
    if (!vars_(t, names, &n, max, NULL, 0))
        return -1;
    qsort(names, (size_t)n, sizeof *names, namecmp_);
    return n;
}

static unsigned long long name_hash_(const char *s, int k)
{
    unsigned long long h = 0xcbf29ce484222325ull ^ (unsigned long long)(k * 7919);
    for (; *s; s++)
        h = hash_mix_(h, (unsigned char)*s);
    return hash_mix_(h, (unsigned long long)k);
}

/* Sample points. Every comparison with variables evaluates at the first
 * NPTS: positive rationals and small integers (sums, factorials and
 * binomials need integers), then negative, fractional and near-zero values,
 * so that |x| != x, \sqrt{x^2} != x and \max(x,3) != x. A point where either
 * side is undefined (a division by zero, a log or an even root of a negative
 * number) is skipped; while fewer than MIN_VALID points were defined on both
 * sides, larger values follow, up to NPTS_MORE. Fewer than MIN_VALID in all
 * proves nothing (KM_UNKNOWN). */
#define NPTS 12
#define NPTS_MORE 24
#define MIN_VALID 3

/* Bind every name to its value at sample point k (see NPTS above). */
static void bind_point_(km_ctx *x, const char **names, int n, int k, env_ *E, val *vals)
{
    E->n = 0;
    for (int i = 0; i < n; i++) {
        unsigned long long h = name_hash_(names[i], k);
        long p = (long)(5 + h % 61), m = (long)(2 + (h % 11) + (unsigned long)i);
        unsigned long q = (unsigned long)(3 + (h >> 16) % 17);
        if (k < 3) /* rationals in [5/19, 65/3] */
            mpq_set_si(vals[i].q, p, q);
        else if (k < 6) /* integers from 2 */
            mpq_set_si(vals[i].q, m, 1);
        else if (k < 8) /* negative rationals */
            mpq_set_si(vals[i].q, -p, q);
        else if (k == 8) /* a negative integer */
            mpq_set_si(vals[i].q, -m, 1);
        else if (k == 9) /* a fraction in (0, 1) */
            mpq_set_si(vals[i].q, (long)(1 + h % 7), (unsigned long)(9 + (h >> 16) % 11));
        else if (k < 12) /* near zero, both signs: 1/40 .. 1/99 */
            mpq_set_si(vals[i].q, k == 10 ? 1 : -1, (unsigned long)(40 + h % 60));
        else if (k < 18) /* larger values, for narrow domains: integers, then rationals */
            mpq_set_si(vals[i].q, k < 15 ? 20 + (long)(h % 80) : 100 + (long)(h % 900), k < 15 ? 1 : q);
        else
            mpq_set_si(vals[i].q, k < 21 ? -20 - (long)(h % 80) : -100 - (long)(h % 900), k < 21 ? 1 : q);
        mpq_canonicalize(vals[i].q);
        vals[i].ex = 1;
        E->b[E->n].name = names[i];
        E->b[E->n].v = &vals[i];
        E->n++;
    }
    (void)x;
}

/* Does t hold the constant i? (then values may be complex, see real_only) */
static int has_i_(const km_node *t, int depth)
{
    if (!t || depth > 200)
        return 0;
    if (t->kind == KN_CONST && t->op == KC_I)
        return 1;
    for (int k = 0; k < t->n; k++)
        if (has_i_(t->kids[k], depth + 1))
            return 1;
    return 0;
}

/* Names of a and b together; -1 when too many. */
static int both_vars_(km_ctx *x, km_node *a, km_node *b, const char **names, int max)
{
    int n = 0;
    if (!vars_(a, names, &n, max, NULL, 0) || !vars_(b, names, &n, max, NULL, 0))
        return -1;
    qsort(names, (size_t)n, sizeof *names, namecmp_);
    (void)x;
    return n;
}

static void absval_(mpfr_t out, val *v)
{
    vtor_(v);
    mpfr_hypot(out, v->re, v->im, MPFR_RNDN);
}

/* Compare two evaluated values. */
static int cmp_vals_(km_ctx *x, val *a, val *b, int mode)
{
    if (mode == KM_ROUND) {
        if (!vreal_(a) || !vreal_(b))
            return KM_DIFF;
        int p = x->cfg->float_rounding;
        mpz_t ra, rb;
        mpz_inits(ra, rb, NULL);
        val *vs[2] = {a, b};
        mpz_ptr rs[2] = {ra, rb};
        for (int k = 0; k < 2; k++) {
            val *v = vs[k];
            if (v->ex) {
                /* floor(q * 10^p + 1/2) */
                mpq_t t, h;
                mpq_inits(t, h, NULL);
                mpz_ui_pow_ui(mpq_numref(t), 10, (unsigned long)p);
                mpz_set_ui(mpq_denref(t), 1);
                mpq_mul(t, t, v->q);
                mpq_set_ui(h, 1, 2);
                if (mpq_sgn(t) >= 0)
                    mpq_add(t, t, h);
                else
                    mpq_sub(t, t, h);
                if (mpq_sgn(t) >= 0)
                    mpz_fdiv_q(rs[k], mpq_numref(t), mpq_denref(t));
                else
                    mpz_cdiv_q(rs[k], mpq_numref(t), mpq_denref(t));
                mpq_clears(t, h, NULL);
            } else {
                mpfr_t t;
                mpfr_init2(t, mpfr_get_prec(v->re));
                mpfr_ui_pow_ui(t, 10, (unsigned long)p, MPFR_RNDN);
                mpfr_mul(t, t, v->re, MPFR_RNDN);
                mpfr_round(t, t);
                mpfr_get_z(rs[k], t, MPFR_RNDN);
                mpfr_clear(t);
            }
        }
        int same = mpz_cmp(ra, rb) == 0;
        mpz_clears(ra, rb, NULL);
        if (same)
            return KM_SAME;
        if (x->cfg->rel_tol <= 0)
            return KM_DIFF;
    }
    if (a->ex && b->ex)
        return mpq_equal(a->q, b->q) ? KM_SAME : KM_DIFF;
    val c, d;
    vinit_(x, &c);
    vinit_(x, &d);
    vset_(&c, a);
    vset_(&d, b);
    vtor_(&c);
    vtor_(&d);
    mpfr_prec_t pr = mpfr_get_prec(c.re);
    mpfr_t dr, di, diff, ma, mb, tol;
    mpfr_inits2(pr, dr, di, diff, ma, mb, tol, (mpfr_ptr)0);
    mpfr_sub(dr, c.re, d.re, MPFR_RNDN);
    mpfr_sub(di, c.im, d.im, MPFR_RNDN);
    mpfr_hypot(diff, dr, di, MPFR_RNDN);
    absval_(ma, &c);
    absval_(mb, &d);
    mpfr_max(ma, ma, mb, MPFR_RNDN);
    double rel = mode == KM_ROUND ? x->cfg->rel_tol : mode == KM_LOOSE ? 1e-12 : 0;
    if (mode == KM_EXACT) {
        mpfr_set_ui_2exp(tol, 1, -(mpfr_exp_t)(pr - 28), MPFR_RNDN);
    } else {
        mpfr_set_d(tol, rel, MPFR_RNDN);
    }
    /* relative to the larger magnitude, absolute near zero */
    mpfr_t lim;
    mpfr_init2(lim, pr);
    mpfr_mul(lim, tol, ma, MPFR_RNDN);
    int same = mpfr_cmp(diff, lim) <= 0;
    if (!same && mode != KM_ROUND) {
        mpfr_set_ui_2exp(lim, 1, -(mpfr_exp_t)(pr - 28), MPFR_RNDN);
        same = mpfr_cmp(diff, lim) <= 0;
    }
    mpfr_clear(lim);
    mpfr_clears(dr, di, diff, ma, mb, tol, (mpfr_ptr)0);
    vclear_(&c);
    vclear_(&d);
    return same ? KM_SAME : KM_DIFF;
}

int km_value_eq(km_ctx *x, km_node *a, km_node *b, int mode)
{
    const char *names[24];
    int nv = both_vars_(x, a, b, names, 24);
    if (nv < 0)
        return KM_UNKNOWN;
    if (mode == KM_ROUND && nv > 0)
        mode = KM_LOOSE;
    val vals[24], va, vb;
    for (int i = 0; i < nv; i++)
        vinit_(x, &vals[i]);
    vinit_(x, &va);
    vinit_(x, &vb);
    int npts = nv ? NPTS_MORE : 1, need = nv ? MIN_VALID : 1, same = 0, big = 0, res = KM_UNKNOWN;
    x->real_only = nv && !has_i_(a, 0) && !has_i_(b, 0);
    for (int k = 0; k < npts && (k < NPTS || same < need); k++) {
        env_ E;
        bind_point_(x, names, nv, k, &E, vals);
        x->approx_big = 0;
        int oa = ev_(x, a, &E, &va);
        int ob = oa ? ev_(x, b, &E, &vb) : 0;
        if (x->fail)
            break;
        if (!oa || !ob) {
            if (x->approx_big)
                big = 1;
            continue;
        }
        int r = cmp_vals_(x, &va, &vb, mode);
        if (r == KM_DIFF) {
            res = KM_DIFF;
            goto done;
        }
        if (x->approx_big)
            big = 1;
        same++;
    }
    if (same >= need)
        res = big ? KM_BIG : KM_SAME;
    else if (big)
        res = KM_BIG;
done:
    for (int i = 0; i < nv; i++)
        vclear_(&vals[i]);
    vclear_(&va);
    vclear_(&vb);
    x->approx_big = 0;
    x->real_only = 0;
    return res;
}

int km_ratio_eq(km_ctx *x, km_node *a, km_node *b, int sign)
{
    const char *names[24];
    int nv = both_vars_(x, a, b, names, 24);
    if (nv < 0)
        return KM_UNKNOWN;
    val vals[24], va, vb, k;
    for (int i = 0; i < nv; i++)
        vinit_(x, &vals[i]);
    vinit_(x, &va);
    vinit_(x, &vb);
    vinit_(x, &k);
    int have_k = 0, zeros = 0, res = KM_UNKNOWN, npts = nv ? NPTS_MORE : 1, need = nv ? MIN_VALID : 1;
    x->real_only = nv && !has_i_(a, 0) && !has_i_(b, 0);
    for (int p = 0; p < npts && (p < NPTS || have_k + zeros < need); p++) {
        env_ E;
        bind_point_(x, names, nv, p, &E, vals);
        if (!ev_(x, a, &E, &va) || !ev_(x, b, &E, &vb)) {
            if (x->fail)
                break;
            continue;
        }
        val zero;
        vinit_(x, &zero);
        int bz = cmp_vals_(x, &vb, &zero, KM_EXACT) == KM_SAME;
        int az = cmp_vals_(x, &va, &zero, KM_EXACT) == KM_SAME;
        vclear_(&zero);
        if (bz || az) {
            if (bz != az) {
                res = KM_DIFF;
                goto done;
            }
            zeros++;
            continue;
        }
        if (!div_(&va, &vb))
            continue;
        if (!have_k) {
            if (!vreal_(&va)) {
                res = KM_DIFF;
                goto done;
            }
            int s = va.ex ? mpq_sgn(va.q) : mpfr_sgn(va.re);
            if ((sign > 0 && s <= 0) || (sign < 0 && s >= 0)) {
                res = KM_DIFF;
                goto done;
            }
            vset_(&k, &va);
            have_k = 1;
        } else if (cmp_vals_(x, &va, &k, KM_LOOSE) != KM_SAME) {
            res = KM_DIFF;
            goto done;
        } else {
            have_k++;
        }
    }
    if (have_k + zeros >= need)
        res = KM_SAME;
done:
    for (int i = 0; i < nv; i++)
        vclear_(&vals[i]);
    vclear_(&va);
    vclear_(&vb);
    vclear_(&k);
    x->real_only = 0;
    return res;
}

static void env_from_(km_ctx *x, km_env *in, env_ *E, val *vals)
{
    E->n = 0;
    for (int i = 0; in && i < in->n && i < 16; i++) {
        vinit_(x, &vals[i]);
        if (in->b[i].isd) {
            mpq_set_d(vals[i].q, in->b[i].d);
        } else {
            mpq_set_si(vals[i].q, in->b[i].p, (unsigned long)(in->b[i].q > 0 ? in->b[i].q : 1));
            mpq_canonicalize(vals[i].q);
        }
        E->b[E->n].name = in->b[i].name;
        E->b[E->n].v = &vals[i];
        E->n++;
    }
}

static void env_clear_(env_ *E)
{
    for (int i = 0; i < E->n; i++)
        vclear_(E->b[i].v);
}

int km_to_double(km_ctx *x, km_node *t, km_env *env, double *out)
{
    val vals[16], v;
    env_ E;
    env_from_(x, env, &E, vals);
    vinit_(x, &v);
    int ok = ev_(x, t, &E, &v) && vreal_(&v);
    if (ok)
        *out = v.ex ? mpq_get_d(v.q) : mpfr_get_d(v.re, MPFR_RNDN);
    vclear_(&v);
    env_clear_(&E);
    x->approx_big = 0;
    return ok && isfinite(*out);
}

static int rel1_(km_ctx *x, km_node *r, env_ *E)
{
    if (r->kind != KN_REL)
        return KM_UNKNOWN;
    val a, b;
    vinit_(x, &a);
    vinit_(x, &b);
    int res = KM_UNKNOWN;
    if (ev_(x, r->kids[0], E, &a) && ev_(x, r->kids[1], E, &b) && vreal_(&a) && vreal_(&b)) {
        double l = a.ex ? mpq_get_d(a.q) : mpfr_get_d(a.re, MPFR_RNDN);
        double h = b.ex ? mpq_get_d(b.q) : mpfr_get_d(b.re, MPFR_RNDN);
        double tol = 1e-9 * fmax(1.0, fmax(fabs(l), fabs(h)));
        int eq = fabs(l - h) <= tol;
        switch (r->op) {
        case KR_EQ: res = eq; break;
        case KR_NE: res = !eq; break;
        case KR_LT: res = !eq && l < h; break;
        case KR_LE: res = eq || l < h; break;
        case KR_GT: res = !eq && l > h; break;
        case KR_GE: res = eq || l > h; break;
        }
    }
    vclear_(&a);
    vclear_(&b);
    return res;
}

int km_rel_truth(km_ctx *x, km_node *rel, km_env *env)
{
    val vals[16];
    env_ E;
    env_from_(x, env, &E, vals);
    int res;
    if (rel->kind == KN_AND) {
        res = 1;
        for (int i = 0; i < rel->n && res == 1; i++)
            res = rel1_(x, rel->kids[i], &E);
    } else {
        res = rel1_(x, rel, &E);
    }
    env_clear_(&E);
    x->approx_big = 0;
    return res;
}

/* pack.c - best-fit-decreasing packing of examples into rows.
 *
 * A segment tree over the room left in the open bins (0..cap) answers "the
 * smallest room >= len that some bin has" in O(log cap); each room value
 * keeps a stack of the bins with that room. Bins are numbered in the order
 * they are opened, so the result depends only on the lengths and their order.
 */
#include "sft/sft.h"

#include <stdlib.h>

#include "core/status.h"

typedef struct bfd_ {
    int64_t cap, size;  /* rooms 0..cap; leaves of the tree */
    int64_t *cnt;       /* (2 * size) bins with each room, summed up the tree */
    int64_t *head;      /* (cap + 1) the last bin pushed with this room, or -1 */
    int64_t *next;      /* (n) the bin below in its room's stack */
    int64_t *room;      /* (n) the room of each bin */
} bfd_;

static void tree_add_(bfd_ *b, int64_t r, int64_t d)
{
    for (int64_t i = r + b->size; i >= 1; i >>= 1)
        b->cnt[i] += d;
}

/* the smallest room >= want that has a bin, or -1 */
static int64_t tree_find_(const bfd_ *b, int64_t want)
{
    /* walk the leaves' ranges: find the leftmost non-empty leaf in [want, size) */
    int64_t lo = want + b->size, hi = 2 * b->size - 1;
    /* climb until a right sibling range can contain a bin */
    int64_t i = lo;
    if (b->cnt[i])
        return want;
    while (i > 1) {
        if (!(i & 1) && b->cnt[i + 1]) { /* i is a left child: try its right sibling */
            i = i + 1;
            while (i < b->size) /* descend to the leftmost non-empty leaf */
                i = b->cnt[2 * i] ? 2 * i : 2 * i + 1;
            return i - b->size;
        }
        i >>= 1;
    }
    (void)hi;
    return -1;
}

static int by_len_desc_(const void *a, const void *b, void *ctx)
{
    const int64_t *len = ctx, x = *(const int64_t *)a, y = *(const int64_t *)b;
    if (len[x] != len[y])
        return len[x] > len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* qsort_r is a GNU extension; a small merge sort keeps this portable and stable */
static void sort_idx_(int64_t *idx, int64_t *tmp, int64_t n, const int64_t *len)
{
    if (n < 2)
        return;
    int64_t h = n / 2;
    sort_idx_(idx, tmp, h, len);
    sort_idx_(idx + h, tmp, n - h, len);
    int64_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = by_len_desc_(&idx[j], &idx[i], (void *)len) < 0 ? idx[j++] : idx[i++];
    while (i < h)
        tmp[k++] = idx[i++];
    while (j < n)
        tmp[k++] = idx[j++];
    for (k = 0; k < n; k++)
        idx[k] = tmp[k];
}

int64_t kd_sft_pack(const int64_t *len, int64_t n, int64_t cap, int64_t *bin)
{
    if (n <= 0)
        return 0;
    bfd_ b = {.cap = cap, .size = 1};
    while (b.size < cap + 1)
        b.size <<= 1;
    int64_t *idx = malloc((size_t)n * sizeof(int64_t)), *tmp = malloc((size_t)n * sizeof(int64_t));
    b.cnt = calloc((size_t)(2 * b.size), sizeof(int64_t));
    b.head = malloc((size_t)(cap + 1) * sizeof(int64_t));
    b.next = malloc((size_t)n * sizeof(int64_t));
    b.room = malloc((size_t)n * sizeof(int64_t));
    int64_t nbins = -1;
    if (!idx || !tmp || !b.cnt || !b.head || !b.next || !b.room) {
        kd_err(KD_E_NOMEM, "packing %lld examples", (long long)n);
        goto done;
    }
    for (int64_t r = 0; r <= cap; r++)
        b.head[r] = -1;
    for (int64_t i = 0; i < n; i++)
        idx[i] = i;
    sort_idx_(idx, tmp, n, len);
    nbins = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = idx[k], l = len[i];
        int64_t r = l <= cap ? tree_find_(&b, l) : -1, j;
        if (r >= 0) { /* pop the newest bin with room r */
            j = b.head[r];
            b.head[r] = b.next[j];
            tree_add_(&b, r, -1);
        } else {
            j = nbins++;
            r = cap;
        }
        bin[i] = j;
        b.room[j] = r - (l < r ? l : r);
        b.next[j] = b.head[b.room[j]];
        b.head[b.room[j]] = j;
        tree_add_(&b, b.room[j], 1);
    }
done:
    free(idx);
    free(tmp);
    free(b.cnt);
    free(b.head);
    free(b.next);
    free(b.room);
    return nbins;
}

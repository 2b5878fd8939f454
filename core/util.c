/* util.c - files, paths, formatting. See util.h. */
#define _POSIX_C_SOURCE 200809L
#include "util.h"
#include "status.h"

#include <jansson.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int kd_read_file(const char *path, size_t max_bytes, char **out, size_t *len)
{
    *out = NULL;
    if (len)
        *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kd_err(errno == ENOENT ? KD_E_NOTFOUND : KD_E_IO, "cannot open '%s': %s", path,
                      strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        close(fd);
        return kd_err(KD_E_IO, "cannot read '%s': %s", path, S_ISDIR(st.st_mode) ? "is a directory" : strerror(e));
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return kd_err(KD_E_RANGE, "'%s' is %lld bytes, more than the %zu allowed", path,
                      (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return kd_err(KD_E_NOMEM, "cannot allocate %zu bytes for '%s'", n + 1, path);
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = errno;
            free(buf);
            close(fd);
            return kd_err(KD_E_IO, "cannot read '%s': %s", path, r == 0 ? "file shrank" : strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    if (len)
        *len = n;
    return KD_OK;
}

int kd_write_file_atomic(const char *path, const void *data, size_t len)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return kd_err(KD_E_RANGE, "path too long: '%s'", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return kd_err(KD_E_IO, "cannot create '%s': %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return kd_err(KD_E_IO, "cannot write '%s': %s", tmp, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return kd_err(KD_E_IO, "cannot flush '%s': %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kd_err(KD_E_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(e));
    }
    return KD_OK;
}

int kd_path_join(char *buf, size_t cap, const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    int n = snprintf(buf, cap, "%s%s%s", dir, (dl && dir[dl - 1] == '/') ? "" : "/", name);
    if (n < 0 || (size_t)n >= cap)
        return kd_err(KD_E_RANGE, "path too long: '%s/%s'", dir, name);
    return KD_OK;
}

int kd_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int kd_mkdirs(const char *dir)
{
    char buf[4096];
    if ((size_t)snprintf(buf, sizeof buf, "%s", dir) >= sizeof buf)
        return kd_err(KD_E_RANGE, "path too long: '%s'", dir);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p)
            continue;
        char c = *p;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return kd_err(KD_E_IO, "cannot create folder '%s': %s", buf, strerror(errno));
        if (!c)
            return KD_OK;
        *p = c;
    }
}

int kd_rmtree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return errno == ENOENT ? KD_OK : kd_err(KD_E_IO, "cannot stat '%s': %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        if (!d)
            return kd_err(KD_E_IO, "cannot open '%s': %s", path, strerror(errno));
        struct dirent *e;
        char p[4096];
        int st = KD_OK;
        while (st == KD_OK && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            if ((st = kd_path_join(p, sizeof p, path, e->d_name)) == KD_OK)
                st = kd_rmtree(p);
        }
        closedir(d);
        if (st)
            return st;
        if (rmdir(path) != 0)
            return kd_err(KD_E_IO, "cannot remove '%s': %s", path, strerror(errno));
        return KD_OK;
    }
    if (unlink(path) != 0 && errno != ENOENT)
        return kd_err(KD_E_IO, "cannot remove '%s': %s", path, strerror(errno));
    return KD_OK;
}

int kd_write_json_atomic(const char *path, const struct json_t *doc, size_t flags)
{
    char *text = json_dumps(doc, flags);
    if (!text)
        return kd_err(KD_E_NOMEM, "'%s': cannot serialise the document", path);
    size_t len = strlen(text);
    char *buf = realloc(text, len + 2);
    if (!buf) {
        free(text);
        return kd_err(KD_E_NOMEM, "'%s': cannot serialise the document", path);
    }
    buf[len] = '\n';
    buf[len + 1] = 0;
    int rc = kd_write_file_atomic(path, buf, len + 1);
    free(buf);
    return rc;
}

int kd_cache_dir(char *buf, size_t cap)
{
    const char *e = getenv("DISTILL_CACHE");
    int n;
    if (e && *e)
        n = snprintf(buf, cap, "%s", e);
    else if ((e = getenv("XDG_CACHE_HOME")) && *e)
        n = snprintf(buf, cap, "%s/distill", e);
    else if ((e = getenv("HOME")) && *e)
        n = snprintf(buf, cap, "%s/.cache/distill", e);
    else
        return kd_err(KD_E_NOTFOUND, "no cache folder: set DISTILL_CACHE or HOME");
    if (n < 0 || (size_t)n >= cap)
        return kd_err(KD_E_RANGE, "cache folder path too long");
    return KD_OK;
}

int kd_tokenizer_dir(const char *name, char *buf, size_t cap)
{
    char cache[4096], sub[4200], file[4300];
    KD_TRY(kd_cache_dir(cache, sizeof cache));
    snprintf(sub, sizeof sub, "%s/tokenizers/%s", cache, name);
    KD_TRY(kd_path_join(file, sizeof file, sub, "tokenizer.json"));
    if (access(file, R_OK) != 0)
        return kd_err(KD_E_NOTFOUND, "tokenizer '%s' not found at '%s': run scripts/setup.sh", name, sub);
    if (snprintf(buf, cap, "%s", sub) >= (int)cap)
        return kd_err(KD_E_RANGE, "tokenizer path too long");
    return KD_OK;
}

char *kd_fmt_bytes(char *buf, size_t cap, double b)
{
    static const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int i = 0;
    while (b >= 1024.0 && i < 5) {
        b /= 1024.0;
        i++;
    }
    snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", b, u[i]);
    return buf;
}

char *kd_fmt_count(char *buf, size_t cap, double n)
{
    static const char *u[] = {"", "K", "M", "B", "T"};
    int i = 0;
    while (n >= 1000.0 && i < 4) {
        n /= 1000.0;
        i++;
    }
    snprintf(buf, cap, i ? "%.2f%s" : "%.0f%s", n, u[i]);
    return buf;
}

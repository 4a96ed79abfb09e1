/*
 * The power-cut recorder (docs/reliability.md): an LD_PRELOAD library that logs, in the order
 * they happen, every write to the store's data file (with its bytes), the start and the end of
 * every flush of it, and every write to standard output (where the child prints its
 * acknowledgements). The parent rebuilds from the log the file states a power cut could leave.
 *
 * VARVEDB_POWERCUT_FILE: the data file to record (its full path).
 * VARVEDB_POWERCUT_LOG:  the log to write.
 *
 * Record: u8 kind, u64 offset, u32 length, then `length` bytes (kinds 1 and 4).
 *   1 a write to the data file (logged before the write is issued); offset: in the file
 *   2 a flush of the data file starts; offset: the process id
 *   3 a flush of the data file has returned; offset: the process id
 *   4 a write to standard output; offset: the process id
 *
 * Several processes may log to one file (two writers on one store): the log is opened with
 * O_APPEND and each record goes in one write, so that records never interleave, and flushes
 * and output name their process.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -1;
static const char *target;
/* Per descriptor: 0 not looked at yet, 1 the data file, 2 anything else. */
static unsigned char kinds[65536];

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static int (*real_fdatasync)(int);
static int (*real_fsync)(int);
static int (*real_close)(int);

static void init(void) {
    if (real_write) return;
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_close = dlsym(RTLD_NEXT, "close");
    target = getenv("VARVEDB_POWERCUT_FILE");
    const char *log = getenv("VARVEDB_POWERCUT_LOG");
    if (log) log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
}

static int is_data(int fd) {
    if (!target || fd < 0 || fd >= 65536) return 0;
    if (kinds[fd] == 0) {
        char link[64], path[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, path, sizeof path - 1);
        kinds[fd] = (n > 0 && (path[n] = 0, strcmp(path, target) == 0)) ? 1 : 2;
    }
    return kinds[fd] == 1;
}

static void put_all(const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = real_write(log_fd, c, n);
        if (w <= 0) return;
        c += w;
        n -= (size_t)w;
    }
}

/* Call with `mu` held. One write per record: O_APPEND keeps other processes' records whole. */
static void record(unsigned char kind, uint64_t off, const void *data, uint32_t len) {
    if (log_fd < 0) return;
    unsigned char *rec = malloc(13 + (size_t)len);
    if (!rec) abort();
    rec[0] = kind;
    memcpy(rec + 1, &off, 8);
    memcpy(rec + 9, &len, 4);
    if (len) memcpy(rec + 13, data, len);
    put_all(rec, 13 + (size_t)len);
    free(rec);
}

ssize_t write(int fd, const void *buf, size_t n) {
    init();
    if (fd == 1 || is_data(fd)) {
        pthread_mutex_lock(&mu);
        if (fd == 1) {
            record(4, (uint64_t)getpid(), buf, (uint32_t)n);
        } else {
            record(1, (uint64_t)lseek(fd, 0, SEEK_CUR), buf, (uint32_t)n);
        }
        ssize_t r = real_write(fd, buf, n);
        pthread_mutex_unlock(&mu);
        return r;
    }
    return real_write(fd, buf, n);
}

static ssize_t logged_pwrite(ssize_t (*real)(int, const void *, size_t, off_t), int fd,
                             const void *buf, size_t n, off_t off) {
    init();
    if (is_data(fd)) {
        pthread_mutex_lock(&mu);
        record(1, (uint64_t)off, buf, (uint32_t)n);
        pthread_mutex_unlock(&mu);
    }
    return real(fd, buf, n, off);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    init();
    return logged_pwrite(real_pwrite, fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    init();
    return logged_pwrite(real_pwrite64, fd, buf, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    init();
    if (is_data(fd)) {
        pthread_mutex_lock(&mu);
        uint64_t at = (uint64_t)off;
        for (int i = 0; i < cnt; i++) {
            record(1, at, iov[i].iov_base, (uint32_t)iov[i].iov_len);
            at += iov[i].iov_len;
        }
        pthread_mutex_unlock(&mu);
    }
    return real_pwritev(fd, iov, cnt, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    init();
    if (is_data(fd)) {
        pthread_mutex_lock(&mu);
        uint64_t at = (uint64_t)lseek(fd, 0, SEEK_CUR);
        for (int i = 0; i < cnt; i++) {
            record(1, at, iov[i].iov_base, (uint32_t)iov[i].iov_len);
            at += iov[i].iov_len;
        }
        pthread_mutex_unlock(&mu);
    }
    return real_writev(fd, iov, cnt);
}

static int logged_sync(int (*real)(int), int fd) {
    if (!is_data(fd)) return real(fd);
    pthread_mutex_lock(&mu);
    record(2, (uint64_t)getpid(), NULL, 0);
    pthread_mutex_unlock(&mu);
    int r = real(fd);
    pthread_mutex_lock(&mu);
    if (r == 0) record(3, (uint64_t)getpid(), NULL, 0);
    pthread_mutex_unlock(&mu);
    return r;
}

int fdatasync(int fd) {
    init();
    return logged_sync(real_fdatasync, fd);
}

int fsync(int fd) {
    init();
    return logged_sync(real_fsync, fd);
}

int close(int fd) {
    init();
    if (fd >= 0 && fd < 65536) kinds[fd] = 0;
    return real_close(fd);
}

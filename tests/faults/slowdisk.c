/*
 * Slow-disk shim of the fault suite (LD_PRELOAD). Compiled by the harness at run time into the run
 * directory (gcc -shared -fPIC -O2 slowdisk.c -o slowdisk.so -ldl); never committed as a binary.
 *
 * fsync, fdatasync, sync_file_range and msync call the real function, then sleep RSF_SLOW_MS
 * milliseconds (default 200) while the file named by RSF_SLOW_FLAG exists, and append one byte to
 * RSF_SLOW_HITS per slowed call so the harness can prove the shim applied to that process. Without the
 * flag file a call costs one access(2) more. Left out: O_DSYNC/O_SYNC writes and io_uring, which do not
 * go through these functions.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void slow_down(void) {
    const char *flag = getenv("RSF_SLOW_FLAG");
    if (flag == NULL || access(flag, F_OK) != 0) {
        return;
    }
    const char *ms_s = getenv("RSF_SLOW_MS");
    long ms = ms_s ? atol(ms_s) : 200;
    if (ms <= 0) {
        return;
    }
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    const char *hits = getenv("RSF_SLOW_HITS");
    if (hits != NULL) {
        int fd = open(hits, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            ssize_t w = write(fd, "x", 1);
            (void)w;
            close(fd);
        }
    }
}

int fsync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    int r = real(fd);
    slow_down();
    return r;
}

int fdatasync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    int r = real(fd);
    slow_down();
    return r;
}

int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags) {
    static int (*real)(int, off_t, off_t, unsigned int) = NULL;
    if (real == NULL) {
        real = (int (*)(int, off_t, off_t, unsigned int))dlsym(RTLD_NEXT, "sync_file_range");
    }
    int r = real(fd, offset, nbytes, flags);
    slow_down();
    return r;
}

int msync(void *addr, size_t length, int flags) {
    static int (*real)(void *, size_t, int) = NULL;
    if (real == NULL) {
        real = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "msync");
    }
    int r = real(addr, length, flags);
    slow_down();
    return r;
}

/* Opens (and reads a byte of) files at a fixed rate, cycling over
 * /data/files/f0..fN-1, then prints how many opens it made. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long rate = argc > 1 ? atol(argv[1]) : 10000;
    double seconds = argc > 2 ? atof(argv[2]) : 3;
    long count = argc > 3 ? atol(argv[3]) : 10000;
    char path[64], byte;
    long opens = 0;
    double start = now();
    while (now() - start < seconds) {
        long due = (long)((now() - start) * rate);
        while (opens < due) {
            snprintf(path, sizeof path, "/data/files/f%ld", opens % count);
            int fd = open(path, O_RDONLY);
            if (fd >= 0) {
                if (read(fd, &byte, 1) < 0) return 3;
                close(fd);
            }
            opens++;
        }
        usleep(200);
    }
    printf("opens %ld in %.2f s\n", opens, now() - start);
    return 0;
}

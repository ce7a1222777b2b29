/* The floor for persisting points into existing whisper files (issue 19):
 * for each file named on stdin, open it, pwrite each round's 12-byte point
 * at its slot of the first archive, close it. No header read, no
 * propagation, no cache: what any writer must at least do per file.
 *
 *   gcc -O2 -o pwrite_floor bench/pwrite_floor.c
 *   find DIR -name '*.wsp' | ./pwrite_floor ROUNDS FIRST_TIMESTAMP
 *
 * Prints "<files> <points> <seconds>".
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Whisper's header: 16 bytes of metadata, 12 per archive; one archive of
 * 360 points at 10 s (the bench's schema). */
#define FIRST_ARCHIVE 28
#define POINTS 360
#define STEP 10

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: pwrite_floor ROUNDS FIRST_TIMESTAMP < paths\n");
        return 2;
    }
    int rounds = atoi(argv[1]);
    long first = atol(argv[2]);
    size_t cap = 1 << 16, n = 0;
    char **paths = malloc(cap * sizeof *paths);
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (n == cap) paths = realloc(paths, (cap *= 2) * sizeof *paths);
        paths[n++] = strdup(line);
    }
    double start = now();
    long points = 0;
    for (size_t i = 0; i < n; i++) {
        int fd = open(paths[i], O_RDWR);
        if (fd < 0) { perror(paths[i]); return 1; }
        for (int r = 0; r < rounds; r++) {
            uint32_t ts = (uint32_t)(first + (long)r * STEP);
            unsigned char point[12];
            uint32_t be_ts = htonl(ts);
            double v = r;
            uint64_t bits;
            memcpy(&bits, &v, 8);
            bits = ((uint64_t)htonl((uint32_t)bits) << 32) | htonl((uint32_t)(bits >> 32));
            memcpy(point, &be_ts, 4);
            memcpy(point + 4, &bits, 8);
            off_t at = FIRST_ARCHIVE + (off_t)((ts / STEP) % POINTS) * 12;
            if (pwrite(fd, point, 12, at) != 12) { perror("pwrite"); return 1; }
            points++;
        }
        close(fd);
    }
    printf("%zu %ld %.6f\n", n, points, now() - start);
    return 0;
}

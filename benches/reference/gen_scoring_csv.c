/* The end-to-end scoring file of benches/scoring.rs without building the bench: ROWS rows
 * of `id,x0..x49`, ids C0, C1, ..., each value missing (empty) with probability 5 %, else a
 * decimal in [-2, 2] with 3 decimals (what the bench writes: -2 + v/5000 to 3 places).
 *   cc -O2 -o gen benches/reference/gen_scoring_csv.c && ./gen 10000000 > target/tmp/s.csv */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t s = 0x9e3779b97f4a7c15u;
static uint32_t next(void) { /* xorshift64* */
    s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
    return (uint32_t)((s * 0x2545f4914f6cdd1du) >> 32);
}

int main(int argc, char **argv) {
    long rows = argc > 1 ? atol(argv[1]) : 1000000;
    static char buf[1 << 20];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    fputs("id", stdout);
    for (int j = 0; j < 50; j++) printf(",x%d", j);
    putchar('\n');
    char line[1024];
    for (long r = 0; r < rows; r++) {
        int n = sprintf(line, "C%ld", r);
        for (int j = 0; j < 50; j++) {
            uint32_t v = next() % 20000;
            line[n++] = ',';
            if (v < 1000) continue;
            long m = ((long)v * 1000 + 2500) / 5000 - 2000; /* thousandths */
            if (m < 0) { line[n++] = '-'; m = -m; }
            n += sprintf(line + n, "%ld.%03ld", m / 1000, m % 1000);
        }
        line[n++] = '\n';
        fwrite(line, 1, n, stdout);
    }
    return 0;
}

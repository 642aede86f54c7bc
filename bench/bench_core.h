/*
 * bench_core.h - what the core benchmarks share: a clock, a median, the
 * argument parsing.  Compiles as C11 and as C++ (bench_switch_boost.cpp).
 *
 * Every program prints its results as lines "RESULT <key> <value>" on
 * stdout, which bench/run_core.sh collects; other lines start with '#'.
 */
#ifndef BENCH_CORE_H
#define BENCH_CORE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Wall time, or with ECO_BENCH_CLOCK=cpu the process's CPU time (all its
 * threads): on a shared machine the time the program was not running is
 * then left out, which steadies comparisons of two builds (bench/ab_core.sh). */
static inline double bench_now_ns(void)
{
    static int use_cpu = -1;
    if (use_cpu < 0) {
        const char *c = getenv("ECO_BENCH_CLOCK");
        use_cpu = c != NULL && strcmp(c, "cpu") == 0;
    }
    struct timespec ts;
    clock_gettime(use_cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n-1] (sorts v).  The median, not the mean: on a shared
 * machine a preempted repetition is an outlier, not a data point. */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* argv[i] as a positive number, or def when absent. */
static inline long bench_arg(int argc, char **argv, int i, long def)
{
    if (i >= argc)
        return def;
    long v = strtol(argv[i], NULL, 10);
    if (v <= 0) {
        fprintf(stderr, "bad argument %s\n", argv[i]);
        exit(2);
    }
    return v;
}

/* A field of /proc/self/status in kB (VmRSS, VmPTE...), or -1. */
static inline long bench_status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t len = strlen(field);
    long v = -1;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, len) == 0 && line[len] == ':') {
            v = strtol(line + len + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* Lines of /proc/self/maps (mappings), or -1. */
static inline long bench_maps_lines(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int c;
    if (f == NULL)
        return -1;
    while ((c = getc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

#endif /* BENCH_CORE_H */

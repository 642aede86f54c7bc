/*
 * bench_switch_boost.cpp - the peer of bench_switch and bench_spawn:
 * Boost.Context's low-level fcontext (make_fcontext / jump_fcontext), the
 * layer boost::context::fiber is built on.  Like libeco it keeps MXCSR and
 * the x87 control word across a switch.
 *
 *     bench_switch_boost switch [round_trips [reps]]   default 1,000,000 x 11
 *     bench_switch_boost spawn  [ops [reps]]           default 1,000,000 x 11
 *
 * switch: the same loop as bench_switch eco (one round trip = 2 switches).
 * spawn: make_fcontext on a reused stack, jump in, jump back out: the floor
 * under any spawn (no allocation, no bookkeeping), for scale only.
 */
#include "bench_core.h"

#include <boost/context/detail/fcontext.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include <sys/mman.h>

namespace fc = boost::context::detail;

static const std::size_t stack_size = 256 * 1024;

static void switch_body(fc::transfer_t t)
{
    long n = *static_cast<long *>(t.data);
    for (long i = 0; i < n; i++)
        t = fc::jump_fcontext(t.fctx, nullptr);
    fc::jump_fcontext(t.fctx, nullptr); // never resumed: a context cannot return
}

static double switch_rep(long n, char *stack)
{
    fc::fcontext_t co = fc::make_fcontext(stack + stack_size, stack_size, switch_body);
    // Same shape as bench_switch's loop; the first jump starts the body,
    // which reads n from the data pointer.
    double t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
        co = fc::jump_fcontext(co, &n).fctx;
    double t1 = bench_now_ns();
    fc::jump_fcontext(co, nullptr); // lets the body leave its loop
    return (t1 - t0) / (2.0 * static_cast<double>(n));
}

static void spawn_body(fc::transfer_t t)
{
    fc::jump_fcontext(t.fctx, t.data); // "return" the argument
}

static double spawn_rep(long n, char *stack)
{
    double t0 = bench_now_ns();
    for (long i = 0; i < n; i++) {
        fc::fcontext_t co = fc::make_fcontext(stack + stack_size, stack_size, spawn_body);
        fc::jump_fcontext(co, nullptr);
    }
    double t1 = bench_now_ns();
    return (t1 - t0) / static_cast<double>(n);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "switch";
    bool is_switch = std::string(mode) == "switch";
    if (!is_switch && std::string(mode) != "spawn") {
        std::fprintf(stderr, "usage: %s switch|spawn [n [reps]]\n", argv[0]);
        return 2;
    }
    long n = bench_arg(argc, argv, 2, 1000000);
    int reps = static_cast<int>(bench_arg(argc, argv, 3, 11));
    void *mem = mmap(nullptr, stack_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (mem == MAP_FAILED) {
        std::perror("mmap");
        return 1;
    }
    char *stack = static_cast<char *>(mem);
    std::vector<double> ns(static_cast<std::size_t>(reps));

    (is_switch ? switch_rep : spawn_rep)(n, stack); // warm-up
    for (int r = 0; r < reps; r++)
        ns[static_cast<std::size_t>(r)] = (is_switch ? switch_rep : spawn_rep)(n, stack);
    double med = bench_median(ns.data(), reps);

    if (is_switch) {
        std::printf("# switch fcontext: %ld round trips x %d reps, ns/switch min %.2f median %.2f "
                    "max %.2f\n", n, reps, ns[0], med, ns[static_cast<std::size_t>(reps - 1)]);
        std::printf("RESULT switch_fcontext_ns %.3f\n", med);
        std::printf("RESULT switch_fcontext_switches %ld\n", 2 * n * (reps + 1));
    } else {
        std::printf("# spawn fcontext (make+jump+jump, no allocation): %ld ops x %d reps, ns/op "
                    "min %.2f median %.2f max %.2f\n", n, reps, ns[0], med,
                    ns[static_cast<std::size_t>(reps - 1)]);
        std::printf("RESULT spawn_fcontext_ns %.3f\n", med);
        std::printf("RESULT spawn_fcontext_ops %ld\n", n * (reps + 1));
    }
    munmap(mem, stack_size);
    return 0;
}

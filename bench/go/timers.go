// timers.go - the Go peer of bench/bench_timers.c "run": N goroutines, each
// sleeping K times for a random 1-100 ms (the same xorshift sequence per
// index), then returning.  Wall, user, sys and CPU seconds and the worst
// overshoot of a sleep past its time, as "RESULT key value" lines.
//
//	timers N K     run with GOMAXPROCS=1
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func next(s *uint32) uint32 {
	x := *s
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	*s = x
	return x
}

func cpu() (float64, float64) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec) + float64(ru.Utime.Usec)/1e6,
		float64(ru.Stime.Sec) + float64(ru.Stime.Usec)/1e6
}

func main() {
	n, k := 100000, 10
	if len(os.Args) > 2 {
		n, _ = strconv.Atoi(os.Args[1])
		k, _ = strconv.Atoi(os.Args[2])
	}
	var worst int64
	var wg sync.WaitGroup
	u0, s0 := cpu()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			seed := uint32(i)*2654435761 + 1
			for j := 0; j < k; j++ {
				ms := 1 + int64(next(&seed)%100)
				start := time.Now()
				time.Sleep(time.Duration(ms) * time.Millisecond)
				over := int64(time.Since(start)) - ms*1000000
				for {
					w := atomic.LoadInt64(&worst)
					if over <= w || atomic.CompareAndSwapInt64(&worst, w, over) {
						break
					}
				}
			}
		}(i)
	}
	wg.Wait()
	wall := time.Since(t0).Seconds()
	u1, s1 := cpu()
	fmt.Printf("# run: %d goroutines x %d sleeps of 1-100 ms\n", n, k)
	fmt.Printf("RESULT wall_s %.3f\nRESULT user_s %.3f\nRESULT sys_s %.3f\nRESULT cpu_s %.3f\n",
		wall, u1-u0, s1-s0, (u1-u0)+(s1-s0))
	fmt.Printf("RESULT worst_overshoot_ms %.3f\n", float64(worst)/1e6)
	fmt.Printf("RESULT failed 0\n")
}

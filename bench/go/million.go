// million.go - the Go peer of bench/bench_million.c: N goroutines, each
// parked in time.Sleep (one runtime timer each) or on a channel nobody
// sends to; the seconds from the first `go` until all are parked, and VmRSS
// and VmPTE per goroutine over the process before.  Same output lines.
//
//	million [N [sleep|chan]]     run with GOMAXPROCS=1
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

func statusKB(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, field+":") {
			v, _ := strconv.ParseInt(strings.Fields(line[len(field)+1:])[0], 10, 64)
			return v
		}
	}
	return -1
}

func mapsLines() int {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return -1
	}
	return strings.Count(string(b), "\n")
}

func main() {
	n := int64(1000000)
	mode := "sleep"
	if len(os.Args) > 1 {
		n, _ = strconv.ParseInt(os.Args[1], 10, 64)
	}
	if len(os.Args) > 2 {
		mode = os.Args[2]
	}
	gate := make(chan int)
	done := make(chan struct{})
	var parked int64
	runtime.GC()
	rss0, pte0 := statusKB("VmRSS"), statusKB("VmPTE")
	t0 := time.Now()
	var tParked time.Time
	for i := int64(0); i < n; i++ {
		go func() {
			if atomic.AddInt64(&parked, 1) == n {
				tParked = time.Now()
				close(done)
			}
			if mode == "chan" {
				<-gate
			} else {
				time.Sleep(time.Hour)
			}
		}()
	}
	<-done
	start := tParked.Sub(t0).Seconds()
	rss, pte := statusKB("VmRSS")-rss0, statusKB("VmPTE")-pte0
	maps := mapsLines()
	fmt.Printf("# %d goroutines parked (%s) in %.2f s; %.0f B resident each, %.0f B of page tables each; %d maps lines\n",
		n, mode, start, float64(rss)*1024/float64(n), float64(pte)*1024/float64(n), maps)
	fmt.Printf("RESULT million_go_%s_start_s %.3f\n", mode, start)
	fmt.Printf("RESULT million_go_%s_rss_bytes_per_co %.1f\n", mode, float64(rss)*1024/float64(n))
	fmt.Printf("RESULT million_go_%s_pte_bytes_per_co %.1f\n", mode, float64(pte)*1024/float64(n))
	fmt.Printf("RESULT million_go_%s_maps %d\n", mode, maps)
}

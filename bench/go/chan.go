// chan.go - the Go peer of bench/chan_bench.c: same modes, same output.
//
//	chan pingpong N | buffered N | threads N
//
// Run "threads" with GOMAXPROCS=2 and the others with GOMAXPROCS=1.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: chan pingpong|buffered|threads N")
		os.Exit(2)
	}
	n, _ := strconv.ParseInt(os.Args[2], 10, 64)
	var per float64
	var sum int64
	switch os.Args[1] {
	case "pingpong":
		a, b := make(chan int64), make(chan int64)
		go func() {
			for v := range a {
				b <- v
			}
		}()
		t0 := time.Now()
		for i := int64(0); i < n; i++ {
			a <- i
			sum += <-b
		}
		per = float64(time.Since(t0).Nanoseconds()) / float64(2*n)
		close(a)
	case "buffered", "threads":
		c := make(chan int64, 1024)
		done := make(chan int64)
		t0 := time.Now()
		go func() {
			var s int64
			for v := range c {
				s += v
			}
			done <- s
		}()
		for i := int64(0); i < n; i++ {
			c <- i
		}
		close(c)
		sum = <-done
		per = float64(time.Since(t0).Nanoseconds()) / float64(n)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
	if sum != n*(n-1)/2 {
		fmt.Fprintln(os.Stderr, "checksum mismatch")
		os.Exit(1)
	}
	fmt.Printf("%.2f\n", per)
}

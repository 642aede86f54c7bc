// echo.go - the echo server in Go, the peer of sample/echo_server: a
// goroutine per connection reading into a 4 KiB buffer and writing back
// what came (Go sets TCP_NODELAY itself).  Threads: GOMAXPROCS.
//
//	echo PORT
package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func serve(c net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	c.Close()
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: echo PORT")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
	fmt.Printf("go echo: listening on 127.0.0.1 port %s\n", os.Args[1])
	for {
		c, err := ln.Accept()
		if err != nil { // out of fds: as net/http, wait a little and retry
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go serve(c)
	}
}

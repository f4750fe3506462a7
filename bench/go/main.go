// Command weft-bench-go runs one workload of weft's benchmark harness in Go,
// so that weft can be compared with the runtime whose model it copies.
//
// The harness in bench/bench.c builds this program with `go build` and runs
// it once per measurement, as
//
//	weft-bench-go -workload spawn|yield|skynet|memory -n COUNT
//
// It prints "result VALUE" on stdout, in the unit the C workloads use:
// nanoseconds per goroutine (spawn), nanoseconds per switch (yield),
// milliseconds for the tree (skynet) or KiB of resident memory per parked
// goroutine (memory). The memory workload also prints "page_tables VALUE",
// the growth of VmPTE per goroutine. Only the standard library is used.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// skynetFanout is the number of children per skynet node.
const skynetFanout = 10

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "weft-bench-go: error: "+format+"\n", args...)
	os.Exit(2)
}

// spawn starts n goroutines that only signal a WaitGroup and waits for them.
func spawn(n int) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func() { wg.Done() }()
	}
	wg.Wait()
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// yield lets two goroutines call runtime.Gosched in turn on one P. n is the
// number of switches, so each goroutine yields n/2 times.
func yield(n int) float64 {
	runtime.GOMAXPROCS(1)
	yields := n / 2
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(2)
	for g := 0; g < 2; g++ {
		go func() {
			for i := 0; i < yields; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return float64(time.Since(start).Nanoseconds()) / float64(2*yields)
}

// skynetNode sends the sum of the leaf indexes firstLeaf .. firstLeaf+leaves-1
// on out. An inner node starts skynetFanout children that report on a
// channel of its own.
func skynetNode(out chan<- int64, firstLeaf, leaves int64) {
	if leaves == 1 {
		out <- firstLeaf
		return
	}
	results := make(chan int64)
	perChild := leaves / skynetFanout
	for i := int64(0); i < skynetFanout; i++ {
		go skynetNode(results, firstLeaf+i*perChild, perChild)
	}
	var sum int64
	for i := 0; i < skynetFanout; i++ {
		sum += <-results
	}
	out <- sum
}

func skynet(leaves int64) float64 {
	out := make(chan int64)
	start := time.Now()
	go skynetNode(out, 0, leaves)
	sum := <-out
	elapsed := time.Since(start)
	if want := leaves * (leaves - 1) / 2; sum != want {
		fail("Go skynet with %d leaves returned sum %d, expected %d", leaves, sum, want)
	}
	return float64(elapsed.Nanoseconds()) / 1e6
}

// memoryKiB returns VmRSS and VmPTE from /proc/self/status, the source the
// C workloads read, so no Go runtime statistic enters the comparison.
func memoryKiB() (rss, pageTables int64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fail("cannot read /proc/self/status: %v", err)
	}
	defer f.Close()
	rss, pageTables = -1, -1
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) < 2 || (fields[0] != "VmRSS:" && fields[0] != "VmPTE:") {
			continue
		}
		kib, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			fail("invalid %s line in /proc/self/status: %v", fields[0], err)
		}
		if fields[0] == "VmRSS:" {
			rss = kib
		} else {
			pageTables = kib
		}
	}
	if rss < 0 || pageTables < 0 {
		fail("VmRSS or VmPTE not found in /proc/self/status")
	}
	return rss, pageTables
}

// memory parks n goroutines on a channel receive and returns the growth of
// the resident set and of the page tables per goroutine.
func memory(n int) (rss, pageTables float64) {
	rssBefore, tablesBefore := memoryKiB()
	var parked, exited sync.WaitGroup
	release := make(chan struct{})
	parked.Add(n)
	exited.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			parked.Done()
			<-release
			exited.Done()
		}()
	}
	parked.Wait()
	live := runtime.NumGoroutine()
	rssAfter, tablesAfter := memoryKiB()
	close(release)
	exited.Wait()
	if live < n+1 {
		fail("runtime.NumGoroutine returned %d while %d goroutines were parked", live, n)
	}
	return float64(rssAfter-rssBefore) / float64(n), float64(tablesAfter-tablesBefore) / float64(n)
}

func main() {
	workload := flag.String("workload", "", "workload to run: spawn, yield, skynet or memory")
	count := flag.Int64("n", 0, "goroutines (spawn, memory), switches (yield) or leaves (skynet)")
	flag.Parse()
	if *count <= 0 {
		fail("-n must be a positive count, got %d", *count)
	}

	var result float64
	pageTables := -1.0
	switch *workload {
	case "spawn":
		result = spawn(int(*count))
	case "yield":
		result = yield(int(*count))
	case "skynet":
		result = skynet(*count)
	case "memory":
		result, pageTables = memory(int(*count))
	default:
		fail("unknown -workload %q (expected spawn, yield, skynet or memory)", *workload)
	}
	fmt.Printf("result %.6f\n", result)
	if pageTables >= 0 {
		fmt.Printf("page_tables %.6f\n", pageTables)
	}
}

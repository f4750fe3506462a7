// Command weft-bench-go runs one workload of weft's benchmark harness in Go,
// so that weft can be compared with the runtime whose model it copies.
//
// The harness in bench/bench.c builds this program with `go build` and runs
// it once per measurement, as
//
//	weft-bench-go -workload WORKLOAD -n COUNT [-param N]
//
// It prints "result VALUE" on stdout, in the unit the C workloads use:
// nanoseconds per goroutine (spawn), nanoseconds per switch (yield),
// milliseconds for the tree (skynet and skynet-chan, which are the same
// program here) and KiB of resident memory per parked goroutine (memory).
// The channel workloads report nanoseconds per round trip (pingpong), per
// item (chan) or per message (select), and sleep reports milliseconds until
// every goroutine has slept. The sync workloads report nanoseconds per lock
// (mutex), per operation (rwmutex), per goroutine (wg-fanout) or per
// context made and canceled (context). The memory workload also prints
// "page_tables VALUE", the growth of VmPTE per goroutine. -param is
// GOMAXPROCS for pingpong, the number of producers and of consumers for
// chan, the channel capacity for select, the locks or operations per
// goroutine for mutex and rwmutex and the number of rounds for wg-fanout,
// as in bench/bench.h.
//
// With -workload tcp-echo the program is the Go echo server of the tcp-echo
// workload instead, and takes no -n: it prints "port N", echoes until its
// standard input reaches end of file, and exits. The harness drives it with
// its own load generator. Only the standard library is used.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Sizes shared with bench/bench.h.
const (
	skynetFanout   = 10               // children per skynet node
	chanCapacity   = 1024             // capacity of the chan workload's channel
	selectChannels = 4                // channels in the select workload
	sleepRounds    = 10               // sleeps per goroutine in the sleep workload
	sleepDuration  = time.Millisecond // length of each of those sleeps

	// In the rwmutex workload, one operation in rwmutexWriteEvery takes the
	// write lock.
	rwmutexWriteEvery = 100
)

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

// pingpong sends 0 .. trips-1 to a goroutine over one unbuffered channel
// and checks each reply, value + 1, on another. procs above 0 sets
// GOMAXPROCS.
func pingpong(trips int64, procs int) float64 {
	if procs > 0 {
		runtime.GOMAXPROCS(procs)
	}
	ping := make(chan int64)
	pong := make(chan int64)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		for v := range ping {
			pong <- v + 1
		}
		close(done)
	}()
	for i := int64(0); i < trips; i++ {
		ping <- i
		if reply := <-pong; reply != i+1 {
			fail("Go pingpong sent %d and got %d back, expected %d", i, reply, i+1)
		}
	}
	close(ping)
	<-done
	return float64(time.Since(start).Nanoseconds()) / float64(trips)
}

// chanItems moves the values 0 .. items-1 from pairs producers to pairs
// consumers through one channel of capacity chanCapacity, and checks their
// count and sum.
func chanItems(items int64, pairs int) float64 {
	if pairs < 1 {
		fail("the chan workload needs at least 1 producer, got %d", pairs)
	}
	ch := make(chan int64, chanCapacity)
	var producers, consumers sync.WaitGroup
	var sum, received int64

	start := time.Now()
	producers.Add(pairs)
	consumers.Add(pairs)
	for p := 0; p < pairs; p++ {
		go func() {
			localSum, localCount := int64(0), int64(0)
			for v := range ch {
				localSum += v
				localCount++
			}
			atomic.AddInt64(&sum, localSum)
			atomic.AddInt64(&received, localCount)
			consumers.Done()
		}()
		go func(first int64) {
			for v := first; v < items; v += int64(pairs) {
				ch <- v
			}
			producers.Done()
		}(int64(p))
	}
	producers.Wait()
	close(ch)
	consumers.Wait()
	elapsed := time.Since(start)

	if want := items * (items - 1) / 2; received != items || sum != want {
		fail("Go chan received %d items with sum %d, expected %d with sum %d",
			received, sum, items, want)
	}
	return float64(elapsed.Nanoseconds()) / float64(items)
}

// selectMessages receives the values 0 .. messages-1 with one select over
// selectChannels channels of the given capacity, each fed and then closed
// by its own producer. A closed channel is set to nil, which select never
// picks.
func selectMessages(messages int64, capacity int) float64 {
	if capacity < 0 {
		fail("the select workload needs a capacity of 0 or more, got %d", capacity)
	}
	var chans [selectChannels]chan int64
	for i := range chans {
		chans[i] = make(chan int64, capacity)
	}
	var sum, received int64

	start := time.Now()
	for i := range chans {
		go func(ch chan<- int64, first int64) {
			for v := first; v < messages; v += selectChannels {
				ch <- v
			}
			close(ch)
		}(chans[i], int64(i))
	}

	a, b, c, d := chans[0], chans[1], chans[2], chans[3]
	open := selectChannels
	for open > 0 {
		var v int64
		var ok bool
		select {
		case v, ok = <-a:
			if !ok {
				a = nil
			}
		case v, ok = <-b:
			if !ok {
				b = nil
			}
		case v, ok = <-c:
			if !ok {
				c = nil
			}
		case v, ok = <-d:
			if !ok {
				d = nil
			}
		}
		if !ok {
			open--
			continue
		}
		sum += v
		received++
	}
	elapsed := time.Since(start)

	if want := messages * (messages - 1) / 2; received != messages || sum != want {
		fail("Go select received %d messages with sum %d, expected %d with sum %d",
			received, sum, messages, want)
	}
	return float64(elapsed.Nanoseconds()) / float64(messages)
}

// sleepTasks starts n goroutines that each sleep sleepDuration sleepRounds
// times, and returns the milliseconds until all of them are done.
func sleepTasks(n int) float64 {
	var wg sync.WaitGroup
	var early int64
	start := time.Now()
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			for r := 0; r < sleepRounds; r++ {
				before := time.Now()
				time.Sleep(sleepDuration)
				if time.Since(before) < sleepDuration {
					atomic.AddInt64(&early, 1)
				}
			}
			wg.Done()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if early != 0 {
		fail("%d of %d time.Sleep calls returned before %v", early, n*sleepRounds, sleepDuration)
	}
	return float64(elapsed.Nanoseconds()) / 1e6
}

// tasksFor returns count / perTask, failing unless perTask divides count, as
// bench_tasks does in bench/bench.c.
func tasksFor(workload string, count, perTask int64) int64 {
	if perTask <= 0 || count%perTask != 0 {
		fail("the %s workload needs a parameter that divides its count %d, got %d",
			workload, count, perTask)
	}
	return count / perTask
}

// mutexLocks runs count/perTask goroutines that each lock one sync.Mutex,
// increment a counter and unlock, perTask times, and returns the
// nanoseconds per lock. perTask equal to count is the uncontended case.
func mutexLocks(count, perTask int64) float64 {
	tasks := tasksFor("mutex", count, perTask)
	var mu sync.Mutex
	var counter int64
	var wg sync.WaitGroup

	start := time.Now()
	wg.Add(int(tasks))
	for t := int64(0); t < tasks; t++ {
		go func() {
			for i := int64(0); i < perTask; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	if counter != count {
		fail("Go mutex: %d goroutines counted to %d under the mutex, expected %d",
			tasks, counter, count)
	}
	return float64(elapsed.Nanoseconds()) / float64(count)
}

// rwmutexOps runs count/perTask goroutines that each perform perTask
// operations on one sync.RWMutex, and returns the nanoseconds per
// operation. Operation i takes the write lock and increments two counters
// when i is a multiple of rwmutexWriteEvery. Every other operation takes
// the read lock and checks that the counters are equal.
func rwmutexOps(count, perTask int64) float64 {
	tasks := tasksFor("rwmutex", count, perTask)
	var rw sync.RWMutex
	var first, second int64 // guarded by rw
	var reads, torn, seen int64
	var wg sync.WaitGroup

	start := time.Now()
	wg.Add(int(tasks))
	for t := int64(0); t < tasks; t++ {
		go func() {
			var localReads, localTorn, localSeen int64
			for i := int64(0); i < perTask; i++ {
				if i%rwmutexWriteEvery == 0 {
					rw.Lock()
					first++
					second++
					rw.Unlock()
					continue
				}
				rw.RLock()
				v := first
				if v != second {
					localTorn++
				}
				rw.RUnlock()
				localSeen += v
				localReads++
			}
			atomic.AddInt64(&reads, localReads)
			atomic.AddInt64(&torn, localTorn)
			atomic.AddInt64(&seen, localSeen)
			wg.Done()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	writes := tasks * ((perTask + rwmutexWriteEvery - 1) / rwmutexWriteEvery)
	if first != writes || second != writes || reads != count-writes || torn != 0 || seen < 0 {
		fail("Go rwmutex: counters %d and %d after %d reads (%d torn), expected %d writes and %d reads",
			first, second, reads, torn, writes, count-writes)
	}
	return float64(elapsed.Nanoseconds()) / float64(count)
}

// wgFanout runs rounds rounds, each starting count/rounds goroutines that
// count themselves and call Done on one sync.WaitGroup, which the main
// goroutine waits on. It returns the nanoseconds per goroutine.
func wgFanout(count, rounds int64) float64 {
	perRound := tasksFor("wg-fanout", count, rounds)
	var wg sync.WaitGroup
	var finished int64

	start := time.Now()
	for r := int64(0); r < rounds; r++ {
		wg.Add(int(perRound))
		for i := int64(0); i < perRound; i++ {
			go func() {
				atomic.AddInt64(&finished, 1)
				wg.Done()
			}()
		}
		wg.Wait()
		if got := atomic.LoadInt64(&finished); got != (r+1)*perRound {
			fail("Go wg-fanout: %d goroutines had finished when round %d's Wait returned, expected %d",
				got, r+1, (r+1)*perRound)
		}
	}
	return float64(time.Since(start).Nanoseconds()) / float64(count)
}

// contextCancel makes count children of context.Background with
// context.WithCancel, cancels each and checks its error, and returns the
// nanoseconds per context.
func contextCancel(count int64) float64 {
	background := context.Background()
	start := time.Now()
	for i := int64(0); i < count; i++ {
		ctx, cancel := context.WithCancel(background)
		cancel()
		if err := ctx.Err(); err != context.Canceled {
			fail("Go context: Err after cancel returned %v, expected %v", err, context.Canceled)
		}
	}
	return float64(time.Since(start).Nanoseconds()) / float64(count)
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

// echoConn writes every byte read from c back to c until the peer closes,
// the way a goroutine-per-connection Go server does. An error other than
// the peer going away is printed.
func echoConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				if !peerGone(werr) {
					fmt.Fprintf(os.Stderr, "Go echo server: write failed: %v\n", werr)
				}
				return
			}
		}
		if err != nil {
			if err != io.EOF && !peerGone(err) {
				fmt.Fprintf(os.Stderr, "Go echo server: read failed: %v\n", err)
			}
			return
		}
	}
}

func peerGone(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// tcpEchoServer listens on 127.0.0.1 with a port the system picks, prints
// "port N", and runs a goroutine per accepted connection until standard
// input reaches end of file. Accepted connections have TCP_NODELAY set,
// which is the net package's default (TCPConn.SetNoDelay in Go 1.19).
func tcpEchoServer() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("Go echo server: listening on 127.0.0.1 failed: %v", err)
	}
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	go func() {
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				fail("Go echo server: accept failed: %v", err)
			}
			go echoConn(c)
		}
	}()
	if _, err := io.Copy(io.Discard, os.Stdin); err != nil {
		fail("Go echo server: reading standard input failed: %v", err)
	}
	ln.Close()
}

func main() {
	workload := flag.String("workload", "", "workload to run: spawn, yield, skynet, "+
		"skynet-chan, memory, pingpong, chan, select, sleep, mutex, rwmutex, "+
		"wg-fanout or context; tcp-echo runs the echo server")
	count := flag.Int64("n", 0, "goroutines (spawn, memory, sleep, wg-fanout), "+
		"switches (yield), leaves (skynet), round trips (pingpong), items (chan), "+
		"messages (select), locks (mutex), operations (rwmutex) or contexts (context)")
	param := flag.Int("param", 0, "GOMAXPROCS (pingpong; 0 keeps the default), "+
		"producers and consumers each (chan), channel capacity (select), locks or "+
		"operations per goroutine (mutex, rwmutex) or rounds (wg-fanout)")
	flag.Parse()
	if *workload == "tcp-echo" {
		tcpEchoServer()
		return
	}
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
	case "skynet", "skynet-chan":
		result = skynet(*count)
	case "memory":
		result, pageTables = memory(int(*count))
	case "pingpong":
		result = pingpong(*count, *param)
	case "chan":
		result = chanItems(*count, *param)
	case "select":
		result = selectMessages(*count, *param)
	case "sleep":
		result = sleepTasks(int(*count))
	case "mutex":
		result = mutexLocks(*count, int64(*param))
	case "rwmutex":
		result = rwmutexOps(*count, int64(*param))
	case "wg-fanout":
		result = wgFanout(*count, int64(*param))
	case "context":
		result = contextCancel(*count)
	default:
		fail("unknown -workload %q (expected spawn, yield, skynet, skynet-chan, "+
			"memory, pingpong, chan, select, sleep, mutex, rwmutex, wg-fanout "+
			"or context)", *workload)
	}
	fmt.Printf("result %.6f\n", result)
	if pageTables >= 0 {
		fmt.Printf("page_tables %.6f\n", pageTables)
	}
}

// kbench peer: franz-go. kbench builds it with `go build` and runs it once per measured run.
// Protocol (see benches/src/bin/kbench/spec.rs): `--name value` arguments, `kbench-progress N`
// lines on stderr, one JSON result line on stdout.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

var (
	args         = map[string]string{}
	origin       = time.Now()
	lastProgress = time.Now()
)

func arg(name string) string {
	v, ok := args[name]
	if !ok {
		fail(fmt.Errorf("missing --%s", name))
	}
	return v
}

func argInt(name string) int64 {
	v, err := strconv.ParseInt(arg(name), 10, 64)
	if err != nil {
		fail(fmt.Errorf("--%s: %v", name, err))
	}
	return v
}

func argBool(name string) bool {
	v, err := strconv.ParseBool(arg(name))
	if err != nil {
		fail(fmt.Errorf("--%s: %v", name, err))
	}
	return v
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "franz-go peer:", err)
	os.Exit(1)
}

func progress(done int64) {
	if time.Since(lastProgress) >= 200*time.Millisecond {
		lastProgress = time.Now()
		fmt.Fprintf(os.Stderr, "kbench-progress %d\n", done)
	}
}

func pool(size int) [][]byte {
	rnd := rand.New(rand.NewSource(0x6b62656e6368))
	n := (64 << 20) / size
	if n > 1024 {
		n = 1024
	}
	if n < 1 {
		n = 1
	}
	p := make([][]byte, n)
	for i := range p {
		p[i] = make([]byte, size)
		rnd.Read(p[i])
	}
	return p
}

type percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// pct computes percentiles in ms of latencies in µs.
func pct(us []int64) *percentiles {
	n := len(us)
	if n == 0 {
		return nil
	}
	sort.Slice(us, func(i, j int) bool { return us[i] < us[j] })
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(n))) - 1
		if i < 0 {
			i = 0
		}
		if i > n-1 {
			i = n - 1
		}
		return float64(us[i]) / 1000
	}
	return &percentiles{at(0.50), at(0.90), at(0.99), at(0.999), float64(us[n-1]) / 1000}
}

type result struct {
	Client    string            `json:"client"`
	Mode      string            `json:"mode"`
	Records   int64             `json:"records"`
	Bytes     int64             `json:"bytes"`
	ElapsedS  float64           `json:"elapsed_s"`
	LatencyMs *percentiles      `json:"latency_ms"`
	Settings  map[string]string `json:"settings"`
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/twmb/franz-go" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func producerOpts(settings map[string]string) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(arg("bootstrap")), kgo.ClientID("kbench-franz-go")}
	switch arg("acks") {
	case "all", "-1":
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case "1":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()))
	case "0":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()))
	}
	settings["acks"] = arg("acks")
	if !argBool("idempotence") {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	settings["idempotent"] = arg("idempotence")
	linger := time.Duration(argInt("linger-ms")) * time.Millisecond
	opts = append(opts, kgo.ProducerLinger(linger))
	settings["linger"] = linger.String()
	opts = append(opts, kgo.ProducerBatchMaxBytes(int32(argInt("batch-size"))))
	settings["producer_batch_max_bytes"] = arg("batch-size")
	var codec kgo.CompressionCodec
	switch arg("compression") {
	case "none":
		codec = kgo.NoCompression()
	case "gzip":
		codec = kgo.GzipCompression()
	case "snappy":
		codec = kgo.SnappyCompression()
	case "lz4":
		codec = kgo.Lz4Compression()
	case "zstd":
		codec = kgo.ZstdCompression()
	default:
		fail(fmt.Errorf("unknown compression %q", arg("compression")))
	}
	opts = append(opts, kgo.ProducerBatchCompression(codec))
	settings["compression"] = arg("compression")
	// Java's buffer.memory default (32 MiB) as the bound on buffered bytes.
	opts = append(opts, kgo.MaxBufferedBytes(32<<20), kgo.MaxBufferedRecords(1<<20))
	settings["max_buffered_bytes"] = strconv.Itoa(32 << 20)
	return opts
}

func consumeOpts(topic string, partitions int32) []kgo.Opt {
	offs := map[int32]kgo.Offset{}
	for p := int32(0); p < partitions; p++ {
		offs[p] = kgo.NewOffset().AtStart()
	}
	return []kgo.Opt{kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs})}
}

// groupOpts subscribes to topic in a fresh consumer group (no committed offsets), from the
// start, without commits.
func groupOpts(topic string, settings map[string]string) []kgo.Opt {
	group := fmt.Sprintf("kbench-franz-go-%d-%d", os.Getpid(), time.Now().UnixNano())
	settings["group"] = "true"
	settings["consume_reset_offset"] = "start"
	settings["auto_commit"] = "false"
	settings["balancers"] = "cooperative-sticky"
	settings["group_protocol"] = "classic"
	return []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
	}
}

// sendAll produces every record on the schedule; returns ack latencies in µs.
func sendAll(cl *kgo.Client, stamp, showProgress bool) ([]int64, error) {
	topic := arg("topic")
	records := argInt("records")
	size := int(argInt("size"))
	keys := argBool("keys")
	rate := argInt("rate")
	p := pool(size)
	lat := make([]int64, records)
	var acked atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	ctx := context.Background()
	start := time.Now()
	for i := int64(0); i < records; i++ {
		if e := firstErr.Load(); e != nil {
			return nil, e.(error)
		}
		var intended time.Time
		if rate > 0 {
			intended = start.Add(time.Duration(i * int64(time.Second) / rate))
			if d := time.Until(intended); d > 0 {
				time.Sleep(d)
			}
		} else {
			intended = time.Now()
		}
		value := p[i%int64(len(p))]
		if stamp {
			v := make([]byte, len(value))
			copy(v, value)
			binary.BigEndian.PutUint64(v, uint64(intended.Sub(origin).Microseconds()))
			value = v
		}
		rec := &kgo.Record{Topic: topic, Value: value}
		if keys {
			rec.Key = []byte("k" + strconv.FormatInt(i%10000, 10))
		}
		idx := i
		wg.Add(1)
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			lat[idx] = time.Since(intended).Microseconds()
			acked.Add(1)
		})
		if showProgress {
			progress(i + 1)
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return nil, err
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return nil, e.(error)
	}
	if acked.Load() != records {
		return nil, fmt.Errorf("%d of %d acknowledged", acked.Load(), records)
	}
	return lat, nil
}

func main() {
	a := os.Args[1:]
	for i := 0; i+1 < len(a); i += 2 {
		args[strings.TrimPrefix(a[i], "--")] = a[i+1]
	}
	mode := arg("mode")
	if mode == "txn" {
		txnMain() // the copier of `kbench txn` (txn.go); its own arguments
		return
	}
	topic := arg("topic")
	records := argInt("records")
	size := argInt("size")
	partitions := int32(argInt("partitions"))
	timeout := time.Duration(argInt("timeout-s")) * time.Second
	settings := map[string]string{}
	res := result{Client: "franz-go " + version(), Mode: mode, Settings: settings}

	switch mode {
	case "produce":
		cl, err := kgo.NewClient(producerOpts(settings)...)
		if err != nil {
			fail(err)
		}
		start := time.Now()
		lat, err := sendAll(cl, false, true)
		if err != nil {
			fail(err)
		}
		res.ElapsedS = time.Since(start).Seconds()
		res.Records, res.Bytes, res.LatencyMs = records, records*size, pct(lat)
		cl.Close()
	case "consume":
		group := argBool("group")
		opts := []kgo.Opt{kgo.SeedBrokers(arg("bootstrap")), kgo.ClientID("kbench-franz-go")}
		if group {
			opts = append(opts, groupOpts(topic, settings)...)
		} else {
			settings["group"] = "false"
			opts = append(opts, consumeOpts(topic, partitions)...)
		}
		// With a group the client joins as soon as it exists, so the clock starts before
		// NewClient: the join is measured, as for the other clients' subscribe.
		groupStart := time.Now()
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			fail(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		start := time.Now()
		if group {
			start = groupStart
		}
		var n, bytes int64
		for n < records {
			f := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				fail(fmt.Errorf("read %d of %d records before the timeout", n, records))
			}
			if errs := f.Errors(); len(errs) > 0 {
				fail(fmt.Errorf("fetch: %v", errs[0].Err))
			}
			f.EachRecord(func(r *kgo.Record) {
				n++
				bytes += int64(len(r.Value))
			})
			progress(n)
		}
		cancel()
		res.ElapsedS = time.Since(start).Seconds()
		res.Records, res.Bytes = n, bytes
		cl.Close()
	case "e2e":
		consumer, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(arg("bootstrap")), kgo.ClientID("kbench-franz-go")},
			consumeOpts(topic, partitions)...)...)
		if err != nil {
			fail(err)
		}
		producer, err := kgo.NewClient(producerOpts(settings)...)
		if err != nil {
			fail(err)
		}
		lat := make([]int64, 0, records)
		var n, bytes int64
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			for n < records {
				f := consumer.PollFetches(ctx)
				if ctx.Err() != nil {
					done <- fmt.Errorf("consumed %d of %d records before the timeout", n, records)
					return
				}
				if errs := f.Errors(); len(errs) > 0 {
					done <- fmt.Errorf("fetch: %v", errs[0].Err)
					return
				}
				var bad error
				f.EachRecord(func(r *kgo.Record) {
					if len(r.Value) < 8 {
						bad = errors.New("record without a timestamp")
						return
					}
					now := time.Since(origin).Microseconds()
					stamp := int64(binary.BigEndian.Uint64(r.Value))
					d := now - stamp
					if d < 0 {
						d = 0
					}
					lat = append(lat, d)
					n++
					bytes += int64(len(r.Value))
				})
				if bad != nil {
					done <- bad
					return
				}
				progress(n)
			}
			done <- nil
		}()
		if _, err := sendAll(producer, true, false); err != nil {
			fail(err)
		}
		if err := <-done; err != nil {
			fail(err)
		}
		res.ElapsedS = time.Since(start).Seconds()
		res.Records, res.Bytes, res.LatencyMs = n, bytes, pct(lat)
		producer.Close()
		consumer.Close()
	default:
		fail(fmt.Errorf("unknown mode %q", mode))
	}
	out, err := json.Marshal(res)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

// kbench txn copier for franz-go: the consume-transform-produce loop, in transactions
// (GroupTransactSession) or at least once (flush, then commit the offsets). Protocol: see the
// top of benches/src/bin/kbench/txn.rs (`--mode txn ...`, `kbench-ready` on stderr once every
// input partition is assigned, one JSON line on stdout).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type txnResult struct {
	Client   string            `json:"client"`
	Records  int64             `json:"records"`
	Commits  int64             `json:"commits"`
	Aborts   int64             `json:"aborts"`
	ElapsedS float64           `json:"elapsed_s"`
	CommitMs *percentiles      `json:"commit_ms"`
	Settings map[string]string `json:"settings"`
}

// assignedSet tracks the partitions the group currently gives this member.
type assignedSet struct {
	mu  sync.Mutex
	tps map[string]map[int32]bool
}

func (s *assignedSet) change(m map[string][]int32, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, ps := range m {
		if s.tps[t] == nil {
			s.tps[t] = map[int32]bool{}
		}
		for _, p := range ps {
			if add {
				s.tps[t][p] = true
			} else {
				delete(s.tps[t], p)
			}
		}
	}
}

func (s *assignedSet) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ps := range s.tps {
		n += len(ps)
	}
	return n
}

// waitAssigned waits (up to 60 s) for every input partition, then prints the ready line.
func waitAssigned(s *assignedSet, partitions int) error {
	until := time.Now().Add(60 * time.Second)
	for s.count() < partitions {
		if time.Now().After(until) {
			return fmt.Errorf("the copier was not assigned every partition within 60 s (%d of %d)", s.count(), partitions)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "kbench-ready")
	return nil
}

// pollFor polls for up to wait; a timeout is not an error.
func pollFor(poll func(context.Context) kgo.Fetches, wait time.Duration) ([]*kgo.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	f := poll(ctx)
	for _, e := range f.Errors() {
		if errors.Is(e.Err, context.DeadlineExceeded) || errors.Is(e.Err, context.Canceled) {
			continue
		}
		return nil, fmt.Errorf("fetch %s/%d: %w", e.Topic, e.Partition, e.Err)
	}
	return f.Records(), nil
}

func txnMain() {
	input, output, group := arg("input"), arg("output"), arg("group")
	interval := time.Duration(argInt("interval-ms")) * time.Millisecond
	exactlyOnce := argBool("exactly-once")
	want := argInt("records")
	partitions := int(argInt("partitions"))
	deadline := time.Now().Add(time.Duration(argInt("timeout-s")) * time.Second)
	if interval <= 0 || want <= 0 || partitions < 1 {
		fail(errors.New("--interval-ms, --records and --partitions must be positive"))
	}

	assigned := &assignedSet{tps: map[string]map[int32]bool{}}
	opts := []kgo.Opt{
		kgo.SeedBrokers(arg("bootstrap")),
		kgo.ClientID("kbench-franz-go"),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(input),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// franz-go's floor is 10 ms (the others use 5 ms).
		kgo.FetchMaxWait(10 * time.Millisecond),
		kgo.HeartbeatInterval(500 * time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(time.Millisecond),
		kgo.DefaultProduceTopic(output),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			assigned.change(m, true)
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			assigned.change(m, false)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			assigned.change(m, false)
		}),
	}
	settings := map[string]string{
		"acks":                 "all",
		"linger":               "1ms",
		"isolation_level":      "read_committed",
		"consume_reset_offset": "start",
		"auto_commit":          "false",
		"fetch_max_wait":       "10ms",
		"heartbeat_interval":   "500ms",
	}

	var (
		commits, aborts, done, pending int64
		commitUs                       []int64
		first, started                 time.Time
		lastCommit                     = time.Now()
	)
	waitFor := func() time.Duration {
		w := interval
		if !started.IsZero() {
			w = interval - time.Since(started)
		}
		if w < 100*time.Microsecond {
			w = 100 * time.Microsecond
		}
		return w
	}
	mark := func(n int) {
		if n > 0 {
			now := time.Now()
			if started.IsZero() {
				started = now
			}
			if first.IsZero() {
				first = now
			}
		}
	}
	copyOf := func(r *kgo.Record) *kgo.Record {
		return &kgo.Record{Topic: output, Partition: r.Partition, Value: r.Value}
	}
	ctx := context.Background()

	if exactlyOnce {
		settings["transactional"] = "GroupTransactSession"
		settings["require_stable_fetch_offsets"] = "true"
		sess, err := kgo.NewGroupTransactSession(append(opts,
			kgo.TransactionalID(arg("transactional-id")),
			kgo.RequireStableFetchOffsets(),
		)...)
		if err != nil {
			fail(err)
		}
		if err := waitAssigned(assigned, partitions); err != nil {
			fail(err)
		}
		inTxn := false
		var produceErr error
		var errMu sync.Mutex
		for done < want {
			if time.Now().After(deadline) {
				fail(fmt.Errorf("copied %d of %d records before the timeout", done, want))
			}
			recs, err := pollFor(sess.PollFetches, waitFor())
			if err != nil {
				fail(err)
			}
			mark(len(recs))
			for _, r := range recs {
				if !inTxn {
					if err := sess.Begin(); err != nil {
						fail(fmt.Errorf("begin: %w", err))
					}
					inTxn = true
				}
				sess.Produce(ctx, copyOf(r), func(_ *kgo.Record, err error) {
					if err != nil {
						errMu.Lock()
						if produceErr == nil {
							produceErr = err
						}
						errMu.Unlock()
					}
				})
			}
			pending += int64(len(recs))
			if !started.IsZero() && time.Since(started) >= interval {
				t := time.Now()
				committed, err := sess.End(ctx, kgo.TryCommit)
				if err != nil {
					fail(fmt.Errorf("end transaction: %w", err))
				}
				errMu.Lock()
				perr := produceErr
				produceErr = nil
				errMu.Unlock()
				if committed && perr == nil {
					commits++
					done += pending
				} else {
					aborts++
				}
				lastCommit = time.Now()
				commitUs = append(commitUs, time.Since(t).Microseconds())
				pending = 0
				started = time.Time{}
				inTxn = false
			}
		}
		sess.Close()
	} else {
		settings["transactional"] = "no"
		settings["idempotent"] = "true"
		cl, err := kgo.NewClient(append(opts, kgo.DisableAutoCommit())...)
		if err != nil {
			fail(err)
		}
		if err := waitAssigned(assigned, partitions); err != nil {
			fail(err)
		}
		var batch []*kgo.Record
		var produceErr error
		var errMu sync.Mutex
		for done < want {
			if time.Now().After(deadline) {
				fail(fmt.Errorf("copied %d of %d records before the timeout", done, want))
			}
			recs, err := pollFor(cl.PollFetches, waitFor())
			if err != nil {
				fail(err)
			}
			mark(len(recs))
			for _, r := range recs {
				cl.Produce(ctx, copyOf(r), func(_ *kgo.Record, err error) {
					if err != nil {
						errMu.Lock()
						if produceErr == nil {
							produceErr = err
						}
						errMu.Unlock()
					}
				})
			}
			batch = append(batch, recs...)
			if !started.IsZero() && time.Since(started) >= interval {
				t := time.Now()
				// Flush waits for every buffered record; a failed one fails the copier.
				if err := cl.Flush(ctx); err != nil {
					fail(fmt.Errorf("flush: %w", err))
				}
				errMu.Lock()
				perr := produceErr
				errMu.Unlock()
				if perr != nil {
					fail(fmt.Errorf("copy delivery: %w", perr))
				}
				if err := cl.CommitRecords(ctx, batch...); err != nil {
					fail(fmt.Errorf("commit offsets: %w", err))
				}
				done += int64(len(batch))
				batch = batch[:0]
				lastCommit = time.Now()
				commitUs = append(commitUs, time.Since(t).Microseconds())
				commits++
				started = time.Time{}
			}
		}
		cl.Close()
	}

	elapsed := 0.0
	if !first.IsZero() {
		elapsed = lastCommit.Sub(first).Seconds()
	}
	out, err := json.Marshal(txnResult{
		Client:   "franz-go " + version(),
		Records:  done,
		Commits:  commits,
		Aborts:   aborts,
		ElapsedS: elapsed,
		CommitMs: pct(commitUs),
		Settings: settings,
	})
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

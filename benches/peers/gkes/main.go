// The bank processor of BANK.md ("Processor contract", "The processor's command line") written
// with GKES (github.com/aws/go-kafka-event-source/streams v1.0.6), as a benchmark peer. It uses
// GKES's own API the way its documentation and examples do: an EventSource with its default EOS
// producer pool, RegisterEventType per `__grt__` value, a changelog-backed StateStore, Forward for
// the balance update and RecordChange for the balance.
//
//	gkes-bank run --bootstrap B --input T_IN --output T_OUT --group G [--changelog NAME]
//	    [--instance-id ID] [--pool-size N] [--linger-ms L] [--at-least-once]
//
// Effective settings go to stderr at start, then one `active=<n>` line each time the set of
// active (restored and processing) partitions changes. SIGINT or SIGTERM stops it: GKES leaves
// the group (its incremental rebalancer's graceful leave), and the process exits 0.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/go-kafka-event-source/streams"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The GKES version this peer is built against (go.mod pins it).
const gkesModule = "github.com/aws/go-kafka-event-source/streams"

// How long a graceful stop may take before the peer closes its client at once.
const stopTimeout = 30 * time.Second

// BANK.md sizes.
const (
	inputLen     = 24
	updateLen    = 34
	balanceLen   = 8
	typeDeposit  = "deposit"
	typeWithdraw = "withdraw"
)

type runArgs struct {
	bootstrap   string
	input       string
	output      string
	group       string
	changelog   string
	instanceID  string
	poolSize    int
	lingerMs    int
	atLeastOnce bool
}

func usage(err string) {
	fmt.Fprintf(os.Stderr, "gkes-bank: %s\nusage: gkes-bank run --bootstrap B --input T_IN "+
		"--output T_OUT --group G [--changelog NAME] [--instance-id ID] [--pool-size N] "+
		"[--linger-ms L] [--at-least-once]\n", err)
	os.Exit(2)
}

func parseArgs(argv []string) runArgs {
	if len(argv) < 1 || argv[0] != "run" {
		usage("the only subcommand is run")
	}
	var a runArgs
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.StringVar(&a.bootstrap, "bootstrap", "", "bootstrap servers HOST:PORT[,HOST:PORT...]")
	fs.StringVar(&a.input, "input", "", "input topic")
	fs.StringVar(&a.output, "output", "", "output topic")
	fs.StringVar(&a.group, "group", "", "consumer group")
	fs.StringVar(&a.changelog, "changelog", "", "changelog topic (default {group}-{input}-changelog)")
	fs.StringVar(&a.instanceID, "instance-id", "", "static group.instance.id of the consumer")
	fs.IntVar(&a.poolSize, "pool-size", streams.DefaultPoolSize, "transactional producers in GKES's pool")
	fs.IntVar(&a.lingerMs, "linger-ms", int(streams.DefaultBatchDelay/time.Millisecond), "GKES BatchDelay in ms (>= 1)")
	fs.BoolVar(&a.atLeastOnce, "at-least-once", false, "not supported: GKES has no at-least-once mode")
	if err := fs.Parse(argv[1:]); err != nil {
		usage(err.Error())
	}
	if fs.NArg() > 0 {
		usage(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	for name, v := range map[string]string{"--bootstrap": a.bootstrap, "--input": a.input,
		"--output": a.output, "--group": a.group} {
		if v == "" {
			usage("missing " + name)
		}
	}
	if a.input == a.output {
		usage(fmt.Sprintf("input and output are both %q", a.input))
	}
	if a.poolSize < 1 {
		usage(fmt.Sprintf("--pool-size must be at least 1, not %d", a.poolSize))
	}
	if a.lingerMs < 1 {
		usage(fmt.Sprintf("--linger-ms must be at least 1 (GKES's BatchDelay minimum), not %d", a.lingerMs))
	}
	if a.atLeastOnce {
		usage("--at-least-once: GKES has no at-least-once mode (every EventSource is transactional)")
	}
	if a.changelog == "" {
		a.changelog = a.group + "-" + a.input + "-changelog"
	}
	return a
}

// balances is the StateStore: one per input partition, restored by GKES from the changelog.
// GKES leaves store implementations to the application (its stores.SimpleStore restores nothing,
// and its codecs give a JSON or native-endian value, not BANK.md's 8 bytes).
type balances struct {
	m          map[string]int64
	restored   *atomic.Int64
	badRecords *atomic.Int64
}

// ReceiveChange applies one changelog record during restore: 8-byte big-endian balance, or a
// tombstone.
func (b balances) ReceiveChange(r streams.IncomingRecord) error {
	b.restored.Add(1)
	v := r.Value()
	switch len(v) {
	case 0:
		delete(b.m, string(r.Key()))
	case balanceLen:
		b.m[string(r.Key())] = int64(binary.BigEndian.Uint64(v))
	default:
		b.badRecords.Add(1)
		return fmt.Errorf("changelog value of %d bytes at %d@%d", len(v), r.TopicPartition().Partition, r.Offset())
	}
	return nil
}

func (b balances) Revoked() {
	for k := range b.m {
		delete(b.m, k)
	}
}

// event is a decoded input event (24 bytes) and its key.
type event struct {
	key        []byte
	seq        uint64
	intendedUs int64
	amount     int64
	err        error
}

// decode never fails towards GKES: an undecodable value is carried to the handler, which fails
// the event with ec.Fail (BANK.md's default deserialization policy is Fail; GKES's own
// deserialization path would answer Incomplete and wedge the transaction instead).
func decode(r streams.IncomingRecord) (event, error) {
	v := r.Value()
	if len(v) != inputLen {
		return event{err: fmt.Errorf("undecodable input event at %d@%d: %d bytes, not %d",
			r.TopicPartition().Partition, r.Offset(), len(v), inputLen)}, nil
	}
	return event{
		key:        r.Key(),
		seq:        binary.BigEndian.Uint64(v[0:8]),
		intendedUs: int64(binary.BigEndian.Uint64(v[8:16])),
		amount:     int64(binary.BigEndian.Uint64(v[16:24])),
	}, nil
}

type counters struct {
	events, applied, rejected, unknown atomic.Int64
}

// handler is BANK.md's processor contract for one event type.
func handler(withdraw bool, output string, c *counters) streams.EventProcessor[balances, event] {
	return func(ec *streams.EventContext[balances], ev event) streams.ExecutionState {
		if ev.err != nil {
			return ec.Fail(ev.err)
		}
		if len(ev.key) == 0 {
			return ec.Fail(fmt.Errorf("an input event without a key at %d@%d", ec.TopicPartition().Partition, ec.Offset()))
		}
		store := ec.Store()
		account := string(ev.key)
		balance := store.m[account] // missing = 0
		after, status := balance, byte(0)
		if !withdraw {
			after = balance + ev.amount
		} else if balance >= ev.amount {
			after = balance - ev.amount
		} else {
			status = 1
		}
		if status == 0 {
			store.m[account] = after
			var v [balanceLen]byte
			binary.BigEndian.PutUint64(v[:], uint64(after))
			ec.RecordChange(streams.NewChangeLogEntry().WithKey(ev.key).WithValue(v[:]))
			c.applied.Add(1)
		} else {
			c.rejected.Add(1)
		}
		var u [updateLen]byte
		binary.BigEndian.PutUint64(u[0:8], ev.seq)
		binary.BigEndian.PutUint64(u[8:16], uint64(ev.intendedUs))
		binary.BigEndian.PutUint64(u[16:24], uint64(ev.amount))
		binary.BigEndian.PutUint64(u[24:32], uint64(after))
		if withdraw {
			u[32] = 1
		}
		u[33] = status
		ec.Forward(streams.NewRecord().WithTopic(output).WithKey(ev.key).WithValue(u[:]))
		c.events.Add(1)
		return streams.Complete
	}
}

// stderrLogger is GKES's Logger on stderr (its SimpleLogger writes to stdout).
type stderrLogger streams.LogLevel

func (l stderrLogger) logf(level streams.LogLevel, tag, msg string, args ...any) {
	if streams.LogLevel(l) != streams.LogLevelNone && level >= streams.LogLevel(l) {
		fmt.Fprintf(os.Stderr, "%s [%s] gkes: %s\n", time.Now().UTC().Format(time.RFC3339Nano), tag, fmt.Sprintf(msg, args...))
	}
}
func (l stderrLogger) Tracef(m string, a ...any) { l.logf(streams.LogLevelTrace, "TRACE", m, a...) }
func (l stderrLogger) Debugf(m string, a ...any) { l.logf(streams.LogLevelDebug, "DEBUG", m, a...) }
func (l stderrLogger) Infof(m string, a ...any)  { l.logf(streams.LogLevelInfo, "INFO", m, a...) }
func (l stderrLogger) Warnf(m string, a ...any)  { l.logf(streams.LogLevelWarn, "WARN", m, a...) }
func (l stderrLogger) Errorf(m string, a ...any) { l.logf(streams.LogLevelError, "ERROR", m, a...) }

func logLevel() streams.LogLevel {
	switch strings.ToLower(os.Getenv("GKES_LOG")) {
	case "trace":
		return streams.LogLevelTrace
	case "debug":
		return streams.LogLevelDebug
	case "info":
		return streams.LogLevelInfo
	case "error":
		return streams.LogLevelError
	case "none", "off":
		return streams.LogLevelNone
	}
	return streams.LogLevelWarn
}

// checkTopics does what BANK.md asks before GKES's bootstrap runs: the input must exist (the
// driver creates it; GKES would create a missing one with 0 partitions), and an existing
// changelog must have the input's partition count (GKES checks it too, but its bootstrap panics
// on that error instead of returning it).
func checkTopics(a runArgs) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(a.bootstrap, ",")...))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics, err := kadm.NewClient(cl).ListTopics(ctx, a.input, a.changelog)
	if err != nil {
		return fmt.Errorf("listing topics: %w", err)
	}
	in, ok := topics[a.input]
	if !ok || in.Err != nil {
		return fmt.Errorf("the input topic %s does not exist (the driver creates it before any processor starts)", a.input)
	}
	if cl, ok := topics[a.changelog]; ok && cl.Err == nil {
		if got, want := len(cl.Partitions), len(in.Partitions); got != want {
			return fmt.Errorf("the changelog %s has %d partitions but the input %s has %d", a.changelog, got, a.input, want)
		}
	}
	return nil
}

func gkesVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == gkesModule {
				return d.Version
			}
		}
	}
	return "unknown"
}

// active tracks the partitions GKES reports activated (restored, processing) and prints
// `active=<n>` whenever their count changes.
type active struct {
	mu   sync.Mutex
	set  map[int32]bool
	last int
}

func (s *active) update(p int32, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.set[p] = true
	} else {
		delete(s.set, p)
	}
	if n := len(s.set); n != s.last {
		s.last = n
		fmt.Fprintf(os.Stderr, "active=%d\n", n)
	}
}

func main() {
	a := parseArgs(os.Args[1:])
	streams.InitLogger(stderrLogger(logLevel()), streams.LogLevelError)
	if err := checkTopics(a); err != nil {
		fmt.Fprintln(os.Stderr, "gkes-bank:", err)
		os.Exit(1)
	}

	act := &active{set: map[int32]bool{}, last: -1}
	var c counters
	restored, badRecords := &atomic.Int64{}, &atomic.Int64{}
	eos := streams.DefaultEosConfig
	eos.PoolSize = a.poolSize
	eos.BatchDelay = time.Duration(a.lingerMs) * time.Millisecond
	cfg := streams.EventSourceConfig{
		GroupId:         a.group,
		Topic:           a.input,
		StateStoreTopic: a.changelog,
		// The input exists; GKES takes its partition count and replication factor from it.
		// min.insync.replicas of the topics GKES creates: 1 on one broker, 2 on three.
		MinInSync:     2,
		SourceCluster: streams.SimpleCluster(strings.Split(a.bootstrap, ",")),
		EosConfig:     eos,
		OnPartitionActivated: func(_ *streams.Source, p int32) {
			act.update(p, true)
		},
		OnPartitionWillRevoke: func(_ *streams.Source, p int32) {
			act.update(p, false)
		},
		OnPartitionRevoked: func(_ *streams.Source, p int32) {
			act.update(p, false)
		},
		// GKES reads DeserializationErrorHandler only when TxnErrorHandler is set too; both are
		// its defaults here (no decode error reaches it: see decode).
		TxnErrorHandler:             streams.DefaultTxnErrorHandler,
		DeserializationErrorHandler: streams.DefaultDeserializationErrorHandler,
	}
	var opts []kgo.Opt
	if a.instanceID != "" {
		opts = append(opts, kgo.InstanceID(a.instanceID))
	}
	newStore := func(tp streams.TopicPartition) balances {
		return balances{m: make(map[string]int64, 4096), restored: restored, badRecords: badRecords}
	}
	// Records with another `__grt__` value, or none: skipped (BANK.md's default policy).
	skip := func(ec *streams.EventContext[balances], r streams.IncomingRecord) streams.ExecutionState {
		c.unknown.Add(1)
		return streams.Complete
	}
	es, err := streams.NewEventSource(cfg, newStore, skip, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gkes-bank: starting the EventSource:", err)
		os.Exit(1)
	}
	streams.RegisterEventType(es, decode, handler(false, a.output, &c), typeDeposit)
	streams.RegisterEventType(es, decode, handler(true, a.output, &c), typeWithdraw)

	src := es.Source()
	eff := src.Config().EosConfig
	instance := a.instanceID
	if instance == "" {
		instance = "(none: dynamic membership)"
	}
	fmt.Fprintf(os.Stderr, "gkes-bank run: gkes=%s go=%s input=%s partitions=%d output=%s group=%s "+
		"changelog=%s commit_log=%s instance=%s guarantee=exactly_once pool_size=%d "+
		"pending_txn_count=%d target_batch_size=%d max_batch_size=%d batch_delay_ms=%d "+
		"session_timeout_ms=6000 balancer=%s transactional_ids=random\n",
		gkesVersion(), runtime.Version(), a.input, src.NumPartitions(), a.output, a.group,
		src.StateStoreTopicName(), src.CommitLogTopicNameForGroupId(), instance, eos.PoolSize,
		eff.PendingTxnCount, eff.TargetBatchSize, eff.MaxBatchSize, eos.BatchDelay.Milliseconds(),
		strings.Join(strategyNames(src.BalanceStrategies()), ","))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	es.ConsumeEvents()

	code := 0
	select {
	case s := <-sigs:
		signal.Reset(syscall.SIGINT, syscall.SIGTERM)
		fmt.Fprintf(os.Stderr, "gkes-bank run: %v: leaving the group\n", s)
		start := time.Now()
		es.Stop()
		select {
		case <-es.Done():
			fmt.Fprintf(os.Stderr, "gkes-bank run: left in %d ms\n", time.Since(start).Milliseconds())
		case <-time.After(stopTimeout):
			fmt.Fprintf(os.Stderr, "gkes-bank run: the graceful leave took over %v; closing at once\n", stopTimeout)
			es.StopNow()
		}
	case <-es.Done():
		// GKES stopped by itself: a failed event or transaction (Unhealthy).
		code = 1
	}
	if es.State() == streams.Unhealthy {
		code = 1
	}
	fmt.Fprintf(os.Stderr, "gkes-bank run: stopped: healthy=%v events=%d applied=%d rejected=%d "+
		"skipped_unknown=%d restored_records=%d bad_changelog_records=%d\n",
		es.State() == streams.Healthy, c.events.Load(), c.applied.Load(), c.rejected.Load(),
		c.unknown.Load(), restored.Load(), badRecords.Load())
	os.Exit(code)
}

func strategyNames(s []streams.BalanceStrategy) []string {
	names := make([]string, 0, len(s))
	for _, b := range s {
		switch b {
		case streams.IncrementalBalanceStrategy:
			names = append(names, "incremental")
		case streams.CooperativeStickyBalanceStrategy:
			names = append(names, "cooperative-sticky")
		case streams.RoundRobinBalanceStrategy:
			names = append(names, "round-robin")
		case streams.RangeBalanceStrategy:
			names = append(names, "range")
		default:
			names = append(names, fmt.Sprint(int(b)))
		}
	}
	sort.Strings(names)
	return names
}

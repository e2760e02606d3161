// kbench peer: the processor of BANK.md ("Processor contract", "The processor's command line")
// on Kafka Streams: the Processor API, one persistent (RocksDB) key-value store of balances,
// processing.guarantee=exactly_once_v2, read_committed.
//
//   java -jar kbench-kafka-streams.jar run --bootstrap B --input T_IN --output T_OUT --group G
//       [--changelog NAME] [--instance-id ID] [--pool-size N] [--linger-ms L]
//       [--commit-interval-ms C] [--state-dir DIR] [--at-least-once]
//
// Mapping of BANK.md's flags (README.md has the table):
// - --group is application.id (so also the consumer group and the transactional id prefix).
// - The store is named after the input, so Kafka Streams' changelog
//   `{application.id}-{store}-changelog` is `{group}-{input}-changelog`, the same default as ours.
//   --changelog NAME must have the form `{group}-{store}-changelog` and names the store.
// - --commit-interval-ms C sets commit.interval.ms; else --linger-ms L does (the time a
//   transaction stays open for more events is Kafka Streams' commit interval); with neither it
//   stays at Kafka Streams' default (100 ms under EOS).
// - --pool-size N is num.stream.threads (one transactional producer per thread under EOS v2);
//   default 1, Kafka Streams' default.
// - --instance-id is group.instance.id (static membership) and names the state directory.
// - --at-least-once is processing.guarantee=at_least_once (the consumer stays read_committed).
//
// Effective settings go to stderr at start; then `active=<n>` each time the number of active
// input partitions that are restored and processing changes (n is counted when the instance is
// RUNNING, i.e. every thread finished restoring; 0 when it shuts down). SIGINT or SIGTERM: close
// (commit, leave the group) and exit 0. An instance that goes to ERROR exits 1.

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TaskMetadata;
import org.apache.kafka.streams.ThreadMetadata;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsException;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

import sun.misc.Signal;

public final class KStreamsBank {
    static final String TYPE_HEADER = "__grt__";
    static final int INPUT_LEN = 24;
    static final int UPDATE_LEN = 34;

    // Counters over all stream threads.
    static final AtomicLong EVENTS = new AtomicLong();
    static final AtomicLong APPLIED = new AtomicLong();
    static final AtomicLong REJECTED = new AtomicLong();
    static final AtomicLong SKIPPED = new AtomicLong();
    static final AtomicLong RESTORED = new AtomicLong();

    static final class Args {
        String bootstrap, input, output, group, changelog, instanceId, stateDir;
        Integer poolSize, lingerMs, commitIntervalMs;
        boolean atLeastOnce;
        String store;
    }

    static void usage(String err) {
        System.err.println("kstreams-bank: " + err);
        System.err.println("usage: kbench-kafka-streams run --bootstrap B --input T_IN --output T_OUT"
                + " --group G [--changelog NAME] [--instance-id ID] [--pool-size N] [--linger-ms L]"
                + " [--commit-interval-ms C] [--state-dir DIR] [--at-least-once]");
        System.exit(2);
    }

    static int positive(String flag, String v, int min) {
        try {
            int n = Integer.parseInt(v);
            if (n < min) usage(flag + " must be at least " + min + ", not " + n);
            return n;
        } catch (NumberFormatException e) {
            usage(flag + ": not a number: " + v);
            return 0;
        }
    }

    static Args parse(String[] argv) {
        if (argv.length < 1 || !argv[0].equals("run")) usage("the only subcommand is run");
        Args a = new Args();
        for (int i = 1; i < argv.length; i++) {
            String flag = argv[i];
            if (flag.equals("--at-least-once")) {
                a.atLeastOnce = true;
                continue;
            }
            String v = null;
            int eq = flag.indexOf('=');
            if (flag.startsWith("--") && eq > 0) {
                v = flag.substring(eq + 1);
                flag = flag.substring(0, eq);
            } else if (i + 1 < argv.length) {
                v = argv[++i];
            } else {
                usage("missing the value of " + flag);
            }
            switch (flag) {
                case "--bootstrap": a.bootstrap = v; break;
                case "--input": a.input = v; break;
                case "--output": a.output = v; break;
                case "--group": a.group = v; break;
                case "--changelog": a.changelog = v; break;
                case "--instance-id": a.instanceId = v; break;
                case "--state-dir": a.stateDir = v; break;
                case "--pool-size": a.poolSize = positive(flag, v, 1); break;
                case "--linger-ms": a.lingerMs = positive(flag, v, 0); break;
                case "--commit-interval-ms": a.commitIntervalMs = positive(flag, v, 0); break;
                default: usage("unknown flag " + flag);
            }
        }
        if (a.bootstrap == null) usage("missing --bootstrap");
        if (a.input == null) usage("missing --input");
        if (a.output == null) usage("missing --output");
        if (a.group == null) usage("missing --group");
        if (a.input.equals(a.output)) usage("input and output are both " + a.input);
        if (a.changelog == null) {
            a.store = a.input;
            a.changelog = a.group + "-" + a.store + "-changelog";
        } else {
            String prefix = a.group + "-", suffix = "-changelog";
            String c = a.changelog;
            if (!c.startsWith(prefix) || !c.endsWith(suffix)
                    || c.length() <= prefix.length() + suffix.length()) {
                usage("--changelog " + c + ": Kafka Streams names a store's changelog"
                        + " {application.id}-{store}-changelog, so it must be " + prefix
                        + "<store>" + suffix + " (the store gets the middle part)");
            }
            a.store = c.substring(prefix.length(), c.length() - suffix.length());
        }
        return a;
    }

    /** BANK.md's processor contract, one input record at a time. */
    static final class BankProcessor implements Processor<String, byte[], String, byte[]> {
        private final String storeName;
        private ProcessorContext<String, byte[]> context;
        private KeyValueStore<String, Long> store;

        BankProcessor(String storeName) {
            this.storeName = storeName;
        }

        @Override
        public void init(ProcessorContext<String, byte[]> context) {
            this.context = context;
            this.store = context.getStateStore(storeName);
        }

        @Override
        public void process(Record<String, byte[]> record) {
            Header h = record.headers().lastHeader(TYPE_HEADER);
            String type = h == null || h.value() == null
                    ? null : new String(h.value(), StandardCharsets.UTF_8);
            boolean withdraw;
            if ("deposit".equals(type)) {
                withdraw = false;
            } else if ("withdraw".equals(type)) {
                withdraw = true;
            } else {
                SKIPPED.incrementAndGet(); // BANK.md's default policy: skip, count
                return;
            }
            String where = context.recordMetadata()
                    .map(m -> m.partition() + "@" + m.offset()).orElse("?");
            byte[] v = record.value();
            if (v == null || v.length != INPUT_LEN) {
                // The deserialization policy's default is Fail.
                throw new StreamsException("undecodable input event at " + where + ": "
                        + (v == null ? "no value" : v.length + " bytes, not " + INPUT_LEN));
            }
            if (record.key() == null) {
                throw new StreamsException("an input event without a key at " + where);
            }
            ByteBuffer in = ByteBuffer.wrap(v); // big-endian
            long seq = in.getLong(0), intendedUs = in.getLong(8), amount = in.getLong(16);
            Long stored = store.get(record.key());
            long balance = stored == null ? 0L : stored;
            long after = balance;
            byte status = 0;
            if (!withdraw) {
                after = balance + amount;
            } else if (balance >= amount) {
                after = balance - amount;
            } else {
                status = 1;
            }
            if (status == 0) {
                store.put(record.key(), after); // logged to the changelog (8 bytes, big-endian)
                APPLIED.incrementAndGet();
            } else {
                REJECTED.incrementAndGet();
            }
            ByteBuffer out = ByteBuffer.allocate(UPDATE_LEN);
            out.putLong(seq).putLong(intendedUs).putLong(amount).putLong(after);
            out.put((byte) (withdraw ? 1 : 0)).put(status);
            context.forward(new Record<>(record.key(), out.array(), record.timestamp()));
            EVENTS.incrementAndGet();
        }
    }

    static Topology topology(Args a) {
        Topology t = new Topology();
        t.addSource("input", new StringDeserializer(), new ByteArrayDeserializer(), a.input);
        t.addProcessor("bank", () -> new BankProcessor(a.store), "input");
        t.addStateStore(
                Stores.keyValueStoreBuilder(
                                Stores.persistentKeyValueStore(a.store), Serdes.String(), Serdes.Long())
                        .withCachingDisabled() // every applied event reaches the changelog
                        .withLoggingEnabled(new HashMap<>()),
                "bank");
        t.addSink("output", a.output, new StringSerializer(), new ByteArraySerializer(), "bank");
        return t;
    }

    /** Checks the topics as BANK.md asks; returns the number of brokers. */
    static int checkTopics(Args a) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, a.bootstrap);
        try (Admin admin = Admin.create(p)) {
            int brokers = admin.describeCluster().nodes().get(30, TimeUnit.SECONDS).size();
            TopicDescription in = describe(admin, a.input);
            if (in == null) {
                throw new IllegalStateException("the input topic " + a.input
                        + " does not exist (the driver creates it before any processor starts)");
            }
            TopicDescription cl = describe(admin, a.changelog);
            if (cl != null && cl.partitions().size() != in.partitions().size()) {
                throw new IllegalStateException("the changelog " + a.changelog + " has "
                        + cl.partitions().size() + " partitions but the input " + a.input
                        + " has " + in.partitions().size());
            }
            return brokers;
        }
    }

    static TopicDescription describe(Admin admin, String topic) throws Exception {
        try {
            return admin.describeTopics(List.of(topic)).allTopicNames()
                    .get(30, TimeUnit.SECONDS).get(topic);
        } catch (java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof UnknownTopicOrPartitionException) return null;
            throw e;
        }
    }

    static void deleteTree(Path p) {
        if (!Files.exists(p)) return;
        try (Stream<Path> s = Files.walk(p)) {
            s.sorted(Comparator.reverseOrder()).map(Path::toFile).forEach(File::delete);
        } catch (IOException e) {
            System.err.println("kstreams-bank: cannot delete " + p + ": " + e);
        }
    }

    /** The version of the kafka-streams jar on the class path. */
    static String streamsVersion() {
        Properties v = new Properties();
        try (var in = KafkaStreams.class.getResourceAsStream("/kafka/kafka-streams-version.properties")) {
            if (in != null) v.load(in);
        } catch (IOException e) {
            return "unknown";
        }
        return v.getProperty("version", "unknown");
    }

    /** Active input partitions of this instance's threads. */
    static int activePartitions(KafkaStreams streams, String input) {
        Set<TopicPartition> set = new HashSet<>();
        for (ThreadMetadata t : streams.metadataForLocalThreads()) {
            for (TaskMetadata task : t.activeTasks()) {
                for (TopicPartition tp : task.topicPartitions()) {
                    if (tp.topic().equals(input)) set.add(tp);
                }
            }
        }
        return set.size();
    }

    public static void main(String[] argv) throws Exception {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel",
                System.getProperty("org.slf4j.simpleLogger.defaultLogLevel",
                        System.getenv().getOrDefault("KSTREAMS_LOG", "warn")));
        Args a = parse(argv);

        int brokers;
        try {
            brokers = checkTopics(a);
        } catch (Exception e) {
            System.err.println("kstreams-bank: " + e.getMessage());
            System.exit(1);
            return;
        }
        int rf = Math.max(1, Math.min(3, brokers));

        boolean tempStateDir = a.stateDir == null && a.instanceId == null;
        Path stateDir = a.stateDir != null
                ? Path.of(a.stateDir)
                : Path.of(System.getProperty("java.io.tmpdir"), "kbench-kafka-streams", a.group,
                        a.instanceId != null ? a.instanceId : "pid-" + ProcessHandle.current().pid());

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.group);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                a.atLeastOnce ? StreamsConfig.AT_LEAST_ONCE : StreamsConfig.EXACTLY_ONCE_V2);
        Integer interval = a.commitIntervalMs != null ? a.commitIntervalMs : a.lingerMs;
        if (interval != null) p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, interval);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, a.poolSize != null ? a.poolSize : 1);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, rf);
        p.put(StreamsConfig.topicPrefix("min.insync.replicas"), rf >= 3 ? 2 : 1);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.ISOLATION_LEVEL_CONFIG), "read_committed");
        if (a.instanceId != null) {
            p.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), a.instanceId);
        }
        StreamsConfig cfg = new StreamsConfig(p);

        Topology topology = topology(a);
        KafkaStreams streams = new KafkaStreams(topology, cfg);

        Map<String, Object> producer = cfg.getProducerConfigs("kbench");
        Map<String, Object> consumer = cfg.getMainConsumerConfigs(a.group, "kbench", 0);
        System.err.println("kstreams-bank run: kafka-streams=" + streamsVersion()
                + " java=" + System.getProperty("java.version")
                + " input=" + a.input + " output=" + a.output
                + " application.id=" + a.group
                + " store=" + a.store + " (rocksdb, caching off)"
                + " changelog=" + a.changelog
                + " processing.guarantee=" + cfg.getString(StreamsConfig.PROCESSING_GUARANTEE_CONFIG)
                + " commit.interval.ms=" + cfg.getLong(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG)
                + (interval == null ? " (default)" : a.commitIntervalMs != null
                        ? " (--commit-interval-ms)" : " (--linger-ms)")
                + " num.stream.threads=" + cfg.getInt(StreamsConfig.NUM_STREAM_THREADS_CONFIG)
                + " group.instance.id=" + (a.instanceId == null ? "(none)" : a.instanceId)
                + " isolation.level=" + consumer.get(ConsumerConfig.ISOLATION_LEVEL_CONFIG)
                + " session.timeout.ms=" + consumer.getOrDefault(
                        ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "(consumer default)")
                + " producer.linger.ms=" + producer.get("linger.ms")
                + " transaction.timeout.ms=" + producer.get("transaction.timeout.ms")
                + " replication.factor=" + rf
                + " state.dir=" + stateDir);

        // active=<n>: printed on every change, from the state listener.
        final int[] lastActive = {-1};
        CountDownLatch stop = new CountDownLatch(1);
        AtomicReference<String> why = new AtomicReference<>();
        streams.setStateListener((now, before) -> {
            int n;
            if (now == KafkaStreams.State.RUNNING) {
                n = activePartitions(streams, a.input);
            } else if (now == KafkaStreams.State.REBALANCING) {
                return; // keep the last count until the rebalance (and any restore) finishes
            } else {
                n = 0;
            }
            synchronized (lastActive) {
                if (n != lastActive[0]) {
                    lastActive[0] = n;
                    System.err.println("active=" + n);
                }
            }
            if (now == KafkaStreams.State.ERROR) {
                why.compareAndSet(null, "error");
                stop.countDown();
            }
        });
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long from, long to) { }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long end, long n) {
                RESTORED.addAndGet(n);
            }

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) { }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("kstreams-bank: stream thread failed: " + e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        for (String sig : new String[] {"TERM", "INT"}) {
            Signal.handle(new Signal(sig), s -> {
                why.compareAndSet(null, "SIG" + s.getName());
                stop.countDown();
            });
        }

        streams.start();
        stop.await();
        String reason = why.get();
        boolean failed = "error".equals(reason);
        System.err.println("kstreams-bank run: " + reason + ": closing (commit, leave the group)");
        long t0 = System.nanoTime();
        boolean closed = streams.close(CloseOptions
                .groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                .withTimeout(Duration.ofSeconds(30)));
        System.err.println("kstreams-bank run: stopped in "
                + (System.nanoTime() - t0) / 1_000_000 + " ms: closed=" + closed
                + " state=" + streams.state() + " events=" + EVENTS.get() + " applied="
                + APPLIED.get() + " rejected=" + REJECTED.get() + " skipped_unknown="
                + SKIPPED.get() + " restored_records=" + RESTORED.get());
        if (tempStateDir) deleteTree(stateDir);
        System.exit(failed || !closed ? 1 : 0);
    }
}

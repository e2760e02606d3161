// kbench peer: the Apache Kafka Java client. kbench compiles this file with javac against the
// broker distribution's jars and runs it once per measured run. Protocol (see
// benches/src/bin/kbench/spec.rs): `--name value` arguments, `kbench-progress N` lines on stderr,
// one JSON result line on stdout.

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.OutOfOrderSequenceException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class KBenchPeer {
    private static Map<String, String> args;
    private static final long ORIGIN = System.nanoTime();
    private static long lastProgress = System.nanoTime();

    private static String arg(String name) {
        String v = args.get(name);
        if (v == null) throw new IllegalArgumentException("missing --" + name);
        return v;
    }

    private static void progress(long done) {
        long now = System.nanoTime();
        if (now - lastProgress >= 200_000_000L) {
            lastProgress = now;
            System.err.println("kbench-progress " + done);
        }
    }

    private static byte[][] pool(int size) {
        Random rnd = new Random(0x6b62656e6368L);
        int n = (int) Math.max(1, Math.min(1024, (64L << 20) / Math.max(1, size)));
        byte[][] p = new byte[n][size];
        for (byte[] b : p) rnd.nextBytes(b);
        return p;
    }

    private static Properties producerProps(Map<String, String> settings) {
        Properties p = new Properties();
        p.put("bootstrap.servers", arg("bootstrap"));
        p.put("client.id", "kbench-java");
        settings.put("acks", arg("acks"));
        settings.put("linger.ms", arg("linger-ms"));
        settings.put("batch.size", arg("batch-size"));
        settings.put("compression.type", arg("compression"));
        settings.put("enable.idempotence", arg("idempotence"));
        p.putAll(settings);
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        return p;
    }

    private static KafkaConsumer<byte[], byte[]> consumer(Map<String, String> settings, String topic, int partitions) {
        Properties p = new Properties();
        p.put("bootstrap.servers", arg("bootstrap"));
        p.put("client.id", "kbench-java");
        settings.put("enable.auto.commit", "false");
        p.putAll(settings);
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p);
        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < partitions; i++) tps.add(new TopicPartition(topic, i));
        c.assign(tps);
        c.seekToBeginning(tps);
        return c;
    }

    /** A consumer in a fresh group (no committed offsets), not yet subscribed. */
    private static KafkaConsumer<byte[], byte[]> groupConsumer(Map<String, String> settings) {
        Properties p = new Properties();
        p.put("bootstrap.servers", arg("bootstrap"));
        p.put("client.id", "kbench-java");
        p.put("group.id", "kbench-java-" + ProcessHandle.current().pid() + "-" + System.nanoTime());
        settings.put("enable.auto.commit", "false");
        settings.put("auto.offset.reset", "earliest");
        settings.put("group.protocol", "classic");
        p.putAll(settings);
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        return new KafkaConsumer<>(p);
    }

    /** Percentiles in ms of latencies in µs (sorted in place). */
    private static String percentiles(long[] us, int n) {
        if (n == 0) return "null";
        Arrays.sort(us, 0, n);
        double[] qs = {0.50, 0.90, 0.99, 0.999};
        String[] names = {"p50", "p90", "p99", "p999"};
        StringBuilder sb = new StringBuilder("{");
        for (int i = 0; i < qs.length; i++) {
            int idx = (int) Math.min(n - 1, Math.max(0, Math.ceil(qs[i] * n) - 1));
            sb.append('"').append(names[i]).append("\":").append(us[idx] / 1000.0).append(',');
        }
        sb.append("\"max\":").append(us[n - 1] / 1000.0).append('}');
        return sb.toString();
    }

    /** The kafka-clients version (AppInfoParser moved to an internals package in 4.x). */
    private static String clientVersion() {
        for (String cls : new String[] {"org.apache.kafka.common.utils.internals.AppInfoParser",
                                        "org.apache.kafka.common.utils.AppInfoParser"}) {
            try {
                return String.valueOf(Class.forName(cls).getMethod("getVersion").invoke(null));
            } catch (ReflectiveOperationException e) {
                // try the next location
            }
        }
        return "unknown";
    }

    private static String json(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    private static void result(String mode, long records, long bytes, double elapsed, String latency,
                               Map<String, String> settings) {
        StringBuilder sb = new StringBuilder("{");
        sb.append("\"client\":").append(json("java " + clientVersion())).append(',');
        sb.append("\"mode\":").append(json(mode)).append(',');
        sb.append("\"records\":").append(records).append(',');
        sb.append("\"bytes\":").append(bytes).append(',');
        sb.append("\"elapsed_s\":").append(elapsed).append(',');
        sb.append("\"latency_ms\":").append(latency).append(',');
        sb.append("\"settings\":{");
        boolean first = true;
        for (Map.Entry<String, String> e : settings.entrySet()) {
            if (!first) sb.append(',');
            first = false;
            sb.append(json(e.getKey())).append(':').append(json(e.getValue()));
        }
        sb.append("}}");
        System.out.println(sb);
        System.out.flush();
    }

    /** Sends every record on the schedule; returns the latencies (µs) of acknowledgements. */
    private static long[] sendAll(KafkaProducer<byte[], byte[]> producer, boolean stamp, boolean showProgress)
            throws Exception {
        String topic = arg("topic");
        long records = Long.parseLong(arg("records"));
        int size = Integer.parseInt(arg("size"));
        boolean keys = Boolean.parseBoolean(arg("keys"));
        long rate = Long.parseLong(arg("rate"));
        byte[][] pool = pool(size);
        long[] lat = new long[(int) records];
        AtomicLong acked = new AtomicLong();
        AtomicReference<Exception> failure = new AtomicReference<>();
        long start = System.nanoTime();
        for (long i = 0; i < records; i++) {
            if (failure.get() != null) throw failure.get();
            long intended;
            if (rate > 0) {
                intended = start + i * 1_000_000_000L / rate;
                long wait;
                while ((wait = intended - System.nanoTime()) > 0) LockSupport.parkNanos(wait);
            } else {
                intended = System.nanoTime();
            }
            byte[] value = pool[(int) (i % pool.length)];
            if (stamp) {
                value = value.clone();
                ByteBuffer.wrap(value).putLong((intended - ORIGIN) / 1000);
            }
            byte[] key = keys ? ("k" + (i % 10000)).getBytes(StandardCharsets.UTF_8) : null;
            final int idx = (int) i;
            final long t = intended;
            producer.send(new ProducerRecord<>(topic, key, value), (md, ex) -> {
                if (ex != null) {
                    failure.compareAndSet(null, ex);
                } else {
                    lat[idx] = (System.nanoTime() - t) / 1000;
                    acked.incrementAndGet();
                }
            });
            if (showProgress) progress(i + 1);
        }
        producer.flush();
        if (failure.get() != null) throw failure.get();
        if (acked.get() != records) throw new IllegalStateException(acked.get() + " of " + records + " acknowledged");
        return lat;
    }

    public static void main(String[] argv) throws Exception {
        args = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) args.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        String mode = arg("mode");
        if (mode.equals("txn")) txnMain(); // the copier of `kbench txn`; its own arguments; exits
        String topic = arg("topic");
        long records = Long.parseLong(arg("records"));
        int size = Integer.parseInt(arg("size"));
        int partitions = Integer.parseInt(arg("partitions"));
        long timeoutNs = TimeUnit.SECONDS.toNanos(Long.parseLong(arg("timeout-s")));
        Map<String, String> settings = new TreeMap<>();
        try {
            switch (mode) {
                case "produce": {
                    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps(settings))) {
                        long start = System.nanoTime();
                        long[] lat = sendAll(producer, false, true);
                        double elapsed = (System.nanoTime() - start) / 1e9;
                        result(mode, records, records * size, elapsed, percentiles(lat, lat.length), settings);
                    }
                    break;
                }
                case "consume": {
                    boolean group = Boolean.parseBoolean(arg("group"));
                    try (KafkaConsumer<byte[], byte[]> c =
                             group ? groupConsumer(settings) : consumer(settings, topic, partitions)) {
                        settings.put("group", String.valueOf(group));
                        // With a group the clock starts before the subscribe: the join is measured.
                        long start = System.nanoTime();
                        if (group) c.subscribe(List.of(topic));
                        long n = 0, bytes = 0;
                        while (n < records) {
                            if (System.nanoTime() - start > timeoutNs)
                                throw new IllegalStateException("read " + n + " of " + records + " before the timeout");
                            ConsumerRecords<byte[], byte[]> batch = c.poll(Duration.ofMillis(500));
                            for (ConsumerRecord<byte[], byte[]> r : batch) {
                                n++;
                                if (r.value() != null) bytes += r.value().length;
                            }
                            progress(n);
                        }
                        double elapsed = (System.nanoTime() - start) / 1e9;
                        result(mode, n, bytes, elapsed, "null", settings);
                    }
                    break;
                }
                case "e2e": {
                    Map<String, String> csettings = new TreeMap<>();
                    KafkaConsumer<byte[], byte[]> c = consumer(csettings, topic, partitions);
                    c.poll(Duration.ZERO); // resolve the start offsets before producing
                    long[] lat = new long[(int) records];
                    long[] got = new long[2];
                    AtomicReference<Exception> failure = new AtomicReference<>();
                    Thread reader = new Thread(() -> {
                        try {
                            long start = System.nanoTime();
                            while (got[0] < records) {
                                if (System.nanoTime() - start > timeoutNs)
                                    throw new IllegalStateException("consumed " + got[0] + " of " + records);
                                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                                    long nowUs = (System.nanoTime() - ORIGIN) / 1000;
                                    long stampUs = ByteBuffer.wrap(r.value()).getLong();
                                    if (got[0] < records) lat[(int) got[0]] = Math.max(0, nowUs - stampUs);
                                    got[0]++;
                                    got[1] += r.value().length;
                                }
                                progress(got[0]);
                            }
                        } catch (Exception e) {
                            failure.set(e);
                        } finally {
                            c.close();
                        }
                    }, "kbench-reader");
                    long start = System.nanoTime();
                    reader.start();
                    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps(settings))) {
                        sendAll(producer, true, false);
                    }
                    reader.join();
                    if (failure.get() != null) throw failure.get();
                    double elapsed = (System.nanoTime() - start) / 1e9;
                    result(mode, got[0], got[1], elapsed, percentiles(lat, (int) Math.min(records, got[0])), settings);
                    break;
                }
                default:
                    throw new IllegalArgumentException("unknown mode " + mode);
            }
        } catch (Exception e) {
            e.printStackTrace();
            System.exit(1);
        }
        System.exit(0);
    }

    // ===================================================================================
    // txn: the copier of `kbench txn` (protocol: the top of benches/src/bin/kbench/txn.rs).
    // A group consumer (read_committed) copies each record's value to the same partition of
    // the output, and every interval-ms (from the first record of the current batch) either
    // commits a transaction with the input offsets (exactly once) or flushes and then commits
    // the offsets (at least once). Prints `kbench-ready` once every input partition is owned.
    // ===================================================================================

    private static void txnMain() {
        try {
            txnCopy();
        } catch (Exception e) {
            e.printStackTrace();
            System.exit(1);
        }
        System.exit(0);
    }

    private static void txnCopy() throws Exception {
        String input = arg("input"), output = arg("output");
        long intervalNs = TimeUnit.MILLISECONDS.toNanos(Long.parseLong(arg("interval-ms")));
        boolean exactlyOnce = Boolean.parseBoolean(arg("exactly-once"));
        long want = Long.parseLong(arg("records"));
        int partitions = Integer.parseInt(arg("partitions"));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(arg("timeout-s")));
        if (intervalNs <= 0 || want <= 0 || partitions < 1)
            throw new IllegalArgumentException("--interval-ms, --records and --partitions must be positive");

        Map<String, String> settings = new TreeMap<>();
        settings.put("isolation.level", "read_committed");
        settings.put("auto.offset.reset", "earliest");
        settings.put("enable.auto.commit", "false");
        settings.put("fetch.max.wait.ms", "5");
        settings.put("heartbeat.interval.ms", "500");
        settings.put("group.protocol", "classic");
        Properties cp = new Properties();
        cp.put("bootstrap.servers", arg("bootstrap"));
        cp.put("client.id", "kbench-java-txn");
        cp.put("group.id", arg("group"));
        cp.putAll(settings);
        cp.put("key.deserializer", ByteArrayDeserializer.class.getName());
        cp.put("value.deserializer", ByteArrayDeserializer.class.getName());

        Map<String, String> psettings = new TreeMap<>();
        psettings.put("acks", "all");
        psettings.put("linger.ms", "1");
        psettings.put("enable.idempotence", "true");
        if (exactlyOnce) psettings.put("transactional.id", arg("transactional-id"));
        Properties pp = new Properties();
        pp.put("bootstrap.servers", arg("bootstrap"));
        pp.put("client.id", "kbench-java-txn");
        pp.putAll(psettings);
        pp.put("key.serializer", ByteArraySerializer.class.getName());
        pp.put("value.serializer", ByteArraySerializer.class.getName());
        settings.putAll(psettings);
        settings.remove("transactional.id");
        settings.put("transactional", exactlyOnce ? "KafkaProducer transactions" : "no");

        long commits = 0, aborts = 0, done = 0, pending = 0;
        long[] commitUs = new long[16];
        int nCommits = 0;
        long first = -1, started = -1, lastCommit = System.nanoTime();
        AtomicReference<Exception> failure = new AtomicReference<>();
        Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp);
             KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            if (exactlyOnce) producer.initTransactions();
            consumer.subscribe(List.of(input));
            // Wait for every partition; the input starts only after the ready line, so nothing
            // is fetched meanwhile, but keep whatever a poll returns all the same.
            List<ConsumerRecord<byte[], byte[]>> early = new ArrayList<>();
            long readyBy = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (consumer.assignment().size() < partitions) {
                if (System.nanoTime() > readyBy)
                    throw new IllegalStateException("the copier was not assigned every partition within 60 s ("
                        + consumer.assignment().size() + " of " + partitions + ")");
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(20))) early.add(r);
            }
            System.err.println("kbench-ready");
            System.err.flush();
            boolean inTxn = false;
            while (done < want) {
                if (System.nanoTime() > deadline)
                    throw new IllegalStateException("copied " + done + " of " + want + " records before the timeout");
                List<ConsumerRecord<byte[], byte[]>> recs;
                if (!early.isEmpty()) {
                    recs = early;
                    early = new ArrayList<>();
                } else {
                    long waitNs = started < 0 ? intervalNs : intervalNs - (System.nanoTime() - started);
                    recs = new ArrayList<>();
                    for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofNanos(Math.max(waitNs, 100_000L))))
                        recs.add(r);
                }
                if (!recs.isEmpty()) {
                    long now = System.nanoTime();
                    if (started < 0) started = now;
                    if (first < 0) first = now;
                }
                for (ConsumerRecord<byte[], byte[]> r : recs) {
                    if (exactlyOnce && !inTxn) {
                        producer.beginTransaction();
                        inTxn = true;
                    }
                    producer.send(new ProducerRecord<>(output, r.partition(), null, r.value()), (md, ex) -> {
                        if (ex != null) failure.compareAndSet(null, ex);
                    });
                    offsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                pending += recs.size();
                if (started >= 0 && System.nanoTime() - started >= intervalNs) {
                    long t = System.nanoTime();
                    if (exactlyOnce) {
                        try {
                            producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                            producer.commitTransaction();
                            commits++;
                            done += pending;
                        } catch (ProducerFencedException | OutOfOrderSequenceException | AuthorizationException e) {
                            throw e; // fatal: the producer cannot go on
                        } catch (KafkaException e) {
                            // Abortable: abort, then rewind to the committed offsets and copy again.
                            producer.abortTransaction();
                            aborts++;
                            Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(offsets.keySet());
                            for (TopicPartition tp : offsets.keySet()) {
                                OffsetAndMetadata o = committed.get(tp);
                                if (o != null) consumer.seek(tp, o.offset());
                                else consumer.seekToBeginning(List.of(tp));
                            }
                        }
                        failure.set(null);
                        inTxn = false;
                    } else {
                        producer.flush();
                        if (failure.get() != null) throw failure.get();
                        consumer.commitSync(offsets);
                        commits++;
                        done += pending;
                    }
                    lastCommit = System.nanoTime();
                    if (nCommits == commitUs.length) commitUs = Arrays.copyOf(commitUs, nCommits * 2);
                    commitUs[nCommits++] = (lastCommit - t) / 1000;
                    offsets = new HashMap<>();
                    pending = 0;
                    started = -1;
                }
            }
        }
        double elapsed = first < 0 ? 0.0 : (lastCommit - first) / 1e9;
        StringBuilder sb = new StringBuilder("{");
        sb.append("\"client\":").append(json("java " + clientVersion())).append(',');
        sb.append("\"records\":").append(done).append(',');
        sb.append("\"commits\":").append(commits).append(',');
        sb.append("\"aborts\":").append(aborts).append(',');
        sb.append("\"elapsed_s\":").append(elapsed).append(',');
        sb.append("\"commit_ms\":").append(percentiles(commitUs, nCommits)).append(',');
        sb.append("\"settings\":{");
        boolean firstSetting = true;
        for (Map.Entry<String, String> e : settings.entrySet()) {
            if (!firstSetting) sb.append(',');
            firstSetting = false;
            sb.append(json(e.getKey())).append(':').append(json(e.getValue()));
        }
        sb.append("}}");
        System.out.println(sb);
        System.out.flush();
    }
}

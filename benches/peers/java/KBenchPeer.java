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
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
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
                    try (KafkaConsumer<byte[], byte[]> c = consumer(settings, topic, partitions)) {
                        long start = System.nanoTime();
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
}

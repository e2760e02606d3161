import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The Java side of kafka-client's interop tests (tests/it/interop.rs).
 *
 * produce BOOTSTRAP TOPIC CODEC N BASE_TS: N records, key "k-i", value "v-i-CODEC", headers
 *   idx=i and codec=CODEC, timestamp BASE_TS+i, partitioned by Java's default partitioner.
 * txn BOOTSTRAP TOPIC: to partition 0: a committed transaction (c1-0..4), an aborted one (a-0..4),
 *   a committed one (c2-0..4).
 * consume BOOTSTRAP TOPIC N: reads N records from the start of every partition and prints one line
 *   per record: partition, offset, timestamp, key, value, headers (k=v,...), tab-separated.
 */
public class ClientInterop {
    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String str(byte[] b) {
        return b == null ? "<null>" : new String(b, StandardCharsets.UTF_8);
    }

    static Properties producerProps(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        p.put("linger.ms", "5");
        return p;
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        String bootstrap = args[1];
        String topic = args[2];
        if (mode.equals("produce")) {
            String codec = args[3];
            int n = Integer.parseInt(args[4]);
            long baseTs = Long.parseLong(args[5]);
            Properties p = producerProps(bootstrap);
            p.put("compression.type", codec);
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
                for (int i = 0; i < n; i++) {
                    ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, null, baseTs + i,
                            utf8("k-" + i), utf8("v-" + i + "-" + codec));
                    r.headers().add("idx", utf8(Integer.toString(i)));
                    r.headers().add("codec", utf8(codec));
                    producer.send(r);
                }
                producer.flush();
            }
        } else if (mode.equals("txn")) {
            Properties p = producerProps(bootstrap);
            p.put("transactional.id", "interop-txn-" + topic);
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
                producer.initTransactions();
                String[] prefixes = {"c1", "a", "c2"};
                for (String prefix : prefixes) {
                    producer.beginTransaction();
                    for (int i = 0; i < 5; i++) {
                        producer.send(new ProducerRecord<>(topic, 0, utf8(prefix), utf8(prefix + "-" + i)));
                    }
                    producer.flush();
                    if (prefix.equals("a")) {
                        producer.abortTransaction();
                    } else {
                        producer.commitTransaction();
                    }
                }
            }
        } else if (mode.equals("consume")) {
            int n = Integer.parseInt(args[3]);
            Properties p = new Properties();
            p.put("bootstrap.servers", bootstrap);
            p.put("key.deserializer", ByteArrayDeserializer.class.getName());
            p.put("value.deserializer", ByteArrayDeserializer.class.getName());
            p.put("enable.auto.commit", "false");
            // Optional fifth argument: the isolation level (default read_uncommitted).
            if (args.length > 4) {
                p.put("isolation.level", args[4]);
            }
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
                List<TopicPartition> tps = new ArrayList<>();
                for (PartitionInfo info : consumer.partitionsFor(topic)) {
                    tps.add(new TopicPartition(topic, info.partition()));
                }
                consumer.assign(tps);
                consumer.seekToBeginning(tps);
                int seen = 0;
                long deadline = System.currentTimeMillis() + 60_000;
                StringBuilder out = new StringBuilder();
                // Until n records, then one more second to show anything beyond them.
                long extraUntil = Long.MAX_VALUE;
                while (System.currentTimeMillis() < Math.min(deadline, extraUntil)) {
                    if (seen >= n && extraUntil == Long.MAX_VALUE) {
                        extraUntil = System.currentTimeMillis() + 1_000;
                    }
                    for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                        StringBuilder h = new StringBuilder();
                        for (Header header : r.headers()) {
                            if (h.length() > 0) {
                                h.append(',');
                            }
                            h.append(header.key()).append('=').append(str(header.value()));
                        }
                        out.append(r.partition()).append('\t').append(r.offset()).append('\t')
                                .append(r.timestamp()).append('\t').append(str(r.key())).append('\t')
                                .append(str(r.value())).append('\t').append(h).append('\n');
                        seen++;
                    }
                }
                System.out.print(out);
                if (seen < n) {
                    System.err.println("only " + seen + " of " + n + " records");
                    System.exit(2);
                }
            }
        } else {
            System.err.println("unknown mode " + mode);
            System.exit(1);
        }
    }
}

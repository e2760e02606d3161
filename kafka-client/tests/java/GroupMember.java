import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * A Java KafkaConsumer in a classic consumer group, for kafka-client's mixed-group tests
 * (tests/it/group_java.rs).
 *
 * Arguments: BOOTSTRAP TOPIC GROUP CLIENT_ID STRATEGY (assignor class names, comma-separated).
 *
 * It subscribes, polls in a loop, commits synchronously in onPartitionsRevoked and before closing,
 * and asynchronously after every poll that returned records. It closes when stdin says "close"
 * or reaches its end. Every line it prints starts with a wall-clock time in microseconds since
 * the epoch (the test orders both clients' events on that clock):
 *
 *   TIME READY
 *   TIME ASSIGNED|REVOKED|LOST p1,p2,...   (partition numbers; at the start of the listener for
 *                                            ASSIGNED, at its end for REVOKED and LOST)
 *   TIME GEN generation                    (after each assignment)
 *   TIME R partition offset value          (one per consumed record)
 *   TIME CLOSED
 *
 * Errors go to stderr.
 */
public class GroupMember {
    static long micros() {
        Instant now = Instant.now();
        return now.getEpochSecond() * 1_000_000L + now.getNano() / 1_000;
    }

    static synchronized void out(String line) {
        System.out.println(micros() + " " + line);
        System.out.flush();
    }

    static String parts(Collection<TopicPartition> tps) {
        List<String> out = new ArrayList<>();
        for (TopicPartition tp : tps) {
            out.add(Integer.toString(tp.partition()));
        }
        return String.join(",", out);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        String group = args[2];
        String clientId = args[3];
        String strategy = args[4];

        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("group.id", group);
        p.put("client.id", clientId);
        p.put("group.protocol", "classic");
        p.put("partition.assignment.strategy", strategy);
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
        p.put("heartbeat.interval.ms", "300");
        p.put("session.timeout.ms", "10000");
        p.put("max.poll.interval.ms", "20000");

        AtomicBoolean closing = new AtomicBoolean(false);
        Thread stdin = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(
                    new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    if (line.trim().equals("close")) {
                        break;
                    }
                }
            } catch (Exception e) {
                e.printStackTrace();
            }
            closing.set(true);
        });
        stdin.setDaemon(true);
        stdin.start();

        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                    try {
                        consumer.commitSync();
                    } catch (Exception e) {
                        System.err.println("commit on revoke failed: " + e);
                    }
                    out("REVOKED " + parts(partitions));
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    out("ASSIGNED " + parts(partitions));
                    out("GEN " + consumer.groupMetadata().generationId());
                }

                @Override
                public void onPartitionsLost(Collection<TopicPartition> partitions) {
                    out("LOST " + parts(partitions));
                }
            });
            out("READY");
            while (!closing.get()) {
                ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) {
                    continue;
                }
                StringBuilder sb = new StringBuilder();
                long t = micros();
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    sb.append(t).append(" R ").append(r.partition()).append(' ').append(r.offset())
                            .append(' ').append(new String(r.value(), StandardCharsets.UTF_8))
                            .append('\n');
                }
                synchronized (GroupMember.class) {
                    System.out.print(sb);
                    System.out.flush();
                }
                consumer.commitAsync();
            }
            try {
                consumer.commitSync();
            } catch (Exception e) {
                System.err.println("final commit failed: " + e);
            }
        }
        out("CLOSED");
    }
}

// Reads every partition of a topic with the Java client (read_committed), one partition after
// another from the log start up to the last stable offset, and writes one line per record:
//
//     <partition> <offset> <key as hex, or -> <value as hex, or ->
//
// Usage: java -cp '<kafka libs>/*' ReadCommitted.java BOOTSTRAP TOPIC OUT_FILE TIMEOUT_SECONDS
//
// streams/tests/faults.rs runs it after a bank run and compares the lines with what our
// read_committed consumer returns. Exit 0 when every partition was read to its end; 1 on a
// timeout (the message names the partition and both offsets); 2 for bad usage.

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class ReadCommitted {
    private static final char[] HEX = "0123456789abcdef".toCharArray();

    static String hex(byte[] b) {
        if (b == null) {
            return "-";
        }
        char[] out = new char[b.length * 2];
        for (int i = 0; i < b.length; i++) {
            out[2 * i] = HEX[(b[i] >> 4) & 0xf];
            out[2 * i + 1] = HEX[b[i] & 0xf];
        }
        return new String(out);
    }

    public static void main(String[] args) throws IOException {
        if (args.length != 4) {
            System.err.println("usage: ReadCommitted BOOTSTRAP TOPIC OUT_FILE TIMEOUT_SECONDS");
            System.exit(2);
        }
        String bootstrap = args[0];
        String topic = args[1];
        long deadline = System.nanoTime() + Long.parseLong(args[3]) * 1_000_000_000L;

        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());

        long total = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props);
                BufferedWriter out = Files.newBufferedWriter(Paths.get(args[2]), StandardCharsets.UTF_8)) {
            List<PartitionInfo> infos = new ArrayList<>(consumer.partitionsFor(topic, Duration.ofSeconds(30)));
            infos.sort(Comparator.comparingInt(PartitionInfo::partition));
            for (PartitionInfo info : infos) {
                TopicPartition tp = new TopicPartition(topic, info.partition());
                consumer.assign(List.of(tp));
                consumer.seekToBeginning(List.of(tp));
                // With read_committed, the end offset is the last stable offset.
                long end = consumer.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp);
                while (consumer.position(tp, Duration.ofSeconds(30)) < end) {
                    if (System.nanoTime() > deadline) {
                        System.err.printf("ReadCommitted: timed out on %s at offset %d of %d%n",
                                tp, consumer.position(tp), end);
                        System.exit(1);
                    }
                    for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                        out.write(r.partition() + " " + r.offset() + " " + hex(r.key()) + " " + hex(r.value()));
                        out.newLine();
                        total++;
                    }
                }
            }
        }
        System.err.printf("ReadCommitted: %d records of %s%n", total, topic);
    }
}

// Differential oracle for kafka-client's balancers: runs Apache Kafka's own assignors and
// ConsumerProtocol codec on scenarios read from stdin. Line protocol (fields separated by spaces,
// "-" for absent, byte strings hex-encoded):
//   S <assignor>                     start a group scenario (range|roundrobin|sticky|cooperative-sticky)
//   T <topic> <partitions>           a topic in the cluster metadata
//   M <member> <instance|-> <hex>    a member and its encoded subscription, in JoinGroup order
//   E                                run it; prints "A <member> <hex assignment>" lines, then "E"
//   DS <hex> / DA <hex>              decode a subscription / assignment; prints its canonical text
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor;
import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor.Assignment;
import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor.GroupSubscription;
import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor.Subscription;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.consumer.RoundRobinAssignor;
import org.apache.kafka.clients.consumer.StickyAssignor;
import org.apache.kafka.clients.consumer.internals.ConsumerProtocol;
import org.apache.kafka.common.Cluster;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;

public class AssignorVectors {
    static byte[] unhex(String s) {
        if (s.equals("-")) return new byte[0];
        byte[] out = new byte[s.length() / 2];
        for (int i = 0; i < out.length; i++)
            out[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        return out;
    }

    static String hex(ByteBuffer b) {
        if (b == null) return "null";
        ByteBuffer d = b.duplicate();
        StringBuilder sb = new StringBuilder();
        while (d.hasRemaining()) sb.append(String.format("%02x", d.get() & 0xff));
        return sb.length() == 0 ? "empty" : sb.toString();
    }

    static String parts(List<TopicPartition> ps) {
        List<String> s = new ArrayList<>();
        for (TopicPartition tp : ps) s.add(tp.topic() + ":" + tp.partition());
        return s.isEmpty() ? "-" : String.join(",", s);
    }

    static ConsumerPartitionAssignor assignor(String name) {
        switch (name) {
            case "range": return new RangeAssignor();
            case "roundrobin": return new RoundRobinAssignor();
            case "sticky": return new StickyAssignor();
            case "cooperative-sticky": return new CooperativeStickyAssignor();
            default: throw new IllegalArgumentException(name);
        }
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        StringBuilder out = new StringBuilder();
        String name = null;
        List<PartitionInfo> partitions = new ArrayList<>();
        Map<String, Subscription> subs = new HashMap<>();
        Node node = new Node(0, "127.0.0.1", 9092);
        String line;
        while ((line = in.readLine()) != null) {
            String[] f = line.split(" ");
            switch (f[0]) {
                case "S":
                    name = f[1];
                    partitions = new ArrayList<>();
                    subs = new HashMap<>();
                    break;
                case "T":
                    for (int p = 0; p < Integer.parseInt(f[2]); p++)
                        partitions.add(new PartitionInfo(f[1], p, node, new Node[]{node}, new Node[]{node}));
                    break;
                case "M": {
                    Subscription s = ConsumerProtocol.deserializeSubscription(ByteBuffer.wrap(unhex(f[3])));
                    if (!f[2].equals("-")) s.setGroupInstanceId(Optional.of(f[2]));
                    subs.put(f[1], s);
                    break;
                }
                case "E": {
                    Cluster cluster = new Cluster("c", Collections.singletonList(node), partitions,
                            new HashSet<>(), new HashSet<>());
                    Map<String, Assignment> result =
                            assignor(name).assign(cluster, new GroupSubscription(subs)).groupAssignment();
                    for (Map.Entry<String, Assignment> e : result.entrySet()) {
                        out.append("A ").append(e.getKey()).append(' ')
                           .append(hex(ConsumerProtocol.serializeAssignment(e.getValue()))).append('\n');
                    }
                    out.append("E\n");
                    break;
                }
                case "DS": {
                    try {
                        Subscription s = ConsumerProtocol.deserializeSubscription(ByteBuffer.wrap(unhex(f[1])));
                        out.append("topics=").append(s.topics().isEmpty() ? "-" : String.join(",", s.topics()))
                           .append(" ud=").append(hex(s.userData()))
                           .append(" owned=").append(parts(s.ownedPartitions()))
                           .append(" gen=").append(s.generationId().orElse(-1))
                           .append(" rack=").append(s.rackId().orElse("-")).append('\n');
                        // And Java's own encoding of it, newest version, for us to decode.
                        out.append("J ").append(hex(ConsumerProtocol.serializeSubscription(s))).append('\n');
                    } catch (RuntimeException e) {
                        out.append("error\nJ -\n");
                    }
                    break;
                }
                case "DA": {
                    try {
                        Assignment a = ConsumerProtocol.deserializeAssignment(ByteBuffer.wrap(unhex(f[1])));
                        out.append("parts=").append(parts(a.partitions()))
                           .append(" ud=").append(hex(a.userData())).append('\n');
                        out.append("J ").append(hex(ConsumerProtocol.serializeAssignment(a))).append('\n');
                    } catch (RuntimeException e) {
                        out.append("error\nJ -\n");
                    }
                    break;
                }
                default:
                    throw new IllegalArgumentException("bad line: " + line);
            }
        }
        System.out.print(out);
    }
}

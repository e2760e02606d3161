// Reads keys as hex, one per line on stdin (an empty line is the empty key), and prints for each
// "murmur2 p1 p2 ..." where pN is the partition Java's producer picks among the counts given as
// arguments. Used by kafka-client's integration test to compare with the Rust partitioner.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.utils.Utils;

public class Murmur2Vectors {
    public static void main(String[] args) throws Exception {
        int[] counts = new int[args.length];
        for (int i = 0; i < args.length; i++) counts[i] = Integer.parseInt(args[i]);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        StringBuilder out = new StringBuilder();
        String line;
        while ((line = in.readLine()) != null) {
            byte[] key = new byte[line.length() / 2];
            for (int i = 0; i < key.length; i++) {
                key[i] = (byte) Integer.parseInt(line.substring(2 * i, 2 * i + 2), 16);
            }
            int h = Utils.murmur2(key);
            out.append(h);
            for (int n : counts) out.append(' ').append(Utils.toPositive(h) % n);
            out.append('\n');
        }
        System.out.print(out);
    }
}

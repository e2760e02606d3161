// Test helper for kafka-wire's record-batch interop tests (tests/it/java_interop.rs).
//
//   java RecordsInterop write <dir>      writes java-<codec>.bin, java-logappend.bin,
//                                        java-commit.bin and java-abort.bin with the Java client
//   java RecordsInterop dump <file>...   reads each file with MemoryRecords, validates every batch's
//                                        CRC and prints batches and records in a fixed text form
//
// The records written here are the same fixed "spec" the Rust test builds; keep both in step.

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;

import org.apache.kafka.common.compress.Compression;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.record.internal.ControlRecordType;
import org.apache.kafka.common.record.internal.DefaultRecordBatch;
import org.apache.kafka.common.record.internal.EndTransactionMarker;
import org.apache.kafka.common.record.internal.MemoryRecords;
import org.apache.kafka.common.record.internal.MemoryRecordsBuilder;
import org.apache.kafka.common.record.internal.MutableRecordBatch;
import org.apache.kafka.common.record.internal.Record;
import org.apache.kafka.common.record.internal.RecordBatch;

public class RecordsInterop {
    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};

    static long timestamp(int i) {
        return i == 3 ? 1_699_999_999_000L : 1_700_000_000_000L + i * 10L;
    }

    static byte[] key(int i) {
        return i == 2 ? null : ("key-" + i).getBytes(StandardCharsets.UTF_8);
    }

    static byte[] value(int i) {
        return i == 4 ? null : ("value-" + i + "-").repeat(20).getBytes(StandardCharsets.UTF_8);
    }

    static Header[] headers(int i) {
        if (i == 0) {
            return new Header[0];
        }
        return new Header[] {
            new RecordHeader("trace", ("t" + i).getBytes(StandardCharsets.UTF_8)),
            new RecordHeader("dup", "a".getBytes(StandardCharsets.UTF_8)),
            new RecordHeader("dup", (byte[]) null),
        };
    }

    static Compression compression(String name) {
        switch (name) {
            case "none": return Compression.NONE;
            case "gzip": return Compression.gzip().build();
            case "snappy": return Compression.snappy().build();
            case "lz4": return Compression.lz4().build();
            case "zstd": return Compression.zstd().build();
            default: throw new IllegalArgumentException(name);
        }
    }

    static void save(MemoryRecords records, Path file) throws Exception {
        ByteBuffer b = records.buffer();
        byte[] out = new byte[b.remaining()];
        b.get(out);
        Files.write(file, out);
    }

    static void write(Path dir) throws Exception {
        for (String codec : CODECS) {
            MemoryRecordsBuilder b = MemoryRecords.builder(ByteBuffer.allocate(1 << 16),
                RecordBatch.CURRENT_MAGIC_VALUE, compression(codec), TimestampType.CREATE_TIME,
                100L, RecordBatch.NO_TIMESTAMP, 4242L, (short) 3, 17, true, 9);
            for (int i = 0; i < 5; i++) {
                b.append(timestamp(i), key(i), value(i), headers(i));
            }
            save(b.build(), dir.resolve("java-" + codec + ".bin"));
        }
        MemoryRecordsBuilder b = MemoryRecords.builder(ByteBuffer.allocate(1 << 16),
            RecordBatch.CURRENT_MAGIC_VALUE, Compression.NONE, TimestampType.LOG_APPEND_TIME,
            0L, 1_800_000_000_000L, RecordBatch.NO_PRODUCER_ID, RecordBatch.NO_PRODUCER_EPOCH,
            RecordBatch.NO_SEQUENCE, false, RecordBatch.NO_PARTITION_LEADER_EPOCH);
        for (int i = 0; i < 2; i++) {
            b.append(timestamp(i), key(i), value(i), headers(i));
        }
        save(b.build(), dir.resolve("java-logappend.bin"));
        // Larger batches (about 150 KiB uncompressed) so every codec writes several blocks.
        for (String codec : CODECS) {
            MemoryRecordsBuilder big = MemoryRecords.builder(ByteBuffer.allocate(1 << 20),
                RecordBatch.CURRENT_MAGIC_VALUE, compression(codec), TimestampType.CREATE_TIME,
                0L, RecordBatch.NO_TIMESTAMP, RecordBatch.NO_PRODUCER_ID,
                RecordBatch.NO_PRODUCER_EPOCH, RecordBatch.NO_SEQUENCE, false,
                RecordBatch.NO_PARTITION_LEADER_EPOCH);
            long x = 1;
            for (int i = 0; i < 300; i++) {
                byte[] v = new byte[500];
                int w = 0;
                for (int j = 0; j < v.length; j++) {
                    if (j % 8 == 0) {
                        x = x * 6364136223846793005L + 1442695040888963407L;
                        w = (int) ((x >>> 33) % 64);
                    }
                    v[j] = (byte) ('a' + (w + j % 8) % 26);
                }
                big.append(1_700_000_000_000L + i, ("k" + i).getBytes(StandardCharsets.UTF_8), v,
                    new Header[0]);
            }
            save(big.build(), dir.resolve("java-big-" + codec + ".bin"));
        }
        save(MemoryRecords.withEndTransactionMarker(105L, 1_700_000_000_999L, 9, 4242L, (short) 3,
            new EndTransactionMarker(ControlRecordType.COMMIT, 11)), dir.resolve("java-commit.bin"));
        save(MemoryRecords.withEndTransactionMarker(106L, 1_700_000_001_999L, 9, 4242L, (short) 3,
            new EndTransactionMarker(ControlRecordType.ABORT, 12)), dir.resolve("java-abort.bin"));
    }

    static String hex(ByteBuffer b) {
        if (b == null) {
            return "null";
        }
        StringBuilder s = new StringBuilder();
        ByteBuffer d = b.duplicate();
        while (d.hasRemaining()) {
            s.append(String.format("%02x", d.get()));
        }
        return s.toString();
    }

    static String hex(byte[] b) {
        return b == null ? "null" : hex(ByteBuffer.wrap(b));
    }

    static void dump(Path file, StringBuilder out) throws Exception {
        MemoryRecords records = MemoryRecords.readableRecords(ByteBuffer.wrap(Files.readAllBytes(file)));
        for (MutableRecordBatch batch : records.batches()) {
            batch.ensureValid();
            long first = ((DefaultRecordBatch) batch).baseTimestamp();
            out.append("batch base_offset=").append(batch.baseOffset())
                .append(" last_offset=").append(batch.lastOffset())
                .append(" partition_leader_epoch=").append(batch.partitionLeaderEpoch())
                .append(" magic=").append(batch.magic())
                .append(" codec=").append(batch.compressionType().id)
                .append(" timestamp_type=").append(batch.timestampType())
                .append(" transactional=").append(batch.isTransactional())
                .append(" control=").append(batch.isControlBatch())
                .append(" producer_id=").append(batch.producerId())
                .append(" producer_epoch=").append(batch.producerEpoch())
                .append(" base_sequence=").append(batch.baseSequence())
                .append(" count=").append(batch.countOrNull())
                .append(" first_timestamp=").append(first)
                .append(" max_timestamp=").append(batch.maxTimestamp())
                .append('\n');
            for (Record r : batch) {
                r.ensureValid();
                out.append("record offset=").append(r.offset())
                    .append(" timestamp=").append(r.timestamp())
                    .append(" key=").append(r.hasKey() ? hex(r.key()) : "null")
                    .append(" value=").append(r.hasValue() ? hex(r.value()) : "null")
                    .append(" headers=[");
                Header[] hs = r.headers();
                for (int i = 0; i < hs.length; i++) {
                    if (i > 0) {
                        out.append(',');
                    }
                    out.append(hs[i].key()).append('=').append(hex(hs[i].value()));
                }
                out.append("]\n");
                if (batch.isControlBatch()) {
                    ControlRecordType type = ControlRecordType.parse(r.key());
                    EndTransactionMarker m = EndTransactionMarker.deserialize(r);
                    out.append("control type=").append(type.type())
                        .append(" coordinator_epoch=").append(m.coordinatorEpoch()).append('\n');
                }
            }
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length >= 2 && args[0].equals("write")) {
            write(Paths.get(args[1]));
        } else if (args.length >= 2 && args[0].equals("dump")) {
            StringBuilder out = new StringBuilder();
            for (int i = 1; i < args.length; i++) {
                out.append("file ").append(Paths.get(args[i]).getFileName()).append('\n');
                dump(Paths.get(args[i]), out);
            }
            System.out.print(out);
        } else {
            System.err.println("usage: RecordsInterop write <dir> | dump <file>...");
            System.exit(2);
        }
    }
}

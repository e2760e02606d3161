//! The fixed record set shared with the Java helper (`tests/java/RecordsInterop.java`), a text dump
//! of decoded batches, and the decoding test over the golden files the Java helper wrote
//! (`tests/data/java-*.bin`), which runs without Java.

use std::fmt::Write as _;
use std::path::PathBuf;

use bytes::Bytes;
use kafka_wire::records::{
    end_txn_marker_batch, BatchBuilder, BatchOptions, ControlRecordType, ReadOptions,
    RecordBatches, TimestampType,
};
use kafka_wire::Codec;

pub const CODECS: [(Codec, &str); 5] = [
    (Codec::None, "none"),
    (Codec::Gzip, "gzip"),
    (Codec::Snappy, "snappy"),
    (Codec::Lz4, "lz4"),
    (Codec::Zstd, "zstd"),
];

/// Every file the Java helper writes and the Rust side writes too, by suffix.
pub const KINDS: [&str; 8] = [
    "none",
    "gzip",
    "snappy",
    "lz4",
    "zstd",
    "logappend",
    "commit",
    "abort",
];

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn timestamp(i: usize) -> i64 {
    if i == 3 {
        1_699_999_999_000
    } else {
        1_700_000_000_000 + i as i64 * 10
    }
}

fn key(i: usize) -> Option<Vec<u8>> {
    (i != 2).then(|| format!("key-{i}").into_bytes())
}

fn value(i: usize) -> Option<Vec<u8>> {
    (i != 4).then(|| format!("value-{i}-").repeat(20).into_bytes())
}

fn headers(i: usize) -> Vec<(&'static str, Option<Vec<u8>>)> {
    if i == 0 {
        return vec![];
    }
    vec![
        ("trace", Some(format!("t{i}").into_bytes())),
        ("dup", Some(b"a".to_vec())),
        ("dup", None),
    ]
}

fn data_options(codec: Codec) -> BatchOptions {
    BatchOptions {
        base_offset: 100,
        partition_leader_epoch: 9,
        producer_id: 4242,
        producer_epoch: 3,
        base_sequence: 17,
        transactional: true,
        compression: codec,
        ..BatchOptions::default()
    }
}

fn append(b: &mut BatchBuilder, i: usize) {
    let hs = headers(i);
    let hs: Vec<(&str, Option<&[u8]>)> = hs.iter().map(|(k, v)| (*k, v.as_deref())).collect();
    b.append(timestamp(i), key(i).as_deref(), value(i).as_deref(), &hs)
        .unwrap();
}

/// Our encoding of the file `kind` (see [`KINDS`]).
pub fn rust_file(kind: &str) -> Bytes {
    let marker = BatchOptions {
        partition_leader_epoch: 9,
        producer_id: 4242,
        producer_epoch: 3,
        ..BatchOptions::default()
    };
    match kind {
        "logappend" => {
            let mut b = BatchBuilder::new(BatchOptions {
                log_append_time: Some(1_800_000_000_000),
                ..BatchOptions::default()
            });
            append(&mut b, 0);
            append(&mut b, 1);
            b.finish().unwrap()
        }
        "commit" => end_txn_marker_batch(
            &BatchOptions {
                base_offset: 105,
                ..marker
            },
            1_700_000_000_999,
            ControlRecordType::COMMIT,
            11,
        )
        .unwrap(),
        "abort" => end_txn_marker_batch(
            &BatchOptions {
                base_offset: 106,
                ..marker
            },
            1_700_000_001_999,
            ControlRecordType::ABORT,
            12,
        )
        .unwrap(),
        codec => {
            let codec = CODECS.iter().find(|(_, n)| *n == codec).unwrap().0;
            let mut b = BatchBuilder::new(data_options(codec));
            for i in 0..5 {
                append(&mut b, i);
            }
            b.finish().unwrap()
        }
    }
}

fn hex(b: Option<&[u8]>) -> String {
    match b {
        None => "null".into(),
        Some(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

fn ts_type(t: TimestampType) -> &'static str {
    match t {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    }
}

type Rec = (
    i64,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

#[allow(clippy::too_many_arguments)]
fn dump_batch(
    out: &mut String,
    (base, last, ple, codec, tt, txn, control): (i64, i64, i32, i16, TimestampType, bool, bool),
    (pid, epoch, seq, first, max): (i64, i16, i32, i64, i64),
    records: &[Rec],
    control_lines: &[(i16, i32)],
) {
    writeln!(
        out,
        "batch base_offset={base} last_offset={last} partition_leader_epoch={ple} magic=2 \
         codec={codec} timestamp_type={} transactional={txn} control={control} producer_id={pid} \
         producer_epoch={epoch} base_sequence={seq} count={} first_timestamp={first} \
         max_timestamp={max}",
        ts_type(tt),
        records.len()
    )
    .unwrap();
    for (i, (off, ts, k, v, hs)) in records.iter().enumerate() {
        let hs: Vec<String> = hs
            .iter()
            .map(|(k, v)| format!("{k}={}", hex(v.as_deref())))
            .collect();
        writeln!(
            out,
            "record offset={off} timestamp={ts} key={} value={} headers=[{}]",
            hex(k.as_deref()),
            hex(v.as_deref()),
            hs.join(",")
        )
        .unwrap();
        if let Some((t, e)) = control_lines.get(i) {
            writeln!(out, "control type={t} coordinator_epoch={e}").unwrap();
        }
    }
}

/// The dump the file `kind` must give, computed from the spec alone (not from any decoder).
pub fn expected_dump(kind: &str) -> String {
    let mut out = format!("file {{}}-{kind}.bin\n");
    let spec_rec = |i: usize, off: i64, ts: i64| -> Rec {
        let hs = headers(i)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        (off, ts, key(i), value(i), hs)
    };
    match kind {
        "logappend" => {
            let recs: Vec<Rec> = (0..2)
                .map(|i| spec_rec(i, i as i64, 1_800_000_000_000))
                .collect();
            dump_batch(
                &mut out,
                (0, 1, -1, 0, TimestampType::LogAppendTime, false, false),
                (-1, -1, -1, timestamp(0), 1_800_000_000_000),
                &recs,
                &[],
            );
        }
        "commit" | "abort" => {
            let (off, ts, t, e) = if kind == "commit" {
                (105, 1_700_000_000_999, 1i16, 11)
            } else {
                (106, 1_700_000_001_999, 0, 12)
            };
            let k = ControlRecordType(t).key_bytes().to_vec();
            let mut v = vec![0, 0];
            v.extend_from_slice(&i32::to_be_bytes(e));
            let recs = vec![(off, ts, Some(k), Some(v), vec![])];
            dump_batch(
                &mut out,
                (off, off, 9, 0, TimestampType::CreateTime, true, true),
                (4242, 3, -1, ts, ts),
                &recs,
                &[(t, e)],
            );
        }
        codec => {
            let id = CODECS.iter().find(|(_, n)| *n == codec).unwrap().0.id();
            let recs: Vec<Rec> = (0..5)
                .map(|i| spec_rec(i, 100 + i as i64, timestamp(i)))
                .collect();
            dump_batch(
                &mut out,
                (100, 104, 9, id, TimestampType::CreateTime, true, false),
                (4242, 3, 17, timestamp(0), timestamp(4)),
                &recs,
                &[],
            );
        }
    }
    out
}

/// Our decoder's dump of `bytes`, in the Java helper's format, after `file <name>`.
pub fn rust_dump(name: &str, bytes: Bytes) -> String {
    let mut out = format!("file {name}\n");
    let mut batches = RecordBatches::new(bytes);
    for batch in batches.by_ref() {
        let batch = batch.unwrap();
        batch.verify_crc().unwrap();
        let records: Vec<_> = batch
            .records(&ReadOptions::default())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let recs: Vec<Rec> = records
            .iter()
            .map(|r| {
                let hs = r
                    .headers
                    .clone()
                    .map(|h| {
                        (
                            h.key_str().unwrap().to_string(),
                            h.value.map(|v| v.to_vec()),
                        )
                    })
                    .collect();
                (
                    r.offset,
                    r.timestamp,
                    r.key.as_ref().map(|k| k.to_vec()),
                    r.value.as_ref().map(|v| v.to_vec()),
                    hs,
                )
            })
            .collect();
        let control: Vec<(i16, i32)> = if batch.is_control() {
            records
                .iter()
                .map(|r| {
                    (
                        r.control().unwrap().kind.0,
                        r.end_txn_marker().unwrap().coordinator_epoch,
                    )
                })
                .collect()
        } else {
            vec![]
        };
        assert_eq!(batch.records_count() as usize, recs.len());
        dump_batch(
            &mut out,
            (
                batch.base_offset(),
                batch.last_offset(),
                batch.partition_leader_epoch(),
                batch.compression().unwrap().id(),
                batch.timestamp_type(),
                batch.is_transactional(),
                batch.is_control(),
            ),
            (
                batch.producer_id(),
                batch.producer_epoch(),
                batch.base_sequence(),
                batch.first_timestamp(),
                batch.max_timestamp(),
            ),
            &recs,
            &control,
        );
    }
    assert!(!batches.truncated());
    out
}

#[test]
fn golden_java_files_decode_exactly() {
    for kind in KINDS {
        let path = data_dir().join(format!("java-{kind}.bin"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got = rust_dump(&format!("java-{kind}.bin"), Bytes::from(bytes));
        assert_eq!(got, expected_dump(kind).replace("{}", "java"), "{kind}");
    }
}

#[test]
fn our_files_decode_to_the_spec() {
    for kind in KINDS {
        let got = rust_dump(&format!("rust-{kind}.bin"), rust_file(kind));
        assert_eq!(got, expected_dump(kind).replace("{}", "rust"), "{kind}");
    }
}

#[test]
fn golden_files_concatenated_like_a_fetch_response() {
    // All golden batches back to back, with the last one cut short as a broker may send it.
    let mut all = Vec::new();
    for kind in KINDS {
        all.extend(std::fs::read(data_dir().join(format!("java-{kind}.bin"))).unwrap());
    }
    let cut = all.len() - 10;
    let mut batches = RecordBatches::new(Bytes::from(all).slice(..cut));
    let offsets: Vec<i64> = batches.by_ref().map(|b| b.unwrap().base_offset()).collect();
    assert_eq!(offsets, vec![100, 100, 100, 100, 100, 0, 105]);
    assert!(batches.truncated());
}

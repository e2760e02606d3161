//! Differential checks against Apache Kafka's Java client: the murmur2 key partitioner and the
//! error-code table. These need `java`, `javac` and the Kafka jars (fetched by testkit); they fail,
//! never skip, when those are missing.

use std::io::Write;
use std::process::Stdio;

use kafka_client::kafka_wire::ErrorCode;
use kafka_client::partitioner::{murmur2, partition_for_key};
use kafka_client::rng::{RandomSource, SeededRng};

use crate::jvm;

const PARTITION_COUNTS: [i32; 7] = [1, 2, 3, 7, 12, 100, 1031];

fn keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"a".to_vec(),
        b"ab".to_vec(),
        b"abc".to_vec(),
        b"abcd".to_vec(),
        b"abcde".to_vec(),
        "ключ".as_bytes().to_vec(),
        "键值".as_bytes().to_vec(),
        "🦀 crab".as_bytes().to_vec(),
        vec![0xff; 7],
        vec![0x80; 9],
        vec![0; 4],
    ];
    let mut rng = SeededRng::new(0x5eed_cafe);
    while keys.len() < 10_000 {
        let len = if rng.below(10) == 0 {
            rng.below(1024) as usize
        } else {
            rng.below(40) as usize
        };
        let mut k = vec![0u8; len];
        if rng.below(3) == 0 {
            // Text keys, as most applications use.
            let text: String = (0..len)
                .map(|_| char::from_u32(0x20 + rng.below(0x2fff) as u32).unwrap_or('?'))
                .collect();
            k = text.into_bytes();
        } else {
            rng.try_fill_bytes(&mut k).unwrap();
        }
        keys.push(k);
    }
    keys
}

#[test]
fn murmur2_matches_java() {
    let keys = keys();
    let mut input = String::new();
    for k in &keys {
        for b in k {
            input.push_str(&format!("{b:02x}"));
        }
        input.push('\n');
    }
    let args: Vec<String> = PARTITION_COUNTS.iter().map(|n| n.to_string()).collect();
    let out = jvm::run("Murmur2Vectors", &args, input.as_bytes());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), keys.len(), "one line per key from Java");
    for (key, line) in keys.iter().zip(lines) {
        let mut fields = line.split(' ');
        let java_hash: i32 = fields.next().unwrap().parse().unwrap();
        assert_eq!(murmur2(key), java_hash, "murmur2 of {key:02x?}");
        for n in PARTITION_COUNTS {
            let java_p: i32 = fields.next().unwrap().parse().unwrap();
            assert_eq!(
                partition_for_key(key, n),
                Some(java_p),
                "partition of {key:02x?} among {n}"
            );
        }
    }
}

#[test]
fn error_codes_match_java() {
    let out = jvm::run("ErrorCodes", &[], b"");
    let java: Vec<(i16, String, bool)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].parse().unwrap(), f[1].to_string(), f[2] == "true")
        })
        .collect();
    assert!(java.len() > 100, "Java listed {} codes", java.len());
    let ours: Vec<(i16, String, bool)> = ErrorCode::all()
        .map(|c| (c.0, c.name().unwrap_or("?").to_string(), c.is_retriable()))
        .collect();
    let only_java: Vec<_> = java.iter().filter(|c| !ours.contains(c)).collect();
    let only_ours: Vec<_> = ours.iter().filter(|c| !java.contains(c)).collect();
    assert!(
        only_java.is_empty() && only_ours.is_empty(),
        "code table differs from Java's.\nJava only: {only_java:?}\nours only: {only_ours:?}"
    );
    assert_eq!(ours.len(), java.len());
}

mod scram {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use kafka_client::config::{SaslCredentials, SaslMechanism, Secret};
    use kafka_client::rng::OsRandom;
    use kafka_client::sasl::{SaslError, SaslSession};
    use std::io::{BufRead, BufReader};

    /// Authenticates our client against Kafka's Java `ScramSaslServer` holding `user`/`stored`.
    /// Returns the client's result and the server's last line.
    fn exchange(
        mechanism: SaslMechanism,
        user: &str,
        stored: &str,
        client_password: &str,
    ) -> (Result<(), SaslError>, String) {
        let mut child = jvm::command("ScramServer")
            .args([mechanism.wire_name(), user, stored])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("java must be installed to run this test");
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut read_line = || {
            let mut l = String::new();
            stdout.read_line(&mut l).expect("read from java");
            assert!(!l.is_empty(), "java ScramServer exited early");
            l.trim_end().to_string()
        };
        let creds = SaslCredentials {
            mechanism,
            authzid: String::new(),
            username: user.to_string(),
            password: Secret::new(client_password),
        };
        let mut session = SaslSession::new(&creds);
        let mut msg = session.start(&mut OsRandom).expect("client-first");
        let result = loop {
            writeln!(stdin, "{}", B64.encode(&msg)).unwrap();
            stdin.flush().unwrap();
            let line = read_line();
            let Some(reply) = line.strip_prefix("OK ") else {
                break (Ok(()), line);
            };
            match session.step(&B64.decode(reply).unwrap()) {
                Ok(Some(next)) => msg = next,
                Ok(None) => break (Ok(()), read_line()),
                Err(e) => break (Err(e), line),
            }
        };
        drop(stdin);
        child.wait().expect("java exits");
        if result.0.is_ok() && result.1.starts_with("COMPLETE") {
            assert!(session.is_complete());
        }
        result
    }

    #[test]
    fn our_scram_client_authenticates_with_javas_server() {
        for mech in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
            let (res, last) = exchange(mech, "alice", "pässwörd", "pässwörd");
            assert_eq!(res, Ok(()), "{mech:?}");
            assert_eq!(last, "COMPLETE alice", "{mech:?}");
        }
        // A name that needs escaping (',' and '=').
        let (res, last) = exchange(SaslMechanism::ScramSha256, "a,b=c", "pw", "pw");
        assert_eq!(res, Ok(()));
        assert_eq!(last, "COMPLETE a,b=c");
    }

    #[test]
    fn javas_server_rejects_a_wrong_password() {
        let (res, last) = exchange(SaslMechanism::ScramSha512, "alice", "right", "wrong");
        assert_eq!(res, Ok(()), "the client saw no server-final");
        assert!(last.starts_with("ERR "), "{last}");
    }
}

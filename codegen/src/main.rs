//! Generates `kafka-wire`'s message types from Apache Kafka's JSON message schemas.
//!
//! The schemas are read from the `kafka-clients` jar of the pinned broker version (fetched into the
//! testkit cache if missing); they are not copied into the repository. Output:
//! `kafka-wire/src/messages/*.rs`, `kafka-wire/src/api_key.rs` and the test value generators in
//! `kafka-wire/tests/it/gen_arb.rs`, all formatted with rustfmt.
//!
//! ```text
//! cargo run -p codegen            # regenerate
//! cargo run -p codegen -- --check # exit 1 if the checked-in files are stale
//! cargo run -p codegen -- --jar path/to/kafka-clients.jar
//! ```
#![forbid(unsafe_code)]

mod gen;
mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};

use gen::{api_name, module_name, Ctx};
use schema::{parse_message, screaming, snake, Message};

const ALLOWS: &str =
    "#![allow(unused_imports, unused_variables, unused_mut, unused_parens, clippy::all)]\n";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("codegen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut check = false;
    let mut jar: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--check" => check = true,
            "--jar" => jar = Some(args.next().context("--jar needs a path")?.into()),
            "-h" | "--help" => {
                println!("usage: codegen [--check] [--jar kafka-clients.jar]");
                return Ok(ExitCode::SUCCESS);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let version = testkit::dist::kafka_version();
    let jar = match jar {
        Some(j) => j,
        None => testkit::dist::kafka_clients_jar(&version)?,
    };
    let jar_name = jar
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let messages = read_schemas(&jar)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = generate(&messages, &jar_name)?;

    let mut stale = Vec::new();
    for (rel, text) in &files {
        let path = root.join(rel);
        let formatted = rustfmt(text, &root)?;
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() != Some(formatted.as_str()) {
            if check {
                stale.push(rel.clone());
            } else {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&path, formatted).with_context(|| path.display().to_string())?;
            }
        }
    }
    // Files in the generated folder that we no longer produce.
    let msg_dir = root.join("kafka-wire/src/messages");
    if let Ok(rd) = std::fs::read_dir(&msg_dir) {
        for entry in rd.flatten() {
            let rel = format!(
                "kafka-wire/src/messages/{}",
                entry.file_name().to_string_lossy()
            );
            if !files.contains_key(&rel) {
                if check {
                    stale.push(rel);
                } else {
                    std::fs::remove_file(entry.path())?;
                }
            }
        }
    }
    if check {
        if stale.is_empty() {
            println!("codegen: {} generated files are up to date", files.len());
            return Ok(ExitCode::SUCCESS);
        }
        for s in &stale {
            eprintln!("codegen: stale: {s}");
        }
        eprintln!("codegen: run `cargo run -p codegen` to regenerate");
        return Ok(ExitCode::FAILURE);
    }
    println!("codegen: wrote {} files from {jar_name}", files.len());
    Ok(ExitCode::SUCCESS)
}

fn read_schemas(jar: &Path) -> Result<Vec<Message>> {
    let file = std::fs::File::open(jar).with_context(|| jar.display().to_string())?;
    let mut zip = zip::ZipArchive::new(file)?;
    let mut names: Vec<String> = zip
        .file_names()
        .filter(|n| n.starts_with("common/message/") && n.ends_with(".json"))
        .map(str::to_string)
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let mut text = String::new();
        zip.by_name(&n)?.read_to_string(&mut text)?;
        out.push(parse_message(&text).with_context(|| n.clone())?);
    }
    if out.is_empty() {
        bail!("no schemas under common/message/ in {}", jar.display());
    }
    Ok(out)
}

fn rustfmt(text: &str, dir: &Path) -> Result<String> {
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running rustfmt")?;
    let mut stdin = child.stdin.take().context("rustfmt stdin")?;
    let input = text.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("rustfmt writer panicked"))??;
    if !out.status.success() {
        bail!(
            "rustfmt failed: {}\n--- input ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            text.lines().take(40).collect::<Vec<_>>().join("\n")
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

struct Module<'a> {
    name: String,
    msgs: Vec<&'a Message>,
}

fn generate(messages: &[Message], jar_name: &str) -> Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    // Modules: request/response pairs and lone data structures; headers are hand-written.
    let mut modules: BTreeMap<String, Module> = BTreeMap::new();
    for m in messages {
        if m.valid.is_none() || m.kind == "header" {
            continue;
        }
        let key = if m.kind == "data" {
            snake(&m.name)
        } else {
            module_name(&m.name)
        };
        modules
            .entry(key.clone())
            .or_insert_with(|| Module {
                name: key,
                msgs: vec![],
            })
            .msgs
            .push(m);
    }
    let header = |srcs: &[&Message]| -> String {
        let list: Vec<String> = srcs
            .iter()
            .map(|m| format!("common/message/{}.json", m.name))
            .collect();
        format!(
            "// @generated by codegen from {} in {jar_name}. DO NOT EDIT.\n// Regenerate with `cargo run -p codegen`.\n",
            list.join(", ")
        )
    };

    let mut arb = String::new();
    arb.push_str(&header(&[]).replace("from  in", "from the schemas in"));
    arb.push_str("//! Random valid values of every generated message, for property tests.\n");
    arb.push_str("#![allow(non_snake_case, unused_mut, unused_variables, clippy::all)]\n\n");
    arb.push_str("use crate::support::{dedup_by_key, roundtrip, Case, Kind, Rng};\n\n");
    let mut cases = String::new();

    for module in modules.values() {
        // Struct names defined by more than one message of the module get the message's prefix.
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &module.msgs {
            for s in m.structs.iter().skip(1) {
                *count.entry(s.name.as_str()).or_default() += 1;
            }
        }
        let renamed: BTreeSet<String> = count
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(n, _)| n.to_string())
            .collect();
        let mut out = header(&module.msgs);
        let _ = writeln!(
            out,
            "//! {}.\n{ALLOWS}\nuse bytes::{{BufMut, Bytes}};\n\nuse crate::api_key::ApiKey;\nuse crate::codec::*;\nuse crate::error::{{DecodeError, EncodeError}};\n",
            module
                .msgs
                .iter()
                .map(|m| format!("`{}`", m.name))
                .collect::<Vec<_>>()
                .join(" and ")
        );
        let _ = writeln!(
            arb,
            "pub mod {} {{\nuse super::*;\nuse kafka_wire::messages::{}::*;\n",
            module.name, module.name
        );
        for m in &module.msgs {
            let ctx = Ctx::new(m, &renamed).context("valid versions")?;
            for (i, s) in m.structs.iter().enumerate() {
                ctx.emit_struct(&mut out, s, i == 0);
                ctx.emit_arb_struct(&mut arb, s);
            }
            if m.kind == "request" {
                let resp = m.name.replace("Request", "Response");
                if !module.msgs.iter().any(|x| x.name == resp) {
                    bail!("{} has no response", m.name);
                }
                ctx.emit_request_impl(&mut out, &resp);
            }
            let valid = ctx.valid;
            let kind = match m.kind.as_str() {
                "request" => "Request",
                "response" => "Response",
                _ => "Data",
            };
            let _ = writeln!(
                cases,
                "Case {{ name: {:?}, api_key: {:?}, kind: Kind::{kind}, min: {}, max: {}, roundtrip: |r, v| roundtrip(&{}::{}(r, v), v), default_roundtrip: |v| roundtrip(&kafka_wire::messages::{}::default(), v) }},",
                m.name, m.api_key, valid.lo, valid.hi, module.name, m.name, m.name
            );
        }
        arb.push_str("}\n\n");
        files.insert(format!("kafka-wire/src/messages/{}.rs", module.name), out);
    }
    let _ = write!(
        arb,
        "/// Every generated message with its versions.\npub fn cases() -> Vec<Case> {{\nvec![\n{cases}]\n}}\n"
    );
    files.insert("kafka-wire/tests/it/gen_arb.rs".into(), arb);

    files.insert(
        "kafka-wire/src/messages/mod.rs".into(),
        emit_mod(
            &modules,
            messages,
            &header(&[]).replace("from  in", "from the schemas in"),
        ),
    );
    files.insert(
        "kafka-wire/src/api_key.rs".into(),
        emit_api_keys(
            messages,
            &header(&[]).replace("from  in", "from the schemas in"),
        ),
    );
    Ok(files)
}

fn emit_mod(modules: &BTreeMap<String, Module>, messages: &[Message], header: &str) -> String {
    let mut out = String::from(header);
    out.push_str(
        "//! Every message of the Kafka protocol, one module per request/response pair (and one per\n\
         //! data structure), with the top-level types re-exported here.\n\
         //!\n\
         //! Nested structures keep their schema names inside their module; where a request and its\n\
         //! response both define a structure of the same name, each is prefixed with its message\n\
         //! name (`VoteRequestTopicData`, `VoteResponseTopicData`).\n",
    );
    out.push_str(ALLOWS);
    out.push_str("\nuse bytes::{BufMut, Bytes};\n\nuse crate::api_key::ApiKey;\nuse crate::codec::{Encode, Decode};\nuse crate::error::{DecodeError, EncodeError};\n\n");
    for (name, m) in modules {
        let _ = writeln!(out, "pub mod {name};");
        let tops: Vec<&str> = m.msgs.iter().map(|x| x.name.as_str()).collect();
        let _ = writeln!(out, "pub use {name}::{{{}}};", tops.join(", "));
    }
    let reqs: Vec<(&Message, String)> = modules
        .values()
        .flat_map(|m| m.msgs.iter())
        .filter(|m| m.kind == "request")
        .map(|m| (*m, api_name(&m.name)))
        .collect();
    let mut reqs = reqs;
    reqs.sort_by_key(|(m, _)| m.api_key);

    for (kind, enum_name, suffix, doc) in [
        ("request", "RequestBody", "Request", "A request of any API."),
        (
            "response",
            "ResponseBody",
            "Response",
            "A response of any API.",
        ),
    ] {
        let _ = writeln!(
            out,
            "\n/// {doc}\n#[derive(Debug, Clone, PartialEq)]\npub enum {enum_name} {{"
        );
        for (_, api) in &reqs {
            let _ = writeln!(out, "{api}({api}{suffix}),");
        }
        out.push_str("}\n\n");
        let _ = writeln!(out, "impl {enum_name} {{\n/// The API key of this message.\npub fn api_key(&self) -> ApiKey {{\nmatch self {{");
        for (_, api) in &reqs {
            let _ = writeln!(out, "{enum_name}::{api}(_) => ApiKey::{},", screaming(api));
        }
        out.push_str("}\n}\n\n/// Writes the body as `version`.\npub fn encode<B: BufMut>(&self, buf: &mut B, version: i16) -> Result<(), EncodeError> {\nmatch self {\n");
        for (_, api) in &reqs {
            let _ = writeln!(out, "{enum_name}::{api}(x) => x.encode(buf, version),");
        }
        out.push_str("}\n}\n\n/// The encoded size of the body as `version`.\npub fn encoded_len(&self, version: i16) -> Result<usize, EncodeError> {\nmatch self {\n");
        for (_, api) in &reqs {
            let _ = writeln!(out, "{enum_name}::{api}(x) => x.encoded_len(version),");
        }
        out.push_str("}\n}\n}\n\n");
        for (_, api) in &reqs {
            let _ = writeln!(
                out,
                "impl From<{api}{suffix}> for {enum_name} {{\nfn from(x: {api}{suffix}) -> Self {{\n{enum_name}::{api}(x)\n}}\n}}\n"
            );
        }
        let fname = format!("decode_{kind}");
        let _ = writeln!(
            out,
            "/// Decodes a {kind} body of `api_key` and `version` (the header already read).\n\
             pub fn {fname}(api_key: ApiKey, version: i16, buf: &mut Bytes) -> Result<{enum_name}, DecodeError> {{\nOk(match api_key {{"
        );
        for (_, api) in &reqs {
            let _ = writeln!(
                out,
                "ApiKey::{} => {enum_name}::{api}({api}{suffix}::decode(buf, version)?),",
                screaming(api)
            );
        }
        out.push_str("_ => return Err(DecodeError::UnsupportedVersion { api_key: api_key.0, version }),\n})\n}\n");
    }

    out.push_str("\n/// Every API this crate can encode and decode: (key, min version, max version).\npub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[\n");
    for (m, api) in &reqs {
        if let Some(v) = m.valid {
            let _ = writeln!(out, "(ApiKey::{}, {}, {}),", screaming(api), v.lo, v.hi);
        }
    }
    out.push_str("];\n\n");
    // Header versions by key, for code that handles any API.
    out.push_str("/// The request and response header versions of `api_key` at `version`, if supported.\npub fn header_versions(api_key: ApiKey, version: i16) -> Option<(i16, i16)> {\nuse crate::codec::Request;\nfn hv<R: Request>(v: i16) -> Option<(i16, i16)> {\n(R::MIN_VERSION..=R::MAX_VERSION).contains(&v).then(|| (R::request_header_version(v), R::response_header_version(v)))\n}\nmatch api_key {\n");
    for (_, api) in &reqs {
        let _ = writeln!(
            out,
            "ApiKey::{} => hv::<{api}Request>(version),",
            screaming(api)
        );
    }
    out.push_str("_ => None,\n}\n}\n");
    let _ = messages;
    out
}

fn emit_api_keys(messages: &[Message], header: &str) -> String {
    let mut keys: BTreeMap<i16, String> = BTreeMap::new();
    for m in messages {
        if let (Some(k), "request") = (m.api_key, m.kind.as_str()) {
            keys.insert(k, api_name(&m.name));
        }
    }
    let mut out = String::from(header);
    out.push_str(
        "//! API keys: a newtype over the wire value, so keys this crate does not know survive.\n\n\
         use std::fmt;\n\n\
         /// A Kafka API key. Unknown values are kept as they are.\n\
         #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]\n\
         pub struct ApiKey(pub i16);\n\nimpl ApiKey {\n",
    );
    for (k, name) in &keys {
        let _ = writeln!(
            out,
            "/// `{name}` ({k}).\npub const {}: ApiKey = ApiKey({k});",
            screaming(name)
        );
    }
    out.push_str("\n/// Every API key the schemas define, including ones removed from Kafka 4.x brokers.\npub const ALL: &'static [ApiKey] = &[\n");
    for name in keys.values() {
        let _ = writeln!(out, "ApiKey::{},", screaming(name));
    }
    out.push_str("];\n\n/// The API's name as Kafka spells it, if known.\npub fn name(self) -> Option<&'static str> {\nSome(match self.0 {\n");
    for (k, name) in &keys {
        let _ = writeln!(out, "{k} => {name:?},");
    }
    out.push_str(
        "_ => return None,\n})\n}\n}\n\n\
         impl fmt::Display for ApiKey {\nfn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {\nmatch self.name() {\nSome(n) => f.write_str(n),\nNone => write!(f, \"ApiKey({})\", self.0),\n}\n}\n}\n\n\
         impl fmt::Debug for ApiKey {\nfn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {\nmatch self.name() {\nSome(n) => write!(f, \"{n}({})\", self.0),\nNone => write!(f, \"ApiKey({})\", self.0),\n}\n}\n}\n\n\
         impl From<i16> for ApiKey {\nfn from(v: i16) -> Self {\nApiKey(v)\n}\n}\n\n\
         impl From<ApiKey> for i16 {\nfn from(k: ApiKey) -> Self {\nk.0\n}\n}\n",
    );
    out
}

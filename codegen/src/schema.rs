//! Reading Apache Kafka's JSON message schemas into a small model.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// An inclusive version range; `hi == i16::MAX` means "and later".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub lo: i16,
    pub hi: i16,
}

impl Range {
    pub fn parse(s: &str) -> Result<Option<Range>> {
        let s = s.trim();
        if s == "none" {
            return Ok(None);
        }
        if let Some(lo) = s.strip_suffix('+') {
            return Ok(Some(Range {
                lo: lo.trim().parse()?,
                hi: i16::MAX,
            }));
        }
        if let Some((a, b)) = s.split_once('-') {
            return Ok(Some(Range {
                lo: a.trim().parse()?,
                hi: b.trim().parse()?,
            }));
        }
        let v: i16 = s.parse().with_context(|| format!("version range {s:?}"))?;
        Ok(Some(Range { lo: v, hi: v }))
    }

    /// Intersection with another range.
    pub fn and(self, o: Range) -> Option<Range> {
        let lo = self.lo.max(o.lo);
        let hi = self.hi.min(o.hi);
        (lo <= hi).then_some(Range { lo, hi })
    }

    /// True if `self` contains all of `o`.
    pub fn covers(self, o: Range) -> bool {
        self.lo <= o.lo && self.hi >= o.hi
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U16,
    U32,
    F64,
    Uuid,
    Str,
    Bytes,
    Records,
    /// A struct, by its schema name.
    Struct(String),
    Array(Box<Ty>),
}

impl Ty {
    fn parse(s: &str) -> Result<Ty> {
        if let Some(inner) = s.strip_prefix("[]") {
            return Ok(Ty::Array(Box::new(Ty::parse(inner)?)));
        }
        Ok(match s {
            "bool" => Ty::Bool,
            "int8" => Ty::I8,
            "int16" => Ty::I16,
            "int32" => Ty::I32,
            "int64" => Ty::I64,
            "uint16" => Ty::U16,
            "uint32" => Ty::U32,
            "float64" => Ty::F64,
            "uuid" => Ty::Uuid,
            "string" => Ty::Str,
            "bytes" => Ty::Bytes,
            "records" => Ty::Records,
            s if s.starts_with(|c: char| c.is_ascii_uppercase()) => Ty::Struct(s.to_string()),
            other => bail!("unknown type {other}"),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
    pub versions: Option<Range>,
    pub nullable: Option<Range>,
    pub tag: Option<u32>,
    pub tagged: Option<Range>,
    pub default: Option<String>,
    pub ignorable: bool,
    pub map_key: bool,
}

#[derive(Debug, Clone)]
pub struct Struct {
    pub name: String,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub kind: String,
    pub name: String,
    pub api_key: Option<i16>,
    pub valid: Option<Range>,
    pub flexible: Option<Range>,
    /// The top-level struct first, then nested and common structs in schema order.
    pub structs: Vec<Struct>,
}

/// Removes `//` comments (the schemas carry line comments, and none of their strings hold `//`
/// outside comments, but we still skip string contents to be safe).
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut cut = line.len();
        for (i, c) in line.char_indices() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            }
            if !in_str && c == '/' && prev == '/' {
                cut = i - 1;
                break;
            }
            prev = c;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn parse_field(v: &Value, out_structs: &mut Vec<Struct>) -> Result<Field> {
    let name = str_of(v, "name").ok_or_else(|| anyhow!("field without name"))?;
    let ty_s = str_of(v, "type").ok_or_else(|| anyhow!("field {name} without type"))?;
    let ty = Ty::parse(ty_s)?;
    let versions = Range::parse(str_of(v, "versions").unwrap_or("none"))?;
    let nullable = match str_of(v, "nullableVersions") {
        Some(s) => Range::parse(s)?,
        None => None,
    };
    let tagged = match str_of(v, "taggedVersions") {
        Some(s) => Range::parse(s)?,
        None => None,
    };
    let tag = v.get("tag").and_then(Value::as_u64).map(|t| t as u32);
    let default = match v.get("default") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => bail!("field {name}: odd default {other}"),
    };
    let ignorable = v.get("ignorable").and_then(Value::as_bool).unwrap_or(false);
    let map_key = v.get("mapKey").and_then(Value::as_bool).unwrap_or(false);
    if let Some(fields) = v.get("fields").and_then(Value::as_array) {
        let sname = match &ty {
            Ty::Struct(s) => s.clone(),
            Ty::Array(inner) => match &**inner {
                Ty::Struct(s) => s.clone(),
                _ => bail!("field {name} has fields but type {ty_s}"),
            },
            _ => bail!("field {name} has fields but type {ty_s}"),
        };
        let idx = out_structs.len();
        out_structs.push(Struct {
            name: sname.clone(),
            fields: vec![],
        });
        let mut fs = Vec::new();
        for f in fields {
            fs.push(parse_field(f, out_structs)?);
        }
        out_structs[idx].fields = fs;
    }
    Ok(Field {
        name: name.to_string(),
        ty,
        versions,
        nullable,
        tag,
        tagged,
        default,
        ignorable,
        map_key,
    })
}

pub fn parse_message(text: &str) -> Result<Message> {
    let v: Value = serde_json::from_str(&strip_comments(text))?;
    let kind = str_of(&v, "type").unwrap_or("").to_string();
    let name = str_of(&v, "name")
        .ok_or_else(|| anyhow!("message without name"))?
        .to_string();
    let api_key = v.get("apiKey").and_then(Value::as_i64).map(|k| k as i16);
    let valid = Range::parse(str_of(&v, "validVersions").unwrap_or("none"))?;
    let flexible = Range::parse(str_of(&v, "flexibleVersions").unwrap_or("none"))?;
    let mut structs = vec![Struct {
        name: name.clone(),
        fields: vec![],
    }];
    let mut top = Vec::new();
    for f in v
        .get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        top.push(parse_field(f, &mut structs).with_context(|| name.clone())?);
    }
    structs[0].fields = top;
    for c in v
        .get("commonStructs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let cname = str_of(c, "name").ok_or_else(|| anyhow!("common struct without name"))?;
        let idx = structs.len();
        structs.push(Struct {
            name: cname.to_string(),
            fields: vec![],
        });
        let mut fs = Vec::new();
        for f in c
            .get("fields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            fs.push(parse_field(f, &mut structs)?);
        }
        structs[idx].fields = fs;
    }
    // A struct name defined twice in one schema must be defined the same way; keep the first.
    let mut seen = BTreeMap::new();
    structs.retain(|s| seen.insert(s.name.clone(), ()).is_none());
    Ok(Message {
        kind,
        name,
        api_key,
        valid,
        flexible,
        structs,
    })
}

/// `PascalCase` to `snake_case`, keeping acronyms together.
pub fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// `PascalCase` to `SCREAMING_SNAKE_CASE`.
pub fn screaming(name: &str) -> String {
    snake(name).to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(snake("ApiVersionsResponse"), "api_versions_response");
        assert_eq!(snake("ZkMigrationReady"), "zk_migration_ready");
        assert_eq!(snake("KRaftVersionRecord"), "k_raft_version_record");
        assert_eq!(snake("TopicID"), "topic_id");
        assert_eq!(screaming("ApiVersions"), "API_VERSIONS");
    }

    #[test]
    fn ranges() {
        assert_eq!(Range::parse("none").unwrap(), None);
        assert_eq!(
            Range::parse("3+").unwrap(),
            Some(Range {
                lo: 3,
                hi: i16::MAX
            })
        );
        assert_eq!(Range::parse("0-2").unwrap(), Some(Range { lo: 0, hi: 2 }));
        assert_eq!(Range::parse("5").unwrap(), Some(Range { lo: 5, hi: 5 }));
        assert!(Range::parse("x").is_err());
    }

    #[test]
    fn comments_are_stripped_outside_strings() {
        let t = "// header\n{ \"a\": \"x//y\" } // tail\n";
        let v: Value = serde_json::from_str(&strip_comments(t)).unwrap();
        assert_eq!(v["a"], "x//y");
    }
}

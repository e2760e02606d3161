//! Emitting Rust source for the message model.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::schema::{screaming, snake, Field, Message, Range, Struct, Ty};

/// A version condition, simplified against the message's valid versions.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Always,
    Never,
    Expr(String),
}

impl Cond {
    fn of(r: Option<Range>, valid: Range) -> Cond {
        let Some(r) = r else { return Cond::Never };
        let Some(x) = r.and(valid) else {
            return Cond::Never;
        };
        if x.covers(valid) {
            return Cond::Always;
        }
        if x.lo <= valid.lo {
            Cond::Expr(format!("version <= {}", x.hi))
        } else if x.hi >= valid.hi {
            Cond::Expr(format!("version >= {}", x.lo))
        } else if x.lo == x.hi {
            Cond::Expr(format!("version == {}", x.lo))
        } else {
            Cond::Expr(format!("({}..={}).contains(&version)", x.lo, x.hi))
        }
    }

    fn bare(&self) -> String {
        match self {
            Cond::Always => "true".into(),
            Cond::Never => "false".into(),
            Cond::Expr(e) => e.clone(),
        }
    }

    fn expr(&self) -> String {
        match self {
            Cond::Always => "true".into(),
            Cond::Never => "false".into(),
            Cond::Expr(e) => format!("({e})"),
        }
    }
}

fn ident(name: &str) -> String {
    let s = snake(name);
    match s.as_str() {
        "type" | "match" | "ref" | "mod" | "fn" | "struct" | "enum" | "use" | "in" | "as"
        | "where" | "loop" | "move" | "box" | "final" | "async" | "await" | "dyn" | "try"
        | "static" | "const" | "crate" | "super" | "trait" | "self" | "impl" | "return" => {
            format!("{s}_")
        }
        _ => s,
    }
}

/// The module name of a message pair.
pub fn module_name(msg_name: &str) -> String {
    let base = msg_name
        .strip_suffix("Request")
        .or_else(|| msg_name.strip_suffix("Response"))
        .unwrap_or(msg_name);
    snake(base)
}

/// The variant name of an API (`ProduceRequest` -> `Produce`).
pub fn api_name(msg_name: &str) -> String {
    msg_name
        .strip_suffix("Request")
        .or_else(|| msg_name.strip_suffix("Response"))
        .unwrap_or(msg_name)
        .to_string()
}

/// One message with the Rust names of its structs resolved.
pub struct Ctx<'a> {
    pub msg: &'a Message,
    pub valid: Range,
    /// Schema struct name -> Rust name.
    pub names: BTreeMap<String, String>,
    pub structs: BTreeMap<String, &'a Struct>,
}

impl<'a> Ctx<'a> {
    pub fn new(msg: &'a Message, renamed: &BTreeSet<String>) -> Option<Ctx<'a>> {
        let valid = msg.valid?;
        let mut names = BTreeMap::new();
        let mut structs = BTreeMap::new();
        for (i, s) in msg.structs.iter().enumerate() {
            let rust = if i > 0 && renamed.contains(&s.name) {
                format!("{}{}", msg.name, s.name)
            } else {
                s.name.clone()
            };
            names.insert(s.name.clone(), rust);
            structs.insert(s.name.clone(), s);
        }
        Some(Ctx {
            msg,
            valid,
            names,
            structs,
        })
    }

    fn flexible(&self) -> Cond {
        Cond::of(self.msg.flexible, self.valid)
    }

    fn has_flexible(&self) -> bool {
        self.flexible() != Cond::Never
    }

    fn sname(&self, schema: &str) -> String {
        self.names
            .get(schema)
            .cloned()
            .unwrap_or_else(|| schema.to_string())
    }

    fn base_ty(&self, ty: &Ty) -> String {
        match ty {
            Ty::Bool => "bool".into(),
            Ty::I8 => "i8".into(),
            Ty::I16 => "i16".into(),
            Ty::I32 => "i32".into(),
            Ty::I64 => "i64".into(),
            Ty::U16 => "u16".into(),
            Ty::U32 => "u32".into(),
            Ty::F64 => "f64".into(),
            Ty::Uuid => "Uuid".into(),
            Ty::Str => "KString".into(),
            Ty::Bytes | Ty::Records => "Bytes".into(),
            Ty::Struct(s) => self.sname(s),
            Ty::Array(inner) => format!("Vec<{}>", self.base_ty(inner)),
        }
    }

    fn is_option(f: &Field) -> bool {
        f.ty == Ty::Records
            || (f.nullable.is_some()
                && matches!(f.ty, Ty::Str | Ty::Bytes | Ty::Array(_) | Ty::Struct(_)))
    }

    fn field_ty(&self, f: &Field) -> String {
        let b = self.base_ty(&f.ty);
        if Self::is_option(f) {
            format!("Option<{b}>")
        } else {
            b
        }
    }

    fn base_default(&self, ty: &Ty, default: Option<&str>) -> String {
        let d = default.map(str::trim).filter(|d| !d.is_empty());
        let int = |d: Option<&str>| -> String {
            match d {
                None => "0".into(),
                Some(d) => {
                    let (neg, body) = match d.strip_prefix('-') {
                        Some(b) => (true, b),
                        None => (false, d),
                    };
                    let v: i128 = if let Some(h) = body.strip_prefix("0x") {
                        i128::from_str_radix(h, 16).unwrap_or(0)
                    } else {
                        body.parse().unwrap_or(0)
                    };
                    let v = if neg { -v } else { v };
                    v.to_string()
                }
            }
        };
        match ty {
            Ty::Bool => match d {
                Some(d) if d.eq_ignore_ascii_case("true") => "true".into(),
                _ => "false".into(),
            },
            Ty::I8 | Ty::I16 | Ty::I32 | Ty::I64 | Ty::U16 | Ty::U32 => int(d),
            Ty::F64 => match d {
                None => "0.0".into(),
                Some(d) => {
                    let v: f64 = d.parse().unwrap_or(0.0);
                    format!("{v:?}")
                }
            },
            Ty::Uuid => "Uuid::ZERO".into(),
            Ty::Str => match d {
                None => "KString::new()".into(),
                Some(d) => format!("KString::from_static({d:?})"),
            },
            Ty::Bytes | Ty::Records => "Bytes::new()".into(),
            Ty::Struct(s) => format!("{}::default()", self.sname(s)),
            Ty::Array(_) => "Vec::new()".into(),
        }
    }

    fn default_expr(&self, f: &Field) -> String {
        let d = f.default.as_deref();
        if Self::is_option(f) {
            if d == Some("null") {
                return "None".into();
            }
            if f.ty == Ty::Records {
                let nullable_at_max = f
                    .nullable
                    .is_some_and(|n| n.lo <= self.valid.hi && n.hi >= self.valid.hi);
                if nullable_at_max {
                    return "None".into();
                }
            }
            return format!("Some({})", self.base_default(&f.ty, d));
        }
        self.base_default(&f.ty, d)
    }

    fn what(&self, s: &Struct, f: &Field) -> String {
        format!("\"{}.{}\"", self.sname(&s.name), ident(&f.name))
    }

    // --- encode ---------------------------------------------------------------------------

    /// Statements writing the non-optional value at place `p` of type `ty`.
    fn enc_value(&self, ty: &Ty, p: &str, w: &str, depth: usize) -> String {
        match ty {
            Ty::Bool => format!("put_bool(buf, {p});"),
            Ty::I8 => format!("put_i8(buf, {p});"),
            Ty::I16 => format!("put_i16(buf, {p});"),
            Ty::I32 => format!("put_i32(buf, {p});"),
            Ty::I64 => format!("put_i64(buf, {p});"),
            Ty::U16 => format!("put_u16(buf, {p});"),
            Ty::U32 => format!("put_u32(buf, {p});"),
            Ty::F64 => format!("put_f64(buf, {p});"),
            Ty::Uuid => format!("put_uuid(buf, &{p});"),
            Ty::Str => format!("put_string(buf, &{p}, flexible, {w})?;"),
            Ty::Bytes | Ty::Records => format!("put_bytes(buf, &{p}, flexible, {w})?;"),
            Ty::Struct(_) => format!("{p}.encode(buf, version)?;"),
            Ty::Array(inner) => {
                let e = format!("e{depth}");
                format!(
                    "put_array_len(buf, Some({p}.len()), flexible, {w})?;\nfor {e} in {p}.iter() {{\n{}\n}}",
                    self.enc_value(inner, &format!("(*{e})"), w, depth + 1)
                )
            }
        }
    }

    fn enc_field(&self, f: &Field, p: &str, w: &str) -> String {
        if !Self::is_option(f) {
            return self.enc_value(&f.ty, p, w, 0);
        }
        let ncc = Cond::of(f.nullable, self.valid);
        let nc = ncc.expr();
        let null_check = if ncc == Cond::Always {
            String::new()
        } else {
            format!("if !{nc} {{ return Err(EncodeError::NullNotAllowed {{ what: {w}, version }}); }}\n")
        };
        match &f.ty {
            Ty::Str => format!(
                "put_nullable_string(buf, {p}.as_deref(), flexible, {}, version, {w})?;", ncc.bare()
            ),
            Ty::Bytes | Ty::Records => format!(
                "put_nullable_bytes(buf, {p}.as_deref(), flexible, {}, version, {w})?;", ncc.bare()
            ),
            Ty::Array(_) => format!(
                "match &{p} {{\nNone => {{\n{null_check}put_array_len(buf, None, flexible, {w})?;\n}}\nSome(v) => {{\n{}\n}}\n}}",
                self.enc_value(&f.ty, "(*v)", w, 0)
            ),
            Ty::Struct(_) => format!(
                "match &{p} {{\nNone => {{\n{null_check}put_i8(buf, -1);\n}}\nSome(v) => {{\nput_i8(buf, 1);\nv.encode(buf, version)?;\n}}\n}}"
            ),
            _ => unreachable!(),
        }
    }

    // --- length ---------------------------------------------------------------------------

    fn fixed_size(ty: &Ty) -> Option<usize> {
        Some(match ty {
            Ty::Bool | Ty::I8 => 1,
            Ty::I16 | Ty::U16 => 2,
            Ty::I32 | Ty::U32 => 4,
            Ty::I64 | Ty::F64 => 8,
            Ty::Uuid => 16,
            _ => return None,
        })
    }

    fn len_value(&self, ty: &Ty, p: &str, depth: usize) -> String {
        if let Some(k) = Self::fixed_size(ty) {
            return format!("n += {k};");
        }
        match ty {
            Ty::Str => format!("n += string_len(&{p}, flexible);"),
            Ty::Bytes | Ty::Records => format!("n += bytes_len(&{p}, flexible);"),
            Ty::Struct(_) => format!("n += {p}.encoded_len(version)?;"),
            Ty::Array(inner) => {
                let head = format!("n += array_len_len(Some({p}.len()), flexible);");
                if let Some(k) = Self::fixed_size(inner) {
                    format!("{head}\nn += {p}.len() * {k};")
                } else {
                    let e = format!("e{depth}");
                    format!(
                        "{head}\nfor {e} in {p}.iter() {{\n{}\n}}",
                        self.len_value(inner, &format!("(*{e})"), depth + 1)
                    )
                }
            }
            _ => unreachable!(),
        }
    }

    fn len_field(&self, f: &Field, p: &str) -> String {
        if !Self::is_option(f) {
            return self.len_value(&f.ty, p, 0);
        }
        match &f.ty {
            Ty::Str => format!("n += nullable_string_len({p}.as_deref(), flexible);"),
            Ty::Bytes | Ty::Records => format!("n += nullable_bytes_len({p}.as_deref(), flexible);"),
            Ty::Array(_) => format!(
                "match &{p} {{\nNone => n += array_len_len(None, flexible),\nSome(v) => {{\n{}\n}}\n}}",
                self.len_value(&f.ty, "(*v)", 0)
            ),
            Ty::Struct(_) => {
                format!("n += 1;\nif let Some(v) = &{p} {{\nn += v.encoded_len(version)?;\n}}")
            }
            _ => unreachable!(),
        }
    }

    // --- decode ---------------------------------------------------------------------------

    fn dec_value(&self, ty: &Ty, b: &str, w: &str) -> String {
        match ty {
            Ty::Bool => format!("get_bool({b}, {w})?"),
            Ty::I8 => format!("get_i8({b}, {w})?"),
            Ty::I16 => format!("get_i16({b}, {w})?"),
            Ty::I32 => format!("get_i32({b}, {w})?"),
            Ty::I64 => format!("get_i64({b}, {w})?"),
            Ty::U16 => format!("get_u16({b}, {w})?"),
            Ty::U32 => format!("get_u32({b}, {w})?"),
            Ty::F64 => format!("get_f64({b}, {w})?"),
            Ty::Uuid => format!("get_uuid({b}, {w})?"),
            Ty::Str => format!("get_string({b}, flexible, {w})?"),
            Ty::Bytes | Ty::Records => format!("get_bytes({b}, flexible, {w})?"),
            Ty::Struct(s) => format!("{}::decode({b}, version)?", self.sname(s)),
            Ty::Array(inner) => format!(
                "{{\nlet count = get_array_len({b}, flexible, {}, {w})?.ok_or(DecodeError::UnexpectedNull {{ what: {w} }})?;\n{}\n}}",
                Self::fixed_size(inner).unwrap_or(1),
                self.dec_elems(inner, b, w)
            ),
        }
    }

    fn dec_elems(&self, inner: &Ty, b: &str, w: &str) -> String {
        format!(
            "let mut v = Vec::with_capacity(initial_capacity(count));\nfor _ in 0..count {{\nv.push({});\n}}\nv",
            self.dec_value(inner, b, w)
        )
    }

    fn dec_field(&self, f: &Field, b: &str, w: &str) -> String {
        if !Self::is_option(f) {
            return self.dec_value(&f.ty, b, w);
        }
        let nc = Cond::of(f.nullable, self.valid);
        let check = |x: &str| -> String {
            match &nc {
                Cond::Always => x.to_string(),
                _ => format!(
                    "{{\nlet x = {x};\nif x.is_none() && !{} {{ return Err(DecodeError::UnexpectedNull {{ what: {w} }}); }}\nx\n}}",
                    nc.expr()
                ),
            }
        };
        match &f.ty {
            Ty::Str => check(&format!("get_nullable_string({b}, flexible, {w})?")),
            Ty::Bytes | Ty::Records => check(&format!("get_nullable_bytes({b}, flexible, {w})?")),
            Ty::Array(inner) => check(&format!(
                "match get_array_len({b}, flexible, {}, {w})? {{\nNone => None,\nSome(count) => {{\n{}\n}}\n}}",
                Self::fixed_size(inner).unwrap_or(1),
                format_args!("Some({{\n{}\n}})", self.dec_elems(inner, b, w))
            )),
            Ty::Struct(s) => check(&format!(
                "if get_i8({b}, {w})? < 0 {{ None }} else {{ Some({}::decode({b}, version)?) }}",
                self.sname(s)
            )),
            _ => unreachable!(),
        }
    }

    // --- structs --------------------------------------------------------------------------

    fn tagged_fields<'s>(&self, s: &'s Struct) -> Vec<&'s Field> {
        let mut v: Vec<&Field> = s.fields.iter().filter(|f| f.tag.is_some()).collect();
        v.sort_by_key(|f| f.tag);
        v
    }

    fn tag_cond(&self, f: &Field) -> Cond {
        let r = match (f.tagged, f.versions, self.msg.flexible) {
            (Some(t), Some(v), Some(fl)) => t.and(v).and_then(|x| x.and(fl)),
            _ => None,
        };
        Cond::of(r, self.valid)
    }

    fn ne_default(&self, f: &Field) -> String {
        let d = self.default_expr(f);
        let id = ident(&f.name);
        match d.as_str() {
            "None" => format!("self.{id}.is_some()"),
            "Vec::new()" => format!("!self.{id}.is_empty()"),
            _ => format!("self.{id} != {d}"),
        }
    }

    pub fn emit_struct(&self, out: &mut String, s: &Struct, top: bool) {
        let name = self.sname(&s.name);
        let flex = self.has_flexible();
        let mut doc = String::new();
        if top {
            let kind = match self.msg.kind.as_str() {
                "request" => "request",
                "response" => "response",
                _ => "data structure",
            };
            let _ = write!(
                doc,
                "/// The `{}` {kind}, versions {}-{}",
                self.msg.name, self.valid.lo, self.valid.hi
            );
            if let Some(k) = self.msg.api_key {
                let _ = write!(doc, " (API key {k})");
            }
            doc.push_str(".\n");
        } else {
            let _ = writeln!(doc, "/// `{}` in `{}`.", s.name, self.msg.name);
        }
        out.push_str(&doc);
        out.push_str("#[derive(Debug, Clone, PartialEq)]\n");
        let _ = writeln!(out, "pub struct {name} {{");
        for f in &s.fields {
            let _ = writeln!(out, "/// {}", field_doc(f));
            let _ = writeln!(out, "pub {}: {},", ident(&f.name), self.field_ty(f));
        }
        if flex {
            out.push_str("/// Tagged fields this crate does not know, written back unchanged.\n");
            out.push_str("pub unknown_tagged_fields: UnknownTaggedFields,\n");
        }
        out.push_str("}\n\n");

        // Default
        let _ = writeln!(
            out,
            "impl Default for {name} {{\nfn default() -> Self {{\n{name} {{"
        );
        for f in &s.fields {
            let _ = writeln!(out, "{}: {},", ident(&f.name), self.default_expr(f));
        }
        if flex {
            out.push_str("unknown_tagged_fields: UnknownTaggedFields::new(),\n");
        }
        out.push_str("}\n}\n}\n\n");

        let api_key = self.msg.api_key.unwrap_or(-1);
        let vcheck_enc = if top {
            format!(
                "if !({}..={}).contains(&version) {{ return Err(EncodeError::UnsupportedVersion {{ api_key: {api_key}, version }}); }}\n",
                self.valid.lo, self.valid.hi
            )
        } else {
            String::new()
        };
        let vcheck_dec = vcheck_enc.replace("EncodeError", "DecodeError");
        let flexible_decl = format!("let flexible = {};\n", self.flexible().bare());
        let tagged = self.tagged_fields(s);
        let tw = format!("\"{name} tagged fields\"");

        // encode
        let mut enc = String::new();
        let mut len = String::new();
        let mut dec = String::new();
        for f in &s.fields {
            let id = ident(&f.name);
            let p = format!("self.{id}");
            let w = self.what(s, f);
            let absent = if f.ignorable {
                None
            } else {
                Some(format!(
                    "if {} {{ return Err(EncodeError::FieldNotInVersion {{ what: {w}, version }}); }}",
                    self.ne_default(f)
                ))
            };
            if f.tag.is_some() {
                // Written in the tagged section; absent elsewhere.
                let tc = self.tag_cond(f);
                if let Some(a) = &absent {
                    match &tc {
                        Cond::Always => {}
                        Cond::Never => {
                            let _ = writeln!(enc, "{a}");
                        }
                        Cond::Expr(e) => {
                            let _ = writeln!(enc, "if !({e}) {{\n{a}\n}}");
                        }
                    }
                }
                continue;
            }
            match Cond::of(f.versions, self.valid) {
                Cond::Always => {
                    let _ = writeln!(enc, "{}", self.enc_field(f, &p, &w));
                    let _ = writeln!(len, "{}", self.len_field(f, &p));
                    let _ = writeln!(dec, "this.{id} = {};", self.dec_field(f, "buf", &w));
                }
                Cond::Never => {
                    if let Some(a) = &absent {
                        let _ = writeln!(enc, "{a}");
                    }
                }
                Cond::Expr(c) => {
                    let _ = write!(enc, "if {c} {{\n{}\n}}", self.enc_field(f, &p, &w));
                    if let Some(a) = &absent {
                        let _ = write!(enc, " else {{\n{a}\n}}");
                    }
                    enc.push('\n');
                    let _ = writeln!(len, "if {c} {{\n{}\n}}", self.len_field(f, &p));
                    let _ = writeln!(
                        dec,
                        "if {c} {{\nthis.{id} = {};\n}}",
                        self.dec_field(f, "buf", &w)
                    );
                }
            }
        }
        if flex {
            // encode
            enc.push_str("if flexible {\n");
            len.push_str("if flexible {\n");
            enc.push_str("let mut tagged = self.unknown_tagged_fields.len();\n");
            len.push_str("let mut tagged = self.unknown_tagged_fields.len();\nn += unknown_tags_len(&self.unknown_tagged_fields);\n");
            let present = |f: &Field| -> String {
                let tc = self.tag_cond(f);
                match tc {
                    Cond::Always => self.ne_default(f),
                    _ => format!("{} && {}", tc.expr(), self.ne_default(f)),
                }
            };
            for f in tagged.iter().filter(|f| self.tag_cond(f) != Cond::Never) {
                let _ = writeln!(enc, "if {} {{ tagged += 1; }}", present(f));
            }
            enc.push_str("put_uvarint(buf, tagged as u32);\n");
            let mut prev: Option<u32> = None;
            for f in tagged.iter().filter(|f| self.tag_cond(f) != Cond::Never) {
                let t = f.tag.unwrap_or(0);
                let range = match prev {
                    None => format!("..{t}"),
                    Some(p) => format!("{p}..{t}"),
                };
                let _ = writeln!(
                    enc,
                    "put_unknown_tags(buf, &self.unknown_tagged_fields, {range}, {tw})?;"
                );
                let id = ident(&f.name);
                let p = format!("self.{id}");
                let w = self.what(s, f);
                let _ = writeln!(
                    enc,
                    "if {} {{\nlet size = {{\nlet mut n = 0usize;\n{}\nn\n}};\nput_tag_header(buf, {t}, size, {w})?;\n{}\n}}",
                    present(f),
                    self.len_field(f, &p),
                    self.enc_field(f, &p, &w)
                );
                let _ = writeln!(
                    len,
                    "if {} {{\ntagged += 1;\nlet size = {{\nlet mut n = 0usize;\n{}\nn\n}};\nn += tag_len({t}, size);\n}}",
                    present(f),
                    self.len_field(f, &p)
                );
                prev = Some(t);
            }
            let range = match prev {
                None => "..".to_string(),
                Some(p) => format!("{p}.."),
            };
            let _ = writeln!(
                enc,
                "put_unknown_tags(buf, &self.unknown_tagged_fields, {range}, {tw})?;"
            );
            enc.push_str("}\n");
            len.push_str("n += uvarint_len(tagged as u32);\n}\n");

            // decode
            let _ = writeln!(
                dec,
                "if flexible {{\nlet count = get_tag_count(buf, {tw})?;\nfor _ in 0..count {{\nlet (tag, mut data) = get_tagged_field(buf, {tw})?;\nmatch tag {{"
            );
            for f in tagged.iter().filter(|f| self.tag_cond(f) != Cond::Never) {
                let t = f.tag.unwrap_or(0);
                let w = self.what(s, f);
                let guard = match self.tag_cond(f) {
                    Cond::Expr(e) => format!(" if {e}"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    dec,
                    "{t}{guard} => {{\nthis.{} = {};\nexpect_empty(&data, {w})?;\n}}",
                    ident(&f.name),
                    self.dec_field(f, "&mut data", &w)
                );
            }
            dec.push_str("_ => {\nthis.unknown_tagged_fields.insert(tag, data);\n}\n}\n}\n}\n");
        }

        let fix = |body: &str, decl: &str| -> (String, &'static str) {
            let uses_flex = body.contains("flexible");
            let uses_version = body.contains("version") || !decl.is_empty();
            let full = if uses_flex {
                format!("{flexible_decl}{body}")
            } else {
                body.to_string()
            };
            let uses_version = uses_version || full.contains("version");
            (full, if uses_version { "version" } else { "_version" })
        };
        let (enc_body, ev) = fix(&enc, &vcheck_enc);
        let (len_body, lv) = fix(&len, "");
        let (dec_body, dv) = fix(&dec, &vcheck_dec);
        let mut_this = if dec.contains("this.") { "mut " } else { "" };
        let buf_name = if dec_body.contains("buf") {
            "buf"
        } else {
            "_buf"
        };
        let enc_buf = if enc_body.contains("buf") {
            "buf"
        } else {
            "_buf"
        };
        let len_mut = if len_body.contains("n +=") {
            "mut "
        } else {
            ""
        };
        let _ = write!(
            out,
            "impl Encode for {name} {{\nfn encode<B: BufMut>(&self, {enc_buf}: &mut B, {ev}: i16) -> Result<(), EncodeError> {{\n{vcheck_enc}{enc_body}Ok(())\n}}\n\n\
             fn encoded_len(&self, {lv}: i16) -> Result<usize, EncodeError> {{\nlet {len_mut}n = 0usize;\n{len_body}Ok(n)\n}}\n}}\n\n\
             impl Decode for {name} {{\nfn decode({buf_name}: &mut Bytes, {dv}: i16) -> Result<Self, DecodeError> {{\n{vcheck_dec}let {mut_this}this = {name}::default();\n{dec_body}Ok(this)\n}}\n}}\n\n"
        );
    }

    /// The module file of a pair (or a lone message).
    pub fn emit_request_impl(&self, out: &mut String, response: &str) {
        let flex = self.msg.flexible.map(|f| f.lo);
        let api = self.msg.name.as_str();
        let (req_hdr, resp_hdr) = match flex {
            Some(lo) if lo <= self.valid.lo => ("2".to_string(), "1".to_string()),
            Some(lo) if lo <= self.valid.hi => (
                format!("if version >= {lo} {{ 2 }} else {{ 1 }}"),
                format!("if version >= {lo} {{ 1 }} else {{ 0 }}"),
            ),
            _ => ("1".to_string(), "0".to_string()),
        };
        // ApiVersions responses always use header v0, so a client can read one from a broker that
        // does not support the version it asked for.
        let resp_hdr = if api == "ApiVersionsRequest" {
            "0".to_string()
        } else {
            resp_hdr
        };
        let rv = if req_hdr.contains("version") {
            "version"
        } else {
            "_version"
        };
        let pv = if resp_hdr.contains("version") {
            "version"
        } else {
            "_version"
        };
        let _ = write!(
            out,
            "impl Request for {api} {{\nconst API_KEY: ApiKey = ApiKey::{key};\nconst MIN_VERSION: i16 = {lo};\nconst MAX_VERSION: i16 = {hi};\ntype Response = {response};\n\
             fn request_header_version({rv}: i16) -> i16 {{\n{req_hdr}\n}}\n\
             fn response_header_version({pv}: i16) -> i16 {{\n{resp_hdr}\n}}\n}}\n\n",
            key = screaming(&api_name(api)),
            lo = self.valid.lo,
            hi = self.valid.hi,
        );
    }
}

fn field_doc(f: &Field) -> String {
    let r = |r: Option<Range>| match r {
        None => "none".to_string(),
        Some(r) if r.hi == i16::MAX => format!("{}+", r.lo),
        Some(r) if r.lo == r.hi => format!("{}", r.lo),
        Some(r) => format!("{}-{}", r.lo, r.hi),
    };
    let mut s = format!("`{}`: versions {}", f.name, r(f.versions));
    if f.nullable.is_some() {
        let _ = write!(s, ", nullable {}", r(f.nullable));
    }
    if let Some(t) = f.tag {
        let _ = write!(s, ", tag {t} in {}", r(f.tagged));
    }
    if let Some(d) = &f.default {
        let _ = write!(s, ", default `{d}`");
    }
    if f.map_key {
        s.push_str(", map key");
    }
    if f.ignorable {
        s.push_str(", ignorable");
    }
    s.push('.');
    s
}

// --- test value generators ---------------------------------------------------------------------

impl Ctx<'_> {
    fn arb_value(&self, ty: &Ty) -> String {
        match ty {
            Ty::Bool => "r.bool()".into(),
            Ty::I8 => "r.i8()".into(),
            Ty::I16 => "r.i16()".into(),
            Ty::I32 => "r.i32()".into(),
            Ty::I64 => "r.i64()".into(),
            Ty::U16 => "r.u16()".into(),
            Ty::U32 => "r.u32()".into(),
            Ty::F64 => "r.f64()".into(),
            Ty::Uuid => "r.uuid()".into(),
            Ty::Str => "r.string()".into(),
            Ty::Bytes | Ty::Records => "r.bytes()".into(),
            Ty::Struct(s) => format!("{}(r, version)", self.sname(s)),
            Ty::Array(inner) => {
                let dedup = match &**inner {
                    Ty::Struct(sn) => {
                        let keys: Vec<String> = self
                            .structs
                            .get(sn)
                            .map(|st| {
                                st.fields
                                    .iter()
                                    .filter(|f| f.map_key)
                                    .map(|f| format!("&e.{}", ident(&f.name)))
                                    .collect()
                            })
                            .unwrap_or_default();
                        if keys.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "dedup_by_key(&mut v, |e| format!(\"{{:?}}\", ({},)));\n",
                                keys.join(", ")
                            )
                        }
                    }
                    _ => String::new(),
                };
                format!(
                    "{{\nlet count = r.len();\n#[allow(unused_mut)]\nlet mut v: Vec<_> = (0..count).map(|_| {}).collect();\n{dedup}v\n}}",
                    self.arb_value(inner)
                )
            }
        }
    }

    fn arb_field(&self, f: &Field) -> String {
        let v = self.arb_value(&f.ty);
        if !Self::is_option(f) {
            return v;
        }
        match Cond::of(f.nullable, self.valid) {
            Cond::Never => format!("Some({v})"),
            Cond::Always => format!("if r.one_in(4) {{ None }} else {{ Some({v}) }}"),
            c => format!(
                "if {} && r.one_in(4) {{ None }} else {{ Some({v}) }}",
                c.expr()
            ),
        }
    }

    pub fn emit_arb_struct(&self, out: &mut String, s: &Struct) {
        let name = self.sname(&s.name);
        let mut body = String::new();
        for f in &s.fields {
            let c = if f.tag.is_some() {
                self.tag_cond(f)
            } else {
                Cond::of(f.versions, self.valid)
            };
            let id = ident(&f.name);
            let set = if f.tag.is_some() {
                // Leave tagged fields at their default now and then so both paths are covered.
                format!("if r.one_in(2) {{ s.{id} = {}; }}", self.arb_field(f))
            } else {
                format!("s.{id} = {};", self.arb_field(f))
            };
            match c {
                Cond::Never => {}
                Cond::Always => {
                    let _ = writeln!(body, "{set}");
                }
                Cond::Expr(e) => {
                    let _ = writeln!(body, "if {e} {{\n{set}\n}}");
                }
            }
        }
        match self.flexible() {
            Cond::Never => {}
            c => {
                let _ = writeln!(
                    body,
                    "if {} && r.one_in(6) {{ s.unknown_tagged_fields.insert(100 + r.below(4) as u32, r.bytes()); }}",
                    c.expr()
                );
            }
        }
        let v = if body.contains("version") {
            "version"
        } else {
            "_version"
        };
        let rr = if body.contains("r.") || body.contains("(r") {
            "r"
        } else {
            "_r"
        };
        let m = if body.is_empty() { "" } else { "mut " };
        let _ = write!(
            out,
            "pub fn {name}({rr}: &mut Rng, {v}: i16) -> {name} {{\nlet {m}s = {name}::default();\n{body}s\n}}\n\n"
        );
    }
}

//! The `--format` of `kfk consume`: a kcat-like template rendered per record.

use kafka_client::consumer::ConsumerRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    Headers,
}

/// A parsed format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format(Vec<Piece>);

impl Format {
    /// Parses `%t %p %o %T %k %v %h %%` and the escapes `\t \n \\`.
    pub fn parse(s: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            let field = match c {
                '%' => match chars.next() {
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('T') => Piece::Timestamp,
                    Some('k') => Piece::Key,
                    Some('v') => Piece::Value,
                    Some('h') => Piece::Headers,
                    Some('%') => {
                        text.push(b'%');
                        continue;
                    }
                    Some(other) => {
                        return Err(format!(
                            "--format: unknown field %{other} (use %t %p %o %T %k %v %h %%)"
                        ))
                    }
                    None => return Err("--format: a lone % at the end".into()),
                },
                '\\' => {
                    match chars.next() {
                        Some('t') => text.push(b'\t'),
                        Some('n') => text.push(b'\n'),
                        Some('\\') => text.push(b'\\'),
                        Some(other) => {
                            return Err(format!("--format: unknown escape \\{other}"));
                        }
                        None => return Err("--format: a lone \\ at the end".into()),
                    }
                    continue;
                }
                c => {
                    let mut b = [0; 4];
                    text.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                    continue;
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(field);
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Format(pieces))
    }

    /// Appends `r` rendered to `out`. Null keys and values print as nothing.
    pub fn render(&self, r: &ConsumerRecord, out: &mut Vec<u8>) {
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Topic => out.extend_from_slice(r.topic.as_bytes()),
                Piece::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
                Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
                Piece::Timestamp => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
                Piece::Key => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
                Piece::Value => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
                Piece::Headers => {
                    for (i, h) in r.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(h.key.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(h.value.as_deref().unwrap_or_default());
                    }
                }
            }
        }
    }
}

/// A topic id in the usual 8-4-4-4-12 hex form.
pub fn uuid(b: [u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_text_and_escapes() {
        let f = Format::parse("%p:%o\\t%k=%v %% \\\\").unwrap();
        assert_eq!(
            f.0,
            vec![
                Piece::Partition,
                Piece::Text(b":".to_vec()),
                Piece::Offset,
                Piece::Text(b"\t".to_vec()),
                Piece::Key,
                Piece::Text(b"=".to_vec()),
                Piece::Value,
                Piece::Text(b" % \\".to_vec()),
            ]
        );
    }

    #[test]
    fn rejects_unknown_fields_and_dangling_escapes() {
        assert!(Format::parse("%x").is_err());
        assert!(Format::parse("abc%").is_err());
        assert!(Format::parse("\\q").is_err());
        assert!(Format::parse("\\").is_err());
    }

    #[test]
    fn uuid_is_hyphenated_hex() {
        let mut b = [0u8; 16];
        b[0] = 0xab;
        b[15] = 0x01;
        assert_eq!(uuid(b), "ab000000-0000-0000-0000-000000000001");
    }
}

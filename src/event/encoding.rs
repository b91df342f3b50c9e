//! Text encodings other than plain UTF-8: a UTF-8 byte order mark is skipped; UTF-16 and UTF-32
//! lines, and marks in the middle of a line, are named in the reject's reason with what to do.
//!
//! Only the BOM check runs on every line (a 3-byte prefix compare); the diagnosis runs only for a
//! line that already failed to parse.

use memchr::memmem;

/// The UTF-8 encoding of U+FEFF, which Windows editors and some loggers put at the start of a file.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The line without a leading UTF-8 byte order mark.
pub fn strip_utf8_bom(line: &[u8]) -> &[u8] {
    line.strip_prefix(UTF8_BOM).unwrap_or(line)
}

/// Why a line that failed to parse is in the wrong encoding, if it is: a UTF-16 or UTF-32 byte
/// order mark, NUL bytes between ASCII characters (UTF-16 without a mark, or a later line of a
/// UTF-16 file), or a UTF-8 byte order mark that is not at the line's start.
pub fn diagnose(line: &[u8]) -> Option<String> {
    const WRITE_UTF8: &str = "write UTF-8 (one JSON object per line)";
    let marks: [(&[u8], &str, &str); 4] = [
        (b"\xFF\xFE\x00\x00", "FF FE 00 00", "UTF-32 little-endian"),
        (b"\x00\x00\xFE\xFF", "00 00 FE FF", "UTF-32 big-endian"),
        (b"\xFF\xFE", "FF FE", "UTF-16 little-endian"),
        (b"\xFE\xFF", "FE FF", "UTF-16 big-endian"),
    ];
    for (mark, bytes, name) in marks {
        if line.starts_with(mark) {
            let family = &name[..6];
            return Some(format!(
                "line starts with {bytes}, the {name} byte order mark: the file is {family}; {WRITE_UTF8}"
            ));
        }
    }
    if looks_like_utf16(line) {
        return Some(format!(
            "line has NUL bytes between ASCII characters, as UTF-16 text does: the file is UTF-16; {WRITE_UTF8}"
        ));
    }
    memmem::find(line, UTF8_BOM).map(|at| {
        format!("line holds a UTF-8 byte order mark (EF BB BF) at byte {at}; write UTF-8 without byte order marks")
    })
}

/// ASCII text in UTF-16 has a NUL in every other byte. Looks at the first 64 bytes: at least a
/// quarter of them NUL, and all NULs on even offsets or all on odd ones.
fn looks_like_utf16(line: &[u8]) -> bool {
    let window = &line[..line.len().min(64)];
    let mut nuls = [0usize; 2];
    for (i, _) in window.iter().enumerate().filter(|(_, &b)| b == 0) {
        nuls[i % 2] += 1;
    }
    let total = nuls[0] + nuls[1];
    total >= 2 && total * 4 >= window.len() && (nuls[0] == 0 || nuls[1] == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_have_no_encoding_problem() {
        assert_eq!(diagnose(br#"{"message": "x"#), None);
        assert_eq!(diagnose("开始生成第16章".as_bytes()), None);
        assert_eq!(strip_utf8_bom(b"\xEF\xBB\xBF{}"), b"{}");
        assert_eq!(strip_utf8_bom(b"{}"), b"{}");
    }

    #[test]
    fn utf32_marks_are_told_from_utf16_ones() {
        let r = diagnose(b"\xFF\xFE\x00\x00{\x00\x00\x00").unwrap();
        assert!(
            r.contains("UTF-32 little-endian") && r.contains("the file is UTF-32"),
            "{r}"
        );
    }
}

//! Stream ids as the tool prints and reads them.
//!
//! A stream id is a `u128`. The tool prints it in one form everywhere, `0x` and lowercase hex
//! digits without leading zeros (`0x7`, `0x9f3c…`): short for small ids, exact for large ones
//! (a JSON number would lose digits past 2^53). It reads every form a user is likely to hold:
//! that one, decimal, 32 hex digits (a UUID's simple form), and a UUID with dashes.

/// The canonical form of a stream id: `0x` and lowercase hex, no leading zeros.
pub fn show(id: u128) -> String {
    format!("{id:#x}")
}

/// Reads a stream id: `0x` hex (`0x7`, `0X7F`), a UUID with dashes
/// (`67e55044-10b1-426f-9247-bb680e5fe0c8`), exactly 32 hex digits (a UUID's simple form,
/// read as hex even when every digit is a decimal one), or decimal (`7`).
pub fn parse(s: &str) -> Result<u128, String> {
    let refused = |why: &str| {
        format!(
            "not a stream id: {s:?} ({why}; give decimal, 0x hex, 32 hex digits or a UUID with \
             dashes)"
        )
    };
    let hex = |digits: &str| {
        if digits.is_empty() || digits.len() > 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(refused("bad hex digits"));
        }
        u128::from_str_radix(digits, 16).map_err(|_| refused("bad hex digits"))
    };
    if let Some(digits) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return hex(digits);
    }
    if s.len() == 36 && s.contains('-') {
        let groups: Vec<&str> = s.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lengths != [8, 4, 4, 4, 12] {
            return Err(refused("a UUID's groups are 8-4-4-4-12 hex digits"));
        }
        return hex(&groups.concat());
    }
    if s.len() == 32 {
        return hex(s);
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused("not a number"));
    }
    s.parse::<u128>()
        .map_err(|_| refused("larger than 128 bits"))
}

#[cfg(test)]
mod tests {
    use super::{parse, show};

    #[test]
    fn every_form_reads_to_the_same_id_and_prints_as_one() {
        let id = 0x67e5_5044_10b1_426f_9247_bb68_0e5f_e0c8u128;
        for form in [
            "0x67e5504410b1426f9247bb680e5fe0c8",
            "0X67E5504410B1426F9247BB680E5FE0C8",
            "67e5504410b1426f9247bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "67E55044-10B1-426F-9247-BB680E5FE0C8",
            &id.to_string(),
        ] {
            assert_eq!(parse(form), Ok(id), "{form}");
        }
        assert_eq!(show(id), "0x67e5504410b1426f9247bb680e5fe0c8");
        assert_eq!(parse("7"), Ok(7));
        assert_eq!(parse("0x7"), Ok(7));
        assert_eq!(parse("00000000000000000000000000000007"), Ok(7));
        assert_eq!(parse("00000000-0000-0000-0000-000000000007"), Ok(7));
        assert_eq!(show(7), "0x7");
        assert_eq!(parse(&show(u128::MAX)), Ok(u128::MAX));
        assert_eq!(parse(&u128::MAX.to_string()), Ok(u128::MAX));
    }

    #[test]
    fn malformed_ids_are_refused_with_the_forms_accepted() {
        for bad in [
            "",
            "0x",
            "-1",
            "+7",
            "0xg",
            "7a",
            " 7",
            "0x1234567890abcdef1234567890abcdef0",
            "67e55044-10b1-426f-9247-bb680e5fe0c",
            "67e5504410b1-426f-9247-bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0cg",
            "340282366920938463463374607431768211456",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains("UUID with dashes"), "{e}");
        }
    }
}

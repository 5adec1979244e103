//! Explaining why a safetensors header was rejected, naming the tensor entry at fault.
//!
//! The `safetensors` parser reports some problems without naming a tensor ("invalid shape,
//! data type, or offset for tensor", "invalid JSON in header: unknown variant ..."). When it
//! does, the header is parsed again here, loosely, to find the first entry that is wrong
//! and say what is wrong with it.

use safetensors::{Dtype, SafeTensorError};
use serde_json::Value;

/// The parser's message, followed by the first tensor entry found at fault (if any).
pub(crate) fn explain(bytes: &[u8], err: &SafeTensorError) -> String {
    let base = err.to_string();
    match culprit(bytes) {
        Some(detail) => format!("{base}: {detail}"),
        None => base,
    }
}

/// The first problem with a tensor entry of the header, or with its coverage of the file.
fn culprit(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let n = usize::try_from(n).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let data_len = bytes.len() - 8 - n;
    let value: Value = serde_json::from_slice(header).ok()?;
    let entries = value.as_object()?;
    // (begin, end, name) of the entries that are well-formed, to check coverage after.
    let mut ranges: Vec<(usize, usize, &str)> = Vec::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            if !entry.is_object() && !entry.is_null() {
                return Some("\"__metadata__\" is not an object of strings".into());
            }
            continue;
        }
        let what = |m: String| Some(format!("tensor {name:?}: {m}"));
        let Some(obj) = entry.as_object() else {
            return what("entry is not an object {dtype, shape, data_offsets}".into());
        };
        let dtype = match obj.get("dtype") {
            None => return what("no \"dtype\"".into()),
            Some(d) => match serde_json::from_value::<Dtype>(d.clone()) {
                Ok(d) => d,
                Err(_) => return what(format!("unknown dtype {d}")),
            },
        };
        let shape: Option<Vec<usize>> = obj.get("shape").and_then(|s| {
            s.as_array()?
                .iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect()
        });
        let Some(shape) = shape else {
            return what(format!(
                "\"shape\" is {} (expected a list of non-negative integers)",
                obj.get("shape").map_or("missing".into(), |s| s.to_string())
            ));
        };
        let offsets: Option<Vec<usize>> = obj.get("data_offsets").and_then(|s| {
            s.as_array()?
                .iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect()
        });
        let (begin, end) = match offsets.as_deref() {
            Some(&[b, e]) => (b, e),
            _ => {
                return what(format!(
                    "\"data_offsets\" is {} (expected [begin, end])",
                    obj.get("data_offsets")
                        .map_or("missing".into(), |s| s.to_string())
                ));
            }
        };
        if end < begin {
            return what(format!(
                "data_offsets [{begin}, {end}] end before they begin"
            ));
        }
        let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let bits = elements.and_then(|e| e.checked_mul(dtype.bitsize()));
        match bits {
            None => {
                return what(format!(
                    "shape {shape:?} of {dtype:?} overflows the size of the address space"
                ));
            }
            Some(bits) if bits % 8 != 0 || bits / 8 != end - begin => {
                return what(format!(
                    "shape {shape:?} of {dtype:?} needs {} bytes but data_offsets [{begin}, {end}] span {}",
                    bits.div_ceil(8),
                    end - begin
                ));
            }
            Some(_) => {}
        }
        if end > data_len {
            return what(format!(
                "data_offsets [{begin}, {end}] run past the end of the data ({data_len} bytes after the header; truncated file?)"
            ));
        }
        ranges.push((begin, end, name));
    }
    ranges.sort_unstable();
    let mut at = 0;
    for &(begin, end, name) in &ranges {
        if begin < at {
            return Some(format!(
                "tensor {name:?}: data_offsets [{begin}, {end}] overlap the previous tensor's data"
            ));
        }
        if begin > at {
            return Some(format!(
                "tensor {name:?}: data_offsets [{begin}, {end}] leave a gap of {} bytes before it",
                begin - at
            ));
        }
        at = end;
    }
    if at != data_len {
        return Some(format!(
            "the tensors cover {at} bytes of data but the file holds {data_len} after the header"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend(std::iter::repeat_n(0u8, data));
        out
    }

    fn message(bytes: &[u8]) -> String {
        let err = safetensors::SafeTensors::deserialize(bytes).expect_err("must be rejected");
        explain(bytes, &err)
    }

    #[test]
    fn names_the_tensor_at_fault() {
        let m = message(&file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[4,4],"data_offsets":[8,20]}}"#,
            20,
        ));
        assert!(
            m.contains("tensor \"b\"") && m.contains("needs 64 bytes"),
            "{m}"
        );
        let m = message(&file(
            r#"{"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        ));
        assert!(
            m.contains("tensor \"w\"") && m.contains("unknown dtype"),
            "{m}"
        );
        let m = message(&file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        ));
        assert!(m.contains("tensor \"b\""), "{m}");
    }
}

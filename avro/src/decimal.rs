//! Exact conversion between `rust_decimal::Decimal` and Avro's `decimal` logical type
//! (big-endian two's-complement unscaled integer at a fixed scale). Never rounds: a value
//! with more fractional digits than the schema's scale is an error.

use apache_avro::Decimal as AvroDecimal;
use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("{value} has more than {scale} fractional digits; refusing to round")]
    TooManyDecimals { value: Decimal, scale: u32 },
    #[error("{value} needs more than {precision} digits")]
    TooManyDigits { value: Decimal, precision: u32 },
    #[error("Avro decimal of {0} bytes does not fit in 96 bits")]
    TooLarge(usize),
}

/// Encodes `value` at `scale` (e.g. 4 for amounts), checking it fits `precision` digits.
pub fn to_avro(value: Decimal, precision: u32, scale: u32) -> Result<AvroDecimal, DecimalError> {
    let normalized = value.normalize();
    if normalized.scale() > scale {
        return Err(DecimalError::TooManyDecimals { value, scale });
    }
    let mut scaled = normalized;
    scaled.rescale(scale);
    let unscaled = scaled.mantissa();
    if unscaled.unsigned_abs() >= 10u128.pow(precision) {
        return Err(DecimalError::TooManyDigits { value, precision });
    }
    Ok(AvroDecimal::from(minimal_twos_complement(unscaled)))
}

/// Decodes an Avro decimal written at `scale`.
pub fn from_avro(value: &AvroDecimal, scale: u32) -> Result<Decimal, DecimalError> {
    let bytes: Vec<u8> = Vec::try_from(value).map_err(|_| DecimalError::TooLarge(0))?;
    from_twos_complement(&bytes, scale)
}

/// Decodes the raw big-endian unscaled bytes at `scale`.
pub fn from_twos_complement(bytes: &[u8], scale: u32) -> Result<Decimal, DecimalError> {
    if bytes.len() > 16 {
        return Err(DecimalError::TooLarge(bytes.len()));
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut buf = if negative { [0xFF; 16] } else { [0; 16] };
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    let unscaled = i128::from_be_bytes(buf);
    Decimal::try_from_i128_with_scale(unscaled, scale)
        .map_err(|_| DecimalError::TooLarge(bytes.len()))
}

/// `value` if it has at most `precision` digits at its scale (the schema's bound, which a
/// writer's bytes need not keep).
pub fn within_precision(value: Decimal, precision: u32) -> Result<Decimal, DecimalError> {
    if value.mantissa().unsigned_abs() >= 10u128.pow(precision) {
        return Err(DecimalError::TooManyDigits { value, precision });
    }
    Ok(value)
}

fn minimal_twos_complement(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    // Drop leading bytes that are pure sign extension.
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn amounts_round_trip_exactly_including_negative_and_zero() {
        for v in [
            dec!(0),
            dec!(0.01),
            dec!(-0.01),
            dec!(1234567.8901),
            dec!(-99999.9999),
        ] {
            let avro = to_avro(v, 18, 4).unwrap();
            assert_eq!(from_avro(&avro, 4).unwrap(), v);
        }
    }

    #[test]
    fn the_encoding_is_minimal_big_endian_twos_complement() {
        // 1.00 at scale 2 is unscaled 100 = 0x64; -1.28 is -128 = 0x80.
        assert_eq!(minimal_twos_complement(100), vec![0x64]);
        assert_eq!(minimal_twos_complement(-128), vec![0x80]);
        assert_eq!(minimal_twos_complement(128), vec![0x00, 0x80]);
        assert_eq!(minimal_twos_complement(0), vec![0x00]);
    }

    #[test]
    fn a_value_finer_than_the_scale_is_refused_not_rounded() {
        assert!(matches!(
            to_avro(dec!(1.00005), 18, 4),
            Err(DecimalError::TooManyDecimals { .. })
        ));
    }

    #[test]
    fn a_value_beyond_the_precision_is_refused() {
        assert!(matches!(
            to_avro(dec!(100000000000000), 18, 4),
            Err(DecimalError::TooManyDigits { .. })
        ));
    }
}

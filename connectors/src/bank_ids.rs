//! Bank identifiers a payment file carries: IBAN (ISO 13616, checked by its mod-97 digits) and
//! BIC (ISO 9362). A bank refuses a whole file for one bad account; we refuse it first, with
//! the reason.

/// Why a string is not an IBAN or a BIC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankIdError {
    #[error("IBAN {0:?} is not 15 to 34 letters and digits")]
    IbanLength(String),
    #[error("IBAN {0:?} does not start with a country code and two check digits")]
    IbanShape(String),
    #[error("IBAN {0:?} fails its check digits (mod 97): a typo?")]
    IbanCheckDigits(String),
    #[error("BIC {0:?} is not 8 or 11 characters: bank (4 letters), country (2), location (2), branch (3, optional)")]
    Bic(String),
}

/// The IBAN in its electronic form (no spaces, upper case), if it is one.
pub fn check_iban(iban: &str) -> Result<String, BankIdError> {
    let compact: String = iban
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    if !(15..=34).contains(&compact.len()) || !compact.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(BankIdError::IbanLength(iban.to_owned()));
    }
    let bytes = compact.as_bytes();
    if !bytes[..2].iter().all(u8::is_ascii_uppercase) || !bytes[2..4].iter().all(u8::is_ascii_digit)
    {
        return Err(BankIdError::IbanShape(iban.to_owned()));
    }
    // The first four characters moved to the end, letters as 10..35: the number mod 97 is 1.
    let remainder = bytes[4..].iter().chain(&bytes[..4]).fold(0u32, |acc, &b| {
        let value = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b - b'A') + 10
        };
        let shifted = if value >= 10 { acc * 100 } else { acc * 10 };
        (shifted + value) % 97
    });
    if remainder != 1 {
        return Err(BankIdError::IbanCheckDigits(iban.to_owned()));
    }
    Ok(compact)
}

/// The BIC in upper case, if it is one.
pub fn check_bic(bic: &str) -> Result<String, BankIdError> {
    let bic_upper = bic.trim().to_ascii_uppercase();
    let b = bic_upper.as_bytes();
    let shaped = matches!(b.len(), 8 | 11)
        && b[..6].iter().all(u8::is_ascii_uppercase)
        && b[6..].iter().all(u8::is_ascii_alphanumeric);
    if shaped {
        Ok(bic_upper)
    } else {
        Err(BankIdError::Bic(bic.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_ibans_pass_in_either_form_and_a_typo_fails_its_check_digits() {
        for iban in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "CH9300762011623852957",
            "NL91ABNA0417164300",
            "SA0380000000608010167519",
            "KW81CBKU0000000000001234560101",
        ] {
            assert!(check_iban(iban).is_ok(), "{iban}");
        }
        assert_eq!(
            check_iban("de89 3704 0044 0532 0130 00").unwrap(),
            "DE89370400440532013000"
        );
        assert!(matches!(
            check_iban("DE89370400440532013001"),
            Err(BankIdError::IbanCheckDigits(_))
        ));
        assert!(matches!(
            check_iban("DE89"),
            Err(BankIdError::IbanLength(_))
        ));
        assert!(matches!(
            check_iban("1289370400440532013000"),
            Err(BankIdError::IbanShape(_))
        ));
    }

    #[test]
    fn bics_of_8_or_11_characters_pass_and_others_fail() {
        assert_eq!(check_bic("deutdeff").unwrap(), "DEUTDEFF");
        assert!(check_bic("BYLADEM1001").is_ok());
        assert!(matches!(check_bic("DEUTDE"), Err(BankIdError::Bic(_))));
        assert!(matches!(check_bic("1EUTDEFF"), Err(BankIdError::Bic(_))));
    }
}

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
    #[error("IBAN {iban:?} has {actual} characters; an IBAN of {country} has {expected}")]
    IbanCountryLength {
        iban: String,
        country: String,
        expected: usize,
        actual: usize,
    },
    #[error("IBAN {0:?} fails its check digits (mod 97): a typo?")]
    IbanCheckDigits(String),
    #[error("BIC {0:?} is not 8 or 11 characters: bank (4 letters), country (2), location (2), branch (3, optional)")]
    Bic(String),
}

/// `iban` in the electronic form (no spaces, upper case), checked or not: how two ways of
/// writing one account compare equal.
pub fn electronic_form(iban: &str) -> String {
    iban.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// The IBAN in its electronic form (no spaces, upper case), if it is one.
pub fn check_iban(iban: &str) -> Result<String, BankIdError> {
    let compact = electronic_form(iban);
    if !(15..=34).contains(&compact.len()) || !compact.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(BankIdError::IbanLength(iban.to_owned()));
    }
    let bytes = compact.as_bytes();
    if !bytes[..2].iter().all(u8::is_ascii_uppercase) || !bytes[2..4].iter().all(u8::is_ascii_digit)
    {
        return Err(BankIdError::IbanShape(iban.to_owned()));
    }
    if let Some(expected) = country_length(&compact[..2]) {
        if compact.len() != expected {
            return Err(BankIdError::IbanCountryLength {
                iban: iban.to_owned(),
                country: compact[..2].to_owned(),
                expected,
                actual: compact.len(),
            });
        }
    }
    // The first four characters moved to the end: the number mod 97 is 1.
    if mod97(bytes[4..].iter().chain(&bytes[..4])) != 1 {
        return Err(BankIdError::IbanCheckDigits(iban.to_owned()));
    }
    Ok(compact)
}

/// The IBAN of `country`'s account `bban` (letters and digits), its check digits computed.
pub fn iban_of(country: &str, bban: &str) -> String {
    let country = country.to_ascii_uppercase();
    let bban = bban.to_ascii_uppercase();
    let rest = format!("{country}00");
    let check = 98 - mod97(bban.as_bytes().iter().chain(rest.as_bytes()));
    format!("{country}{check:02}{bban}")
}

/// The number the characters spell (letters as 10..35) mod 97.
fn mod97<'a>(chars: impl Iterator<Item = &'a u8>) -> u32 {
    chars.fold(0u32, |acc, &b| {
        let value = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b.to_ascii_uppercase() - b'A') + 10
        };
        let shifted = if value >= 10 { acc * 100 } else { acc * 10 };
        (shifted + value) % 97
    })
}

/// The IBAN length of the SEPA countries (and a few more), from the SWIFT IBAN registry.
fn country_length(country: &str) -> Option<usize> {
    Some(match country {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "FO" | "GL" | "NL" => 18,
        "SI" => 19,
        "AT" | "EE" | "KZ" | "LT" | "LU" => 20,
        "CH" | "HR" | "LI" | "LV" => 21,
        "BG" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" => 22,
        "AE" | "GI" | "IL" => 23,
        "AD" | "CZ" | "ES" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "PT" => 25,
        "IS" | "TR" => 26,
        "FR" | "GR" | "IT" | "MC" | "MR" | "SM" => 27,
        "AL" | "AZ" | "CY" | "DO" | "GT" | "HU" | "LB" | "PL" => 28,
        "BR" | "PS" | "QA" => 29,
        "JO" | "KW" | "MU" => 30,
        "MT" => 31,
        _ => return None,
    })
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
    fn an_iban_one_digit_short_for_its_country_is_refused_and_minted_ones_pass() {
        // A German IBAN whose check digits still work out, one digit short: mod 97 alone
        // would take it.
        let short = iban_of("DE", "3704004405320130");
        assert!(matches!(
            check_iban(&short),
            Err(BankIdError::IbanCountryLength {
                expected: 22,
                actual: 20,
                ..
            })
        ));
        assert_eq!(
            iban_of("DE", "370400440532013000"),
            "DE89370400440532013000"
        );
        assert_eq!(
            iban_of("GB", "WEST12345698765432"),
            "GB82WEST12345698765432"
        );
        for bban in [
            "000000000000000001",
            "999999999999999999",
            "100000000000000000",
        ] {
            assert!(check_iban(&iban_of("DE", bban)).is_ok(), "{bban}");
        }
        assert!(
            check_iban("XK051212012345678906").is_ok(),
            "a country not listed: mod 97 only"
        );
    }

    #[test]
    fn bics_of_8_or_11_characters_pass_and_others_fail() {
        assert_eq!(check_bic("deutdeff").unwrap(), "DEUTDEFF");
        assert!(check_bic("BYLADEM1001").is_ok());
        assert!(matches!(check_bic("DEUTDE"), Err(BankIdError::Bic(_))));
        assert!(matches!(check_bic("1EUTDEFF"), Err(BankIdError::Bic(_))));
    }
}

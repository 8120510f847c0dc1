//! XSD validation of ISO 20022 files with libxml2 (what `xmllint --schema` runs), against the
//! schemas compiled into the binary from `connectors/xsd/`.

/// A schema the connector validates against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schema {
    Pain001V09,
    Pain002V03,
    Pain002V12,
}

impl Schema {
    /// The schema's target namespace.
    pub fn namespace(self) -> &'static str {
        match self {
            Schema::Pain001V09 => "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09",
            Schema::Pain002V03 => "urn:iso:std:iso:20022:tech:xsd:pain.002.001.03",
            Schema::Pain002V12 => "urn:iso:std:iso:20022:tech:xsd:pain.002.001.12",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Schema::Pain001V09 => include_str!("../xsd/pain.001.001.09.xsd"),
            Schema::Pain002V03 => include_str!("../xsd/pain.002.001.03.xsd"),
            Schema::Pain002V12 => include_str!("../xsd/pain.002.001.12.xsd"),
        }
    }
}

/// `xml` against `schema`: `Err` with libxml2's messages (line and what is wrong) if invalid
/// or not well-formed.
pub fn validate(schema: Schema, xml: &str) -> Result<(), Vec<String>> {
    use libxml::parser::{Parser, ParserOptions};
    use libxml::schemas::{SchemaParserContext, SchemaValidationContext};
    use std::cell::RefCell;
    use std::collections::hash_map::{Entry, HashMap};
    let describe = |errors: Vec<libxml::error::StructuredError>| -> Vec<String> {
        errors
            .into_iter()
            .map(|e| {
                let message = e.message.unwrap_or_default();
                match e.line {
                    Some(line) => format!("line {line}: {}", message.trim()),
                    None => message.trim().to_owned(),
                }
            })
            .collect()
    };
    // No recovery (a broken file is refused, not repaired) and no network (a file cannot make
    // the connector fetch anything).
    let options = ParserOptions {
        recover: false,
        no_net: true,
        ..ParserOptions::default()
    };
    let document = Parser::default()
        .parse_string_with_options(xml, options)
        .map_err(|e| vec![format!("not well-formed XML: {e}")])?;
    // Each schema compiled once per thread (libxml2's contexts stay on the thread that made
    // them), not once per file.
    thread_local! {
        static CONTEXTS: RefCell<HashMap<Schema, SchemaValidationContext>> =
            RefCell::new(HashMap::new());
    }
    CONTEXTS.with(|contexts| {
        let mut contexts = contexts.borrow_mut();
        let context = match contexts.entry(schema) {
            Entry::Occupied(compiled) => compiled.into_mut(),
            Entry::Vacant(slot) => {
                let mut parser = SchemaParserContext::from_buffer(schema.text());
                slot.insert(SchemaValidationContext::from_parser(&mut parser).map_err(describe)?)
            }
        };
        context.validate_document(&document).map_err(describe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_schemas_are_the_shared_ones() {
        let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/iso20022");
        for (schema, file) in [
            (Schema::Pain001V09, "pain.001.001.09.xsd"),
            (Schema::Pain002V03, "pain.002.001.03.xsd"),
            (Schema::Pain002V12, "pain.002.001.12.xsd"),
        ] {
            let text = std::fs::read_to_string(shared.join(file)).unwrap();
            assert_eq!(
                schema.text(),
                text,
                "{file} differs from ../shared/iso20022"
            );
            assert!(text.contains(schema.namespace()));
        }
    }

    #[test]
    fn a_valid_file_passes_and_a_broken_one_is_refused_with_the_reason() {
        let valid = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../../shared/iso20022/samples/pain001-v09-sepa-eur__php-sepa-xml_php-sepa-xml.xml",
        ))
        .unwrap();
        assert_eq!(validate(Schema::Pain001V09, &valid), Ok(()));
        let broken = valid
            .replacen("<NbOfTxs>", "<NbOfTransactions>", 1)
            .replacen("</NbOfTxs>", "</NbOfTransactions>", 1);
        let errors = validate(Schema::Pain001V09, &broken).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("NbOfTransactions")),
            "{errors:?}"
        );
        let errors = validate(Schema::Pain001V09, "<Document>").unwrap_err();
        assert!(errors[0].contains("not well-formed"), "{errors:?}");
    }
}

//! `[prices]`: what a million tokens cost per model, so that a cost record with tokens but no
//! amount is priced (`cost_source = "price_table"`). A model missing from the table is stored as
//! `unpriced` (cost 0), counted, and alerted on — never silently taken as free.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Body, CostSource, Currency, Event};
use crate::problems::Problems;

/// One model's prices, per million tokens, in `currency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
    /// For input tokens served from the provider's prompt cache; the input price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_million: Option<f64>,
    /// `$` (USD) or `￥` (CNY); also `USD`, `CNY`, `RMB`.
    #[serde(default = "usd")]
    pub currency: String,
}

fn usd() -> String {
    "$".into()
}

/// The price table: model name → price. A model is looked up by its exact name, then by the part
/// after the last `/` (`openai/gpt-4o` finds `gpt-4o`).
pub type PriceTable = BTreeMap<String, Price>;

pub fn validate(table: &PriceTable, p: &mut Problems) {
    for (model, price) in table {
        let key = |k: &str| format!("prices.{model:?}.{k}");
        let mut amount = |k: &str, v: f64| {
            if !(v.is_finite() && v >= 0.0) {
                p.add(&key(k), format!("is {v}; expected a price ≥ 0 per million tokens"));
            }
        };
        amount("input_per_million", price.input_per_million);
        amount("output_per_million", price.output_per_million);
        if let Some(c) = price.cached_input_per_million {
            amount("cached_input_per_million", c);
        }
        if Currency::parse(&price.currency).is_none() {
            p.add(
                &key("currency"),
                format!("is {:?}; expected \"$\" (USD) or \"￥\" (CNY, RMB)", price.currency),
            );
        }
    }
}

/// Prices the cost records in `events` that came without an amount.
pub fn price(table: &PriceTable, events: &mut [Event]) {
    for e in events {
        let Body::Cost(c) = &mut e.body else { continue };
        if c.source != CostSource::Unpriced {
            continue;
        }
        let found = table
            .get(&c.model)
            .or_else(|| c.model.rsplit_once('/').and_then(|(_, short)| table.get(short)));
        let Some(price) = found else { continue };
        let input = c.input_tokens.unwrap_or(0) as f64;
        let cached = (c.cached_input_tokens.unwrap_or(0) as f64).min(input);
        let output = c.output_tokens.unwrap_or(0) as f64;
        let cached_price = price.cached_input_per_million.unwrap_or(price.input_per_million);
        c.cost =
            ((input - cached) * price.input_per_million + cached * cached_price + output * price.output_per_million)
                / 1_000_000.0;
        c.currency = Currency::parse(&price.currency).unwrap_or(Currency::Usd);
        c.source = CostSource::PriceTable;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, Parser, Source, Timestamp};
    use std::sync::Arc;

    #[test]
    fn tokens_without_an_amount_are_priced_and_unknown_models_stay_unpriced() {
        let parser = Parser::new(Arc::new(crate::redact::Redactor::disabled()));
        let parse = |line: &str| parser.parse(line.as_bytes(), &Source::from("t"), Timestamp(0), EventId::new());
        let mut table = PriceTable::new();
        table.insert(
            "gpt-4o".into(),
            Price {
                input_per_million: 2.5,
                output_per_million: 10.0,
                cached_input_per_million: Some(1.25),
                currency: "$".into(),
            },
        );
        let mut events = vec![
            parse(
                r#"{"type":"cost","model":"openai/gpt-4o","input_tokens":1000000,"cached_input_tokens":200000,"output_tokens":100000}"#,
            ),
            parse(r#"{"type":"cost","model":"mystery","input_tokens":10}"#),
            parse(r#"{"type":"cost","model":"gpt-4o","cost":0.5,"input_tokens":10}"#),
        ];
        price(&table, &mut events);
        let costs: Vec<(f64, CostSource)> = events
            .iter()
            .map(|e| match &e.body {
                Body::Cost(c) => (c.cost, c.source),
                _ => panic!("a cost"),
            })
            .collect();
        // 800k × 2.5 + 200k × 1.25 + 100k × 10, per million.
        assert_eq!(costs[0], (2.0 + 0.25 + 1.0, CostSource::PriceTable));
        assert_eq!(costs[1], (0.0, CostSource::Unpriced));
        assert_eq!(costs[2], (0.5, CostSource::Reported), "a reported amount is kept");
    }
}

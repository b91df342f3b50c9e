//! Money settings shared by the API's cost statistics (and, later, the budget gate): one place for
//! the exchange rate, so every total in RMB is computed the same way.

use serde::{Deserialize, Serialize};

use crate::config::Problems;
use crate::event::Currency;

/// `[budget]`: how costs in other currencies count in RMB.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// RMB per US dollar, as the original app's `USD_TO_RMB_RATE`.
    pub usd_to_rmb_rate: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig { usd_to_rmb_rate: 7.2 }
    }
}

impl BudgetConfig {
    pub fn validate(&self, p: &mut Problems) {
        if !(self.usd_to_rmb_rate.is_finite() && self.usd_to_rmb_rate > 0.0 && self.usd_to_rmb_rate <= 1000.0) {
            p.add(
                "budget.usd_to_rmb_rate",
                format!(
                    "is {}; expected a number above 0 and at most 1000",
                    self.usd_to_rmb_rate
                ),
            );
        }
    }

    /// `amount` of `currency` in RMB.
    pub fn to_rmb(&self, amount: f64, currency: Currency) -> f64 {
        match currency {
            Currency::Usd => amount * self.usd_to_rmb_rate,
            Currency::Cny => amount,
        }
    }
}

//! Logging: UFW's levels and the per-rule `log` / `log-all`.

use serde::{Deserialize, Serialize};

/// UFW's logging levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Nothing is logged.
    Off,
    /// Blocked packets that match no rule (rate-limited), and rules marked `log`.
    #[default]
    Low,
    /// Low, plus allowed packets that match no rule, invalid packets and new connections.
    Medium,
    /// Medium, auditing every packet (rate-limited); what falls through to a default and
    /// invalid packets are logged without a rate limit.
    High,
    /// High, with the audit of every packet not rate-limited either.
    Full,
}

impl LogLevel {
    /// The word shown by `status verbose`.
    pub fn word(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Low => "low",
            LogLevel::Medium => "medium",
            LogLevel::High => "high",
            LogLevel::Full => "full",
        }
    }
}

/// Per-rule logging (`log` / `log-all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleLog {
    /// No per-rule logging.
    #[default]
    None,
    /// Log new connections matching the rule.
    Log,
    /// Log every packet matching the rule.
    LogAll,
}

//! What alerts say, in Chinese (the app's language) or English: the value, the threshold, the
//! window, and what to do. Each function gives (title, message).

use super::budget::{Period, Reach, Verdict};
use super::vocabulary::Language;

pub struct Text<'a> {
    pub language: Language,
    /// The window in words ("1m", "60s").
    pub window: &'a str,
}

impl Text<'_> {
    /// A title says what is wrong; the severity's word is added once, where it is shown (the
    /// log line, a chat heading, the page's badge).
    fn title(&self, zh: &str, en: &str) -> String {
        match self.language {
            Language::Zh => zh.to_string(),
            Language::En => en.to_string(),
        }
    }

    fn pick(&self, zh: String, en: String) -> String {
        match self.language {
            Language::Zh => zh,
            Language::En => en,
        }
    }

    pub fn error_rate(&self, value: f64, threshold: f64, calls: u64, model: Option<&str>) -> (String, String) {
        let w = self.window;
        match model {
            None => (
                self.title("错误率过高", "Error rate too high"),
                self.pick(
                    format!("错误率 {value:.1}%（阈值 {threshold}%，最近 {w} 内 {calls} 次调用）。请检查 API 服务商状态、密钥和余额。"),
                    format!("Error rate {value:.1}% (threshold {threshold}%, {calls} calls in the last {w}). Check the API provider's status, keys and balance."),
                ),
            ),
            Some(m) => (
                self.title(&format!("模型 {m} 错误率过高"), &format!("Error rate of {m} too high")),
                self.pick(
                    format!("模型 {m} 错误率 {value:.1}%（阈值 {threshold}%，最近 {w} 内 {calls} 次调用）。可考虑切换到其他模型。"),
                    format!("{m}: error rate {value:.1}% (threshold {threshold}%, {calls} calls in the last {w}). Consider switching models."),
                ),
            ),
        }
    }

    pub fn avg_duration(&self, value: f64, threshold: f64) -> (String, String) {
        let w = self.window;
        (
            self.title("响应时间过长", "Responses too slow"),
            self.pick(
                format!("平均响应时间 {value:.2}s（阈值 {threshold}s，最近 {w}）。请检查网络和服务商状态。"),
                format!("Average response time {value:.2}s (threshold {threshold}s, last {w}). Check the network and the provider."),
            ),
        )
    }

    pub fn p95_duration(&self, value: f64, threshold: f64) -> (String, String) {
        let w = self.window;
        (
            self.title("P95 响应时间过长", "p95 response time too long"),
            self.pick(
                format!("95% 的请求在 {value:.2}s 内完成（阈值 {threshold}s，最近 {w}）。"),
                format!("95 % of calls finished within {value:.2}s (threshold {threshold}s, last {w})."),
            ),
        )
    }

    pub fn request_count(&self, value: f64, threshold: f64) -> (String, String) {
        let w = self.window;
        (
            self.title("请求量过高", "Request volume too high"),
            self.pick(
                format!("最近 {w} 内 {value:.0} 次调用（阈值 {threshold:.0}）。请确认是否有失控的循环或重试。"),
                format!(
                    "{value:.0} calls in the last {w} (threshold {threshold:.0}). Look for a runaway loop or retries."
                ),
            ),
        )
    }

    pub fn no_events(&self, host: &str, seconds: f64, threshold: f64) -> (String, String) {
        (
            self.title(&format!("{host} 没有事件"), &format!("No events from {host}")),
            self.pick(
                format!("{host} 已 {seconds:.0} 秒没有任何事件（阈值 {threshold:.0} 秒）：应用可能已停止，或无法连接到收集器的套接字。"),
                format!("Nothing from {host} for {seconds:.0} s (threshold {threshold:.0} s): the app may be down, or unable to reach the collector's socket."),
            ),
        )
    }

    pub fn store_unreachable(&self, seconds: f64, threshold: f64, outbox: u64) -> (String, String) {
        (
            self.title("MongoDB 不可达", "MongoDB unreachable"),
            self.pick(
                format!("MongoDB 已不可达 {seconds:.0} 秒（阈值 {threshold:.0} 秒）；{outbox} 条事件暂存在 outbox 中，恢复后自动补写。请检查 MongoDB。"),
                format!("MongoDB has been unreachable for {seconds:.0} s (threshold {threshold:.0} s); {outbox} events wait in the outbox and are delivered when it is back. Check MongoDB."),
            ),
        )
    }

    pub fn store_failing(&self, what: &str) -> (String, String) {
        (
            self.title("存储拒绝写入", "Store refuses writes"),
            self.pick(
                format!("{what}。事件暂存在 outbox 中；修复原因（例如用户权限）后自动补写，无需重启。"),
                format!("{what}. Events wait in the outbox and are delivered once the cause (e.g. the user's roles) is fixed; no restart needed."),
            ),
        )
    }

    pub fn outbox_dropping(&self, dropped: f64) -> (String, String) {
        (
            self.title("outbox 已满，事件被丢弃", "Outbox full, events dropped"),
            self.pick(
                format!("outbox 超过 mongodb.max_outbox_bytes，已丢弃最早的 {dropped:.0} 条事件。请尽快修复 MongoDB，或提高上限。"),
                format!("The outbox went over mongodb.max_outbox_bytes and dropped its oldest {dropped:.0} events. Fix MongoDB soon, or raise the cap."),
            ),
        )
    }

    pub fn rejects(&self, value: f64, threshold: f64) -> (String, String) {
        let w = self.window;
        (
            self.title("大量行被拒收", "Many lines rejected"),
            self.pick(
                format!("最近 {w} 内拒收了 {value:.0} 行（阈值 {threshold:.0}）。原因见 /api/rejects 或 api_rejects。"),
                format!("{value:.0} lines rejected in the last {w} (threshold {threshold:.0}). The reasons are in /api/rejects (api_rejects)."),
            ),
        )
    }

    pub fn unpriced(&self, model: &str, calls: f64) -> (String, String) {
        let w = self.window;
        (
            self.title(&format!("模型 {model} 没有价格"), &format!("No price for {model}")),
            self.pick(
                format!("最近 {w} 内 {calls:.0} 条 {model} 的费用记录没有金额，且 [prices] 中没有它的价格：它们按 0 计入预算。请在配置中添加 [prices.\"{model}\"]。"),
                format!("{calls:.0} cost records of {model} in the last {w} came without an amount, and [prices] has no price for it: the budget counts them as 0. Add [prices.\"{model}\"] to the configuration."),
            ),
        )
    }

    /// One budget alert per period (and model): its title names the step passed (which changes
    /// only when it escalates), its message the spend now and where the rate leads.
    #[allow(clippy::too_many_arguments)]
    pub fn budget(
        &self,
        period: Period,
        sliding: bool,
        step: f64,
        spent: f64,
        limit: f64,
        model: Option<&str>,
        rate_per_hour: f64,
        reach: &Reach,
    ) -> (String, String) {
        let pct = (spent / limit * 100.0).round();
        let step_pct = (step * 100.0).round();
        let (zh_window, en_window) = match (period, sliding) {
            (Period::Hour, true) => ("最近1小时", "the last hour"),
            (Period::Day, true) => ("最近24小时", "the last 24 hours"),
            (Period::Hour, false) => ("本小时", "this hour"),
            (Period::Day, false) => ("今天", "today"),
        };
        let (zh_limit, en_limit) = match period {
            Period::Hour => ("每小时上限", "the hourly limit"),
            Period::Day => ("每日上限", "the daily limit"),
        };
        let (zh_who, en_who) = match model {
            Some(m) => (format!("模型 {m} 的"), format!("{m}: ")),
            None => (String::new(), String::new()),
        };
        let title = if step >= 1.0 {
            self.title(
                &format!("{zh_who}{zh_window}API费用超过限制"),
                &format!("{en_who}API spend over the limit for {en_window}"),
            )
        } else {
            self.title(
                &format!("{zh_who}{zh_window}API费用已过限制的 {step_pct}%"),
                &format!("{en_who}API spend past {step_pct} % of the limit for {en_window}"),
            )
        };
        let (zh_next, en_next) = match reach.verdict {
            Verdict::Reached => (
                "新的调用将被 /api/budget 拒绝，直到费用回落到限制以下。".to_string(),
                "New calls are refused by /api/budget until spend falls under the limit.".to_string(),
            ),
            Verdict::At => {
                let at = reach.at_local.as_deref().unwrap_or("?");
                (
                    format!("按最近的速度（每小时 ￥{rate_per_hour:.2}），预计 {at} 达到{zh_limit}。"),
                    format!("At the recent rate (¥{rate_per_hour:.2} an hour) {en_limit} is reached at {at}."),
                )
            }
            Verdict::NeverAtThisRate => {
                let steady = reach.steady_rmb.unwrap_or(0.0);
                (
                    format!("按最近的速度（每小时 ￥{rate_per_hour:.2}），{zh_window}的费用将稳定在 ￥{steady:.2}，不会达到{zh_limit}。"),
                    format!("At the recent rate (¥{rate_per_hour:.2} an hour) spend for {en_window} settles at ¥{steady:.2}, under {en_limit}."),
                )
            }
            Verdict::NotBeforeWindowEnds => (
                format!("按最近的速度（每小时 ￥{rate_per_hour:.2}），{zh_window}结束前不会达到{zh_limit}。"),
                format!("At the recent rate (¥{rate_per_hour:.2} an hour) {en_limit} is not reached before {en_window} ends."),
            ),
            Verdict::NoSpend | Verdict::NoLimit => (String::new(), String::new()),
        };
        let message = self.pick(
            format!("{zh_who}{zh_window}API费用 ￥{spent:.2}，限制 ￥{limit:.2}（{pct}%，已过 {step_pct}% 档）。{zh_next}"),
            format!("{en_who}API spend for {en_window} is ¥{spent:.2} of a ¥{limit:.2} limit ({pct} %, past the {step_pct} % step). {en_next}"),
        );
        (title, message.trim_end().to_string())
    }
}

//! Webhook URLs carry their keys (`access_token=`, `key=`, a token in the path): they are masked
//! wherever a URL is shown, keeping only the last 4 characters of each key so that people can tell
//! two robots apart.

/// `https://oapi.dingtalk.com/robot/send?access_token=***ab12`; a password in the URL is `***`.
pub fn mask_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        // Not a URL (a config error reported elsewhere); show nothing that may be a key.
        return mask_token(url);
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    let path: Vec<String> = parsed
        .path_segments()
        .map(|segments| {
            segments
                .map(|s| {
                    if looks_like_token(s) {
                        mask_token(s)
                    } else {
                        s.to_string()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if !path.is_empty() {
        parsed.set_path(&path.join("/"));
    }
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), mask_token(&v)))
        .collect();
    if !pairs.is_empty() {
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // The serializer percent-encodes the `*`s of masked query values; show them as written.
    parsed.to_string().replace("%2A%2A%2A", "***")
}

/// A path segment that is a key rather than a name: long, or mixing letters and digits
/// (Feishu's UUID, Slack's `T…/B…/…`).
fn looks_like_token(s: &str) -> bool {
    let has_digit = s.chars().any(|c| c.is_ascii_digit());
    let has_alpha = s.chars().any(|c| c.is_ascii_alphabetic());
    s.len() >= 20 || (s.len() >= 8 && has_digit && has_alpha)
}

fn mask_token(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() < 12 {
        "***".to_string()
    } else {
        format!("***{}", chars[chars.len() - 4..].iter().collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_queries_paths_and_passwords_are_masked() {
        assert_eq!(
            mask_url("https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef0123"),
            "https://oapi.dingtalk.com/robot/send?access_token=***0123"
        );
        assert_eq!(
            mask_url("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"),
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***5aaa"
        );
        assert_eq!(
            mask_url("https://open.feishu.cn/open-apis/bot/v2/hook/2d5e8b1c-3f4a-4b6c-9d7e-0a1b2c3d4e5f"),
            "https://open.feishu.cn/open-apis/bot/v2/hook/***4e5f"
        );
        assert_eq!(
            mask_url("https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
            "https://hooks.slack.com/services/***/***/***XXXX"
        );
        assert_eq!(
            mask_url("http://am:secretpw@alertmanager:9093"),
            "http://am:***@alertmanager:9093/"
        );
        assert_eq!(
            mask_url("http://127.0.0.1:8080/hook?x=1"),
            "http://127.0.0.1:8080/hook?x=***"
        );
        assert_eq!(mask_url("not a url with key abcdefghijklmnop"), "***mnop");
    }
}

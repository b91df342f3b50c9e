//! Webhook URLs carry their keys (`access_token=`, `key=`, a token in the path): they are masked
//! wherever a URL is shown, keeping only the last 4 characters of each key so that people can tell
//! two robots apart.

/// `https://oapi.dingtalk.com/robot/send?access_token=***ab12`; a password in the URL is `***`, a
/// user (a token sent as Basic auth: `https://TOKEN@host/…`) and a fragment are masked like keys.
pub fn mask_url(url: &str) -> String {
    masked(url).0
}

/// Whether `url` holds anything [`mask_url`] masks: a key, a password, a token as the user. Not
/// the same as the masked URL differing from `url`: printing normalizes it (`http://host:9093`
/// becomes `http://host:9093/`), which reveals nothing.
pub fn holds_key(url: &str) -> bool {
    masked(url).1
}

/// The masked URL, and whether anything was masked.
fn masked(url: &str) -> (String, bool) {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        // Not a URL (a config error reported elsewhere); show nothing that may be a key.
        return (mask_token(url), !url.is_empty());
    };
    let mut any = false;
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
        any = true;
    } else if !parsed.username().is_empty() {
        // A user without a password is a token sent as Basic auth's user (`https://TOKEN@host/`);
        // beside a password it is a name, and stays.
        let user = mask_token(parsed.username());
        let _ = parsed.set_username(&user);
        any = true;
    }
    if let Some(fragment) = parsed.fragment().filter(|f| !f.is_empty()) {
        let fragment = mask_token(fragment);
        parsed.set_fragment(Some(&fragment));
        any = true;
    }
    let path: Vec<String> = parsed
        .path_segments()
        .map(|segments| {
            segments
                .map(|s| {
                    if looks_like_token(s) {
                        any = true;
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
        any = true;
    }
    // The serializer percent-encodes the `*`s of masked query values; show them as written.
    (parsed.to_string().replace("%2A%2A%2A", "***"), any)
}

/// A path segment that is a key rather than a name: one of its parts (between `-`, `_`, `.`) is
/// long (16 or more: Slack's and Discord's tokens, Mattermost's ids) or mixes letters and digits
/// over 8 or more characters (Feishu's UUID, Slack's `T…`/`B…`). Names made of words
/// (`hooks`, `alerts-v2`, `alertmanager-webhook-receiver`) are not keys and stay readable.
fn looks_like_token(segment: &str) -> bool {
    segment.split(['-', '_', '.']).any(|part| {
        let has_digit = part.chars().any(|c| c.is_ascii_digit());
        let has_alpha = part.chars().any(|c| c.is_ascii_alphabetic());
        part.len() >= 16 || (part.len() >= 8 && has_digit && has_alpha)
    })
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

    #[test]
    fn a_token_as_the_user_or_the_fragment_is_masked_and_plain_paths_are_not() {
        assert_eq!(
            mask_url("https://0123456789abcdefXYZW@hooks.example.com/notify"),
            "https://***XYZW@hooks.example.com/notify"
        );
        assert_eq!(
            mask_url("https://hooks.example.com/notify#tok_0123456789abcdefQRST"),
            "https://hooks.example.com/notify#***QRST"
        );
        assert_eq!(mask_url("http://tok@example.com/x#k"), "http://***@example.com/x#***");
        for plain in [
            "http://127.0.0.1:9000/hooks/alerts",
            "http://alertmanager:9093/api/v2/alerts",
            "https://example.com/lngpt-collector/webhooks/incoming",
            "http://localhost:8080/",
            "http://127.0.0.1:9000/lngpt-collector-alerts/alerts-v2",
            "http://receiver.internal/alertmanager-webhook-receiver",
        ] {
            assert_eq!(mask_url(plain), plain, "nothing secret in it");
            assert!(!holds_key(plain), "{plain}");
        }
        // Vendors' keys in the path stay masked.
        assert_eq!(
            mask_url("https://discord.com/api/webhooks/123456789012345678/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
            "https://discord.com/api/webhooks/***5678/***6789"
        );
        assert!(holds_key(
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
        ));
        assert!(holds_key("https://example.com/notify#tok_0123456789abcdefQRST"));
        // A URL without a path is printed with one, which is not a key.
        assert!(!holds_key("http://alertmanager:9093"));
    }
}

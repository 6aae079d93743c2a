//! User agents: browser, OS, device class and bot flag (`woothee` plus a list of crawler
//! tokens). Headless Chromium is *not* a bot: our own browser tests run it.

use woothee::{parser::Parser, woothee::VALUE_UNKNOWN};

use crate::{
    event::{ClientInfo, DeviceType},
    text::truncate_bytes,
};

/// Browser / OS name used when it cannot be told.
pub const UNKNOWN: &str = "Unknown";

/// Longest user agent looked at; the rest is ignored.
const MAX_UA_LEN: usize = 1024;

/// Case-insensitive substrings of clear crawlers, scrapers and HTTP tools.
const BOT_TOKENS: &[&str] = &[
    "googlebot",
    "google-inspectiontool",
    "adsbot-google",
    "mediapartners-google",
    "bingbot",
    "ahrefsbot",
    "semrushbot",
    "mj12bot",
    "dotbot",
    "facebookexternalhit",
    "facebookbot",
    "meta-externalagent",
    "slackbot",
    "twitterbot",
    "linkedinbot",
    "discordbot",
    "telegrambot",
    "whatsapp/",
    "gptbot",
    "chatgpt-user",
    "oai-searchbot",
    "claudebot",
    "claude-user",
    "anthropic-ai",
    "perplexitybot",
    "ccbot",
    "bytespider",
    "petalbot",
    "yandexbot",
    "baiduspider",
    "duckduckbot",
    "applebot",
    "amazonbot",
    "bot/",
    "bot;",
    "crawler",
    "spider",
    "curl/",
    "wget/",
    "python-requests/",
    "python-urllib/",
    "scrapy/",
];

/// Parses a `User-Agent` value. Empty → everything unknown.
pub fn parse(ua: &str) -> ClientInfo {
    let ua = truncate_bytes(ua.trim(), MAX_UA_LEN);
    if ua.is_empty() {
        return ClientInfo {
            browser: UNKNOWN.to_owned(),
            os: UNKNOWN.to_owned(),
            device: DeviceType::Unknown,
            is_bot: false,
        };
    }
    let parsed = Parser::new().parse(ua);
    let (name, category, os) = parsed
        .as_ref()
        .map_or((VALUE_UNKNOWN, VALUE_UNKNOWN, VALUE_UNKNOWN), |r| {
            (r.name, r.category, r.os)
        });
    let is_bot = category == "crawler" || has_bot_token(ua);
    let device = if is_bot {
        DeviceType::Bot
    } else if is_tablet(ua) {
        DeviceType::Tablet
    } else {
        match category {
            "pc" => DeviceType::Desktop,
            "smartphone" | "mobilephone" => DeviceType::Mobile,
            _ => DeviceType::Unknown,
        }
    };
    ClientInfo {
        browser: known_or_unknown(name),
        os: known_or_unknown(os),
        device,
        is_bot,
    }
}

fn known_or_unknown(value: &str) -> String {
    if value.is_empty() || value == VALUE_UNKNOWN {
        UNKNOWN.to_owned()
    } else {
        value.to_owned()
    }
}

fn has_bot_token(ua: &str) -> bool {
    let lower = ua.to_ascii_lowercase();
    BOT_TOKENS.iter().any(|token| lower.contains(token))
}

/// iPads, Android devices without `Mobile`, and UAs that say `Tablet` (not Windows "Tablet PC").
fn is_tablet(ua: &str) -> bool {
    ua.contains("iPad")
        || (ua.contains("Android") && !ua.contains("Mobile"))
        || (ua.contains("Tablet") && !ua.contains("Tablet PC"))
        || ua.contains("Kindle")
        || ua.contains("Silk/")
        || ua.contains("PlayBook")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const EDGE_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51";
    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    const CHROME_ANDROID_PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";
    const CHROME_ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const FIREFOX_ANDROID_TABLET: &str =
        "Mozilla/5.0 (Android 13; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0";
    const HEADLESS: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.60 Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const GOOGLEBOT_MOBILE: &str = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const BINGBOT: &str = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)";
    const AHREFS: &str = "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)";
    const SEMRUSH: &str =
        "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)";
    const FACEBOOK: &str =
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)";
    const SLACK: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";
    const TWITTER: &str = "Twitterbot/1.0";
    const GPTBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";
    const CLAUDEBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)";
    const CCBOT: &str = "CCBot/2.0 (https://commoncrawl.org/faq/)";
    const BYTESPIDER: &str = "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)";
    const PETAL: &str =
        "Mozilla/5.0 (compatible;PetalBot;+https://webmaster.petalsearch.com/site/petalbot)";
    const YANDEX: &str = "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)";
    const BAIDU: &str =
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)";
    const DDG: &str = "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)";
    const APPLEBOT: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)";
    const CURL: &str = "curl/8.5.0";
    const WGET: &str = "Wget/1.21.4";
    const REQUESTS: &str = "python-requests/2.31.0";
    const SOME_CRAWLER: &str = "ExampleCrawler/1.0 (+https://example.org)";

    #[test]
    fn parses_table() {
        use DeviceType::*;
        let cases: &[(&str, &str, &str, DeviceType, bool)] = &[
            (CHROME_MAC, "Chrome", "Mac OSX", Desktop, false),
            (CHROME_WIN, "Chrome", "Windows 10", Desktop, false),
            (EDGE_WIN, "Edge", "Windows 10", Desktop, false),
            (FIREFOX_LINUX, "Firefox", "Linux", Desktop, false),
            (SAFARI_IPHONE, "Safari", "iPhone", Mobile, false),
            (SAFARI_IPAD, "Safari", "iPad", Tablet, false),
            (CHROME_ANDROID_PHONE, "Chrome", "Android", Mobile, false),
            (CHROME_ANDROID_TABLET, "Chrome", "Android", Tablet, false),
            (FIREFOX_ANDROID_TABLET, "Firefox", "Android", Tablet, false),
            (HEADLESS, "Chrome", "Linux", Desktop, false),
            ("", UNKNOWN, UNKNOWN, Unknown, false),
            ("   ", UNKNOWN, UNKNOWN, Unknown, false),
            ("something odd", UNKNOWN, UNKNOWN, Unknown, false),
        ];
        for (ua, browser, os, device, bot) in cases {
            let info = parse(ua);
            assert_eq!(
                (
                    info.browser.as_str(),
                    info.os.as_str(),
                    info.device,
                    info.is_bot
                ),
                (*browser, *os, *device, *bot),
                "{ua}"
            );
        }
    }

    #[test]
    fn flags_bots() {
        for ua in [
            GOOGLEBOT,
            GOOGLEBOT_MOBILE,
            BINGBOT,
            AHREFS,
            SEMRUSH,
            FACEBOOK,
            SLACK,
            TWITTER,
            GPTBOT,
            CLAUDEBOT,
            CCBOT,
            BYTESPIDER,
            PETAL,
            YANDEX,
            BAIDU,
            DDG,
            APPLEBOT,
            CURL,
            WGET,
            REQUESTS,
            SOME_CRAWLER,
        ] {
            let info = parse(ua);
            assert!(info.is_bot, "{ua}");
            assert_eq!(info.device, DeviceType::Bot, "{ua}");
        }
    }

    #[test]
    fn ignores_beyond_limit() {
        let ua = format!("{CHROME_WIN} {}", "x".repeat(10_000));
        assert_eq!(parse(&ua).device, DeviceType::Desktop);
    }
}

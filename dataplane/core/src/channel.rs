//! Channel grouping of a touch: where a visit came from, in the words marketers use.
//!
//! Precedence: explicit UTM medium first, then advertising click ids, then UTM source alone,
//! then the referrer host, then direct. UTM always wins over the referrer (a tagged ad seen via
//! `t.co` is the ad, not "t.co"). An AI assistant as UTM source (`utm_source=chatgpt.com`, as
//! ChatGPT adds to the links it cites) makes the touch `ai_assistant` unless the medium says it
//! was paid; so does an AI assistant's referrer host ([`AI_ASSISTANTS`]).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::event::Utm;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Direct,
    OrganicSearch,
    PaidSearch,
    OrganicSocial,
    PaidSocial,
    Email,
    Affiliate,
    Display,
    Video,
    Referral,
    /// Chat assistants citing the site: ChatGPT, Perplexity, Claude, Gemini, Copilot, …
    AiAssistant,
    /// Tagged traffic whose medium and source match no known group.
    Other,
}

impl Channel {
    pub const ALL: [Channel; 12] = [
        Channel::Direct,
        Channel::OrganicSearch,
        Channel::PaidSearch,
        Channel::OrganicSocial,
        Channel::PaidSocial,
        Channel::Email,
        Channel::Affiliate,
        Channel::Display,
        Channel::Video,
        Channel::Referral,
        Channel::AiAssistant,
        Channel::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Direct => "direct",
            Channel::OrganicSearch => "organic_search",
            Channel::PaidSearch => "paid_search",
            Channel::OrganicSocial => "organic_social",
            Channel::PaidSocial => "paid_social",
            Channel::Email => "email",
            Channel::Affiliate => "affiliate",
            Channel::Display => "display",
            Channel::Video => "video",
            Channel::Referral => "referral",
            Channel::AiAssistant => "ai_assistant",
            Channel::Other => "other",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown channel {0:?}")]
pub struct UnknownChannel(pub String);

impl FromStr for Channel {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownChannel(s.to_owned()))
    }
}

/// Click-id query parameters and the kind of ad network that sets them.
pub const CLICK_IDS: &[(&str, ClickIdKind)] = &[
    ("gclid", ClickIdKind::Search),
    ("gbraid", ClickIdKind::Search),
    ("wbraid", ClickIdKind::Search),
    ("dclid", ClickIdKind::Display),
    ("msclkid", ClickIdKind::Search),
    ("yclid", ClickIdKind::Search),
    ("fbclid", ClickIdKind::Social),
    ("ttclid", ClickIdKind::Social),
    ("li_fat_id", ClickIdKind::Social),
    ("twclid", ClickIdKind::Social),
    ("rdt_cid", ClickIdKind::Social),
    ("scclid", ClickIdKind::Social),
    ("epik", ClickIdKind::Social),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickIdKind {
    Search,
    Social,
    Display,
}

const SEARCH_ENGINES: &[&str] = &[
    "google",
    "bing",
    "yahoo",
    "duckduckgo",
    "baidu",
    "yandex",
    "ecosia",
    "qwant",
    "naver",
    "seznam",
    "startpage",
    "brave",
    "kagi",
    "ask",
    "aol",
];

const SOCIAL_NETWORKS: &[&str] = &[
    "facebook",
    "fb",
    "instagram",
    "twitter",
    "x",
    "t",
    "linkedin",
    "lnkd",
    "reddit",
    "pinterest",
    "tiktok",
    "snapchat",
    "threads",
    "bsky",
    "mastodon",
    "news.ycombinator",
    "ycombinator",
    "quora",
    "tumblr",
    "vk",
    "weibo",
    "discord",
    "telegram",
    "whatsapp",
    "producthunt",
];

const VIDEO_SITES: &[&str] = &["youtube", "youtu", "vimeo", "twitch", "dailymotion"];

const EMAIL_HOSTS: &[&str] = &[
    "mail.google",
    "outlook.live",
    "mail.yahoo",
    "mail.proton",
    "webmail",
    "mail",
];

/// An AI assistant that sends visitors: the hosts its links are followed from (the referrer,
/// `www.` stripped; subdomains included) and the `utm_source` values it or site owners tag
/// them with. The one list both the referrer and the UTM rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AiAssistant {
    pub name: &'static str,
    pub hosts: &'static [&'static str],
    /// `utm_source` spellings besides the hosts (which also count as sources).
    pub sources: &'static [&'static str],
}

pub const AI_ASSISTANTS: &[AiAssistant] = &[
    AiAssistant {
        name: "ChatGPT",
        hosts: &["chatgpt.com", "chat.openai.com"],
        sources: &["chatgpt", "openai", "chat-gpt"],
    },
    AiAssistant {
        name: "Perplexity",
        hosts: &["perplexity.ai"],
        sources: &["perplexity"],
    },
    AiAssistant {
        name: "Claude",
        hosts: &["claude.ai"],
        sources: &["claude", "anthropic"],
    },
    AiAssistant {
        name: "Gemini",
        hosts: &[
            "gemini.google.com",
            "bard.google.com",
            "aistudio.google.com",
            "notebooklm.google.com",
        ],
        sources: &["gemini", "bard", "google-gemini", "google_gemini"],
    },
    AiAssistant {
        name: "Copilot",
        hosts: &[
            "copilot.microsoft.com",
            "copilot.cloud.microsoft",
            "m365.cloud.microsoft",
            "edgeservices.bing.com",
        ],
        sources: &[
            "copilot",
            "bing-copilot",
            "microsoft-copilot",
            "microsoft_copilot",
        ],
    },
    AiAssistant {
        name: "Grok",
        hosts: &["grok.com"],
        sources: &["grok"],
    },
    AiAssistant {
        name: "DeepSeek",
        hosts: &["chat.deepseek.com"],
        sources: &["deepseek"],
    },
    AiAssistant {
        name: "Mistral Le Chat",
        hosts: &["chat.mistral.ai"],
        sources: &["mistral", "lechat"],
    },
    AiAssistant {
        name: "Meta AI",
        hosts: &["meta.ai"],
        sources: &["metaai", "meta-ai"],
    },
    AiAssistant {
        name: "You.com",
        hosts: &["you.com"],
        sources: &[],
    },
    AiAssistant {
        name: "Phind",
        hosts: &["phind.com"],
        sources: &["phind"],
    },
    AiAssistant {
        name: "Poe",
        hosts: &["poe.com"],
        sources: &[],
    },
    AiAssistant {
        name: "Duck.ai",
        hosts: &["duck.ai"],
        sources: &[],
    },
    AiAssistant {
        name: "Qwen",
        hosts: &["chat.qwen.ai"],
        sources: &["qwen"],
    },
    AiAssistant {
        name: "Kimi",
        hosts: &["kimi.com", "kimi.moonshot.cn"],
        sources: &["kimi"],
    },
];

/// UTM mediums that mark a visit as sent by an AI assistant whatever the source.
const AI_MEDIUMS: &[&str] = &[
    "ai",
    "ai_assistant",
    "ai-assistant",
    "ai_referral",
    "ai-referral",
    "llm",
    "chatbot",
];

/// The AI assistant a referrer host or a UTM source names (case-insensitive; `www.`, a scheme
/// and a path are ignored, so `https://claude.ai/referral/…` is Claude).
pub fn ai_assistant(host_or_source: &str) -> Option<&'static AiAssistant> {
    let name = host_or_source.trim().to_ascii_lowercase();
    let name = name
        .split_once("://")
        .map_or(name.as_str(), |(_, rest)| rest);
    let name = name.split(['/', '?', '#', ':']).next().unwrap_or_default();
    let name = name.trim_end_matches('.');
    let name = name.strip_prefix("www.").unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    AI_ASSISTANTS.iter().find(|a| {
        a.sources.contains(&name)
            || a.hosts
                .iter()
                .any(|h| name == *h || name.strip_suffix(h).is_some_and(|rest| rest.ends_with('.')))
    })
}

/// Names a social network, search engine or video site by a host (`www.` already stripped) or a
/// UTM source such as `twitter`, `x.com` or `news.ycombinator.com`.
fn matches_any(name: &str, list: &[&str]) -> bool {
    let name = name.trim().to_ascii_lowercase();
    let name = name.strip_prefix("www.").unwrap_or(&name);
    let name = name.strip_prefix("m.").unwrap_or(name);
    list.iter().any(|known| {
        name == *known
            || name
                .strip_prefix(known)
                .is_some_and(|rest| rest.starts_with('.') && is_public_suffix_like(&rest[1..]))
    })
}

/// `com`, `co.uk`, `de`: the tail of a host after the brand name.
fn is_public_suffix_like(rest: &str) -> bool {
    !rest.is_empty()
        && rest.split('.').count() <= 2
        && rest.split('.').all(|label| label.len() <= 3)
}

/// Everything that decides the channel of one touch.
#[derive(Debug, Clone, Copy, Default)]
pub struct TouchSignals<'a> {
    pub utm: Option<&'a Utm>,
    /// Names of the click-id parameters present on the landing URL.
    pub click_ids: &'a [&'a str],
    /// Normalised external referrer host (`www.` stripped), if any.
    pub referrer_host: Option<&'a str>,
}

pub fn classify(signals: TouchSignals<'_>) -> Channel {
    let utm = signals.utm.filter(|u| !u.is_empty());
    let medium = utm
        .and_then(|u| u.medium.as_deref())
        .map(|m| m.trim().to_ascii_lowercase());
    let source = utm.and_then(|u| u.source.as_deref()).map(str::trim);
    let source_is_social = source.is_some_and(|s| matches_any(s, SOCIAL_NETWORKS));
    let source_is_search = source.is_some_and(|s| matches_any(s, SEARCH_ENGINES));
    let source_is_video = source.is_some_and(|s| matches_any(s, VIDEO_SITES));
    let source_is_ai = source.is_some_and(|s| ai_assistant(s).is_some());

    if let Some(medium) = medium.as_deref() {
        let channel = channel_from_medium(medium, source_is_social, source_is_search);
        let paid = matches!(
            channel,
            Some(Channel::PaidSearch | Channel::PaidSocial | Channel::Display)
        );
        if !paid && (source_is_ai || AI_MEDIUMS.contains(&medium)) {
            return Channel::AiAssistant;
        }
        if let Some(channel) = channel {
            return channel;
        }
    }

    if let Some(kind) = click_id_kind(signals.click_ids) {
        return match kind {
            ClickIdKind::Search => Channel::PaidSearch,
            ClickIdKind::Social => Channel::PaidSocial,
            ClickIdKind::Display => Channel::Display,
        };
    }

    if source.is_some() || medium.is_some() {
        return if source_is_ai {
            Channel::AiAssistant
        } else if source_is_social {
            Channel::OrganicSocial
        } else if source_is_search {
            Channel::OrganicSearch
        } else if source_is_video {
            Channel::Video
        } else if source.is_some_and(|s| s.eq_ignore_ascii_case("newsletter")) {
            Channel::Email
        } else {
            Channel::Other
        };
    }

    match signals.referrer_host {
        Some(host) if ai_assistant(host).is_some() => Channel::AiAssistant,
        Some(host) if matches_any(host, SEARCH_ENGINES) => Channel::OrganicSearch,
        Some(host) if matches_any(host, SOCIAL_NETWORKS) => Channel::OrganicSocial,
        Some(host) if matches_any(host, VIDEO_SITES) => Channel::Video,
        Some(host) if matches_any(host, EMAIL_HOSTS) => Channel::Email,
        Some(_) => Channel::Referral,
        None => Channel::Direct,
    }
}

fn channel_from_medium(medium: &str, social: bool, search: bool) -> Option<Channel> {
    let paid = matches!(
        medium,
        "cpc"
            | "ppc"
            | "paid"
            | "paidsearch"
            | "paid_search"
            | "paid-search"
            | "cpm"
            | "cpv"
            | "cpa"
            | "paid_social"
            | "paidsocial"
            | "paid-social"
            | "ads"
            | "ad"
    ) || medium.starts_with("paid");
    if paid {
        return Some(if medium.contains("social") || social {
            Channel::PaidSocial
        } else if matches!(medium, "cpm" | "cpv") && !search {
            Channel::Display
        } else {
            Channel::PaidSearch
        });
    }
    match medium {
        "organic" => Some(if social {
            Channel::OrganicSocial
        } else {
            Channel::OrganicSearch
        }),
        "social" | "social-network" | "social-media" | "sm" | "social_media" => {
            Some(Channel::OrganicSocial)
        }
        "email" | "e-mail" | "e_mail" | "newsletter" => Some(Channel::Email),
        "affiliate" | "affiliates" | "partner" => Some(Channel::Affiliate),
        "display" | "banner" | "interstitial" | "expandable" => Some(Channel::Display),
        "video" => Some(Channel::Video),
        "referral" => Some(Channel::Referral),
        _ => None,
    }
}

fn click_id_kind(present: &[&str]) -> Option<ClickIdKind> {
    CLICK_IDS
        .iter()
        .find(|(name, _)| present.contains(name))
        .map(|(_, kind)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utm(source: Option<&str>, medium: Option<&str>) -> Utm {
        Utm {
            source: source.map(str::to_owned),
            medium: medium.map(str::to_owned),
            ..Utm::default()
        }
    }

    #[test]
    fn classifies_table() {
        // (utm_source, utm_medium, click ids, referrer host, expected)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            &'a [&'a str],
            Option<&'a str>,
            Channel,
        );
        let cases: &[Case] = &[
            (None, None, &[], None, Channel::Direct),
            (None, None, &[], Some("google.com"), Channel::OrganicSearch),
            (
                None,
                None,
                &[],
                Some("google.co.uk"),
                Channel::OrganicSearch,
            ),
            (
                None,
                None,
                &[],
                Some("duckduckgo.com"),
                Channel::OrganicSearch,
            ),
            (None, None, &[], Some("t.co"), Channel::OrganicSocial),
            (None, None, &[], Some("x.com"), Channel::OrganicSocial),
            (
                None,
                None,
                &[],
                Some("news.ycombinator.com"),
                Channel::OrganicSocial,
            ),
            (None, None, &[], Some("l.facebook.com"), Channel::Referral),
            (None, None, &[], Some("youtube.com"), Channel::Video),
            (None, None, &[], Some("blog.example.org"), Channel::Referral),
            (None, None, &[], Some("mail.google.com"), Channel::Email),
            (None, None, &["gclid"], None, Channel::PaidSearch),
            (
                None,
                None,
                &["msclkid"],
                Some("bing.com"),
                Channel::PaidSearch,
            ),
            (
                None,
                None,
                &["fbclid"],
                Some("facebook.com"),
                Channel::PaidSocial,
            ),
            (None, None, &["ttclid"], None, Channel::PaidSocial),
            (None, None, &["li_fat_id"], None, Channel::PaidSocial),
            (
                Some("twitter"),
                None,
                &[],
                Some("t.co"),
                Channel::OrganicSocial,
            ),
            (
                Some("twitter"),
                Some("cpc"),
                &[],
                Some("t.co"),
                Channel::PaidSocial,
            ),
            (Some("google"), Some("cpc"), &[], None, Channel::PaidSearch),
            (
                Some("google"),
                Some("organic"),
                &[],
                None,
                Channel::OrganicSearch,
            ),
            (Some("newsletter"), None, &[], None, Channel::Email),
            (Some("mailchimp"), Some("email"), &[], None, Channel::Email),
            (
                Some("partner-x"),
                Some("affiliate"),
                &[],
                None,
                Channel::Affiliate,
            ),
            (Some("dsp"), Some("display"), &[], None, Channel::Display),
            (
                Some("acme"),
                Some("weird"),
                &[],
                Some("google.com"),
                Channel::Other,
            ),
            (
                Some("facebook"),
                Some("paid_social"),
                &[],
                None,
                Channel::PaidSocial,
            ),
            (Some("launch"), None, &["gclid"], None, Channel::PaidSearch),
        ];
        for (source, medium, ids, referrer, expected) in cases {
            let u = utm(*source, *medium);
            let got = classify(TouchSignals {
                utm: Some(&u),
                click_ids: ids,
                referrer_host: *referrer,
            });
            assert_eq!(
                got, *expected,
                "source={source:?} medium={medium:?} ids={ids:?} referrer={referrer:?}"
            );
        }
    }

    fn ai(source: Option<&str>, medium: Option<&str>, referrer: Option<&str>) -> Channel {
        let u = utm(source, medium);
        classify(TouchSignals {
            utm: Some(&u),
            click_ids: &[],
            referrer_host: referrer,
        })
    }

    #[test]
    fn ai_assistant_hosts_are_their_own_channel() {
        // Referrer hosts as the normaliser leaves them (lower case, no `www.`).
        let hosts = [
            "chatgpt.com",
            "chat.openai.com",
            "perplexity.ai",
            "labs.perplexity.ai",
            "claude.ai",
            "gemini.google.com",
            "bard.google.com",
            "aistudio.google.com",
            "notebooklm.google.com",
            "copilot.microsoft.com",
            "copilot.cloud.microsoft",
            "m365.cloud.microsoft",
            "edgeservices.bing.com",
            "grok.com",
            "chat.deepseek.com",
            "chat.mistral.ai",
            "meta.ai",
            "you.com",
            "phind.com",
            "poe.com",
            "duck.ai",
            "chat.qwen.ai",
            "kimi.com",
        ];
        for host in hosts {
            assert_eq!(ai(None, None, Some(host)), Channel::AiAssistant, "{host}");
        }
        // Every host of the list is covered above.
        for a in AI_ASSISTANTS {
            for host in a.hosts {
                assert!(
                    ai_assistant(host).is_some_and(|found| found.name == a.name),
                    "{host}"
                );
            }
        }
    }

    #[test]
    fn ai_assistant_spellings() {
        // (utm_source, utm_medium, referrer host, expected): how assistants and site owners
        // actually tag these links.
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, Channel);
        let cases: &[Case] = &[
            // ChatGPT appends utm_source=chatgpt.com to cited links, often with no referrer.
            (Some("chatgpt.com"), None, None, Channel::AiAssistant),
            (
                Some("ChatGPT.com"),
                None,
                Some("chatgpt.com"),
                Channel::AiAssistant,
            ),
            (Some("chatgpt"), None, None, Channel::AiAssistant),
            (Some("chat.openai.com"), None, None, Channel::AiAssistant),
            (Some("openai"), None, None, Channel::AiAssistant),
            (Some("www.perplexity.ai"), None, None, Channel::AiAssistant),
            (
                Some("perplexity"),
                Some("referral"),
                None,
                Channel::AiAssistant,
            ),
            (Some("claude.ai"), None, None, Channel::AiAssistant),
            (Some("claude"), Some("organic"), None, Channel::AiAssistant),
            (Some("gemini"), None, None, Channel::AiAssistant),
            (Some("bard"), None, None, Channel::AiAssistant),
            (Some("copilot"), None, None, Channel::AiAssistant),
            (
                Some("copilot.microsoft.com"),
                None,
                None,
                Channel::AiAssistant,
            ),
            (
                Some("chatgpt"),
                Some("ai_referral"),
                None,
                Channel::AiAssistant,
            ),
            // An AI medium whatever the source.
            (
                Some("someassistant"),
                Some("ai"),
                None,
                Channel::AiAssistant,
            ),
            (Some("acme-bot"), Some("llm"), None, Channel::AiAssistant),
            // Paid placements inside an assistant stay paid.
            (Some("chatgpt"), Some("cpc"), None, Channel::PaidSearch),
            (
                Some("perplexity"),
                Some("paid_social"),
                None,
                Channel::PaidSocial,
            ),
            // UTM wins over an assistant's referrer, as over any referrer.
            (
                Some("newsletter"),
                None,
                Some("chatgpt.com"),
                Channel::Email,
            ),
            // Not assistants: Google search, Bing search, openai.com's own pages, look-alikes.
            (None, None, Some("google.com"), Channel::OrganicSearch),
            (None, None, Some("bing.com"), Channel::OrganicSearch),
            (None, None, Some("openai.com"), Channel::Referral),
            (None, None, Some("notchatgpt.com"), Channel::Referral),
            (None, None, Some("chatgpt.com.evil.net"), Channel::Referral),
            (Some("google"), None, None, Channel::OrganicSearch),
        ];
        for (source, medium, referrer, expected) in cases {
            assert_eq!(
                ai(*source, *medium, *referrer),
                *expected,
                "source={source:?} medium={medium:?} referrer={referrer:?}"
            );
        }
    }

    #[test]
    fn names_the_assistant() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://claude.ai/referral/2025-05-01", Some("Claude")),
            ("https://www.perplexity.ai/search?q=x", Some("Perplexity")),
            ("chatgpt.com", Some("ChatGPT")),
            ("CHATGPT", Some("ChatGPT")),
            ("gemini.google.com:443", Some("Gemini")),
            ("google.com", None),
            ("", None),
            ("www.", None),
        ];
        for (input, expected) in cases {
            assert_eq!(ai_assistant(input).map(|a| a.name), *expected, "{input:?}");
        }
    }

    #[test]
    fn round_trips_names() {
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>().ok(), Some(c));
        }
        assert!("nope".parse::<Channel>().is_err());
    }
}

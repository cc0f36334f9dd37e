//! Credentials in remote URLs. `https://x-access-token:TOKEN@host/repo.git`
//! works with git, so people paste it; tidegate must then never show it.
//! [`split_credentials`] takes the user-info out of a URL at the input (the
//! clean URL is the only one libgit2, the status, the page and the logs
//! ever see; the user name and password become HTTPS credentials), and
//! [`redact`] masks any user-info left in a text that shows URLs (an error
//! from libgit2 naming a redirect target, say).

use super::credentials::{HttpsAuth, SecretFrom};
use crate::sensitive::Sensitive;

/// What replaces the user-info of a URL that is shown.
pub const MASK: &str = "***";

/// The user-info a URL carried: a user name, and a password or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlCredentials {
    /// Percent-decoded. Kept as a `Sensitive` too: forges accept a token
    /// as the user name (`https://TOKEN@github.com/...`).
    pub username: Sensitive,
    /// Percent-decoded; `None` when the URL named only a user.
    pub password: Option<Sensitive>,
}

/// Schemes whose user name is a login, not a secret (kept in the URL;
/// libgit2 needs it to log in).
fn keeps_user(scheme: &str) -> bool {
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "ssh" | "git+ssh" | "ssh+git"
    )
}

/// `url` without its user-info, and that user-info. For `ssh://` URLs the
/// user name stays (it is the login, `git`) and only a password is taken
/// out. URLs without `scheme://` (scp-like `git@host:repo`, paths) carry no
/// password and are returned as they are.
pub fn split_credentials(url: &str) -> (String, Option<UrlCredentials>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    if keeps_user(scheme) {
        return match password {
            None => (url.to_string(), None),
            Some(p) => (
                format!("{scheme}://{user}@{host}{path}"),
                Some(UrlCredentials {
                    username: Sensitive::from_string(percent_decode(user)),
                    password: Some(Sensitive::from_string(percent_decode(p))),
                }),
            ),
        };
    }
    let creds = UrlCredentials {
        username: Sensitive::from_string(percent_decode(user)),
        password: password.map(|p| Sensitive::from_string(percent_decode(p))),
    };
    (format!("{scheme}://{host}{path}"), Some(creds))
}

/// The HTTPS credentials for a remote: a `token` from a file or variable
/// wins (sent with `username`, else the user name the URL carried); else
/// the user-info the URL carried: `user:password` as they are, a lone
/// `TOKEN@` as a token (sent as the password, as forges expect).
pub fn https_auth(
    username: Option<String>,
    token: Option<SecretFrom>,
    from_url: Option<UrlCredentials>,
) -> Option<HttpsAuth> {
    let url_user = |c: &UrlCredentials| c.username.expose_str().map(str::to_string);
    match (token, from_url) {
        (Some(password), from_url) => Some(HttpsAuth {
            username: username.or_else(|| from_url.as_ref().and_then(url_user)),
            password,
        }),
        (None, Some(c)) => Some(match c.password {
            Some(p) => HttpsAuth {
                username: username.or_else(|| c.username.expose_str().map(str::to_string)),
                password: SecretFrom::Inline(p),
            },
            None => HttpsAuth {
                username,
                password: SecretFrom::Inline(c.username),
            },
        }),
        (None, None) => None,
    }
}

/// `text` with the user-info of every `scheme://user:password@host` in it
/// replaced by [`MASK`] (for `ssh://`, only the password). Use it on
/// anything that may show a URL: configured remotes, and errors that quote
/// a URL (libgit2's, a redirect target).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let scheme = &rest[scheme_start..at];
        out.push_str(&rest[..at + 3]);
        let after = &rest[at + 3..];
        let end = after
            .find(|c: char| {
                matches!(
                    c,
                    '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`' | ')' | ']'
                ) || c.is_whitespace()
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                match (keeps_user(scheme), userinfo.split_once(':')) {
                    (true, None) => out.push_str(userinfo),
                    (true, Some((user, _))) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    (false, _) => out.push_str(MASK),
                }
                out.push('@');
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `%XX` escapes decoded (user-info may escape `:`, `@`, `/`); anything
/// malformed is kept as written.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_token_leave_https_urls() {
        let (url, creds) =
            split_credentials("https://x-access-token:ghp_S3cr%40t@git.example.com/org/repo.git");
        assert_eq!(url, "https://git.example.com/org/repo.git");
        let creds = creds.unwrap();
        assert_eq!(creds.username.expose_str(), Some("x-access-token"));
        assert_eq!(
            creds.password.as_ref().and_then(|p| p.expose_str()),
            Some("ghp_S3cr@t")
        );
        // A token given as the user name alone is taken out too.
        let (url, creds) = split_credentials("https://TOKEN123@github.com/o/r");
        assert_eq!(url, "https://github.com/o/r");
        assert_eq!(creds.unwrap().username.expose_str(), Some("TOKEN123"));
        // Host with port, no path.
        let (url, _) = split_credentials("http://u:p@127.0.0.1:8080");
        assert_eq!(url, "http://127.0.0.1:8080");
    }

    #[test]
    fn urls_without_user_info_and_ssh_logins_stay() {
        for u in [
            "https://git.example.com/org/repo.git",
            "file:///srv/repo",
            "ssh://git@host:2222/repo.git",
            "git@github.com:org/repo.git",
            "git://host/repo",
            "https://host/path/with@sign",
        ] {
            assert_eq!(split_credentials(u), (u.to_string(), None), "{u}");
            assert_eq!(redact(u), u, "{u}");
        }
        let (url, creds) = split_credentials("ssh://git:hunter2@host/repo.git");
        assert_eq!(url, "ssh://git@host/repo.git");
        assert_eq!(
            creds.unwrap().password.unwrap().expose_str(),
            Some("hunter2")
        );
    }

    #[test]
    fn url_credentials_become_https_auth_unless_a_token_is_given() {
        let (_, c) = split_credentials("https://bot:pw@h/r");
        let a = https_auth(None, None, c.clone()).unwrap();
        assert_eq!(a.username.as_deref(), Some("bot"));
        assert_eq!(a.password.read().unwrap().expose_str(), Some("pw"));
        assert!(!format!("{a:?}").contains("pw") && !format!("{a:?}").contains("bot"));
        let file = SecretFrom::File("/run/token".into());
        let a = https_auth(None, Some(file.clone()), c).unwrap();
        assert_eq!((a.username.as_deref(), a.password), (Some("bot"), file));
        let (_, c) = split_credentials("https://TOKEN@h/r");
        let a = https_auth(None, None, c).unwrap();
        assert_eq!(a.username, None);
        assert_eq!(a.password.read().unwrap().expose_str(), Some("TOKEN"));
        assert_eq!(https_auth(Some("u".into()), None, None), None);
    }

    #[test]
    fn redact_masks_user_info_inside_any_text() {
        let text = "git remote https://x-access-token:TOKEN@h/o/r.git is unreachable: redirected to 'http://u:PW@other/x' (see ssh://git:PASS@h2/r and https://TOK@h3)";
        let shown = redact(text);
        for secret in ["TOKEN", "PW", "PASS", "TOK@"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(
            shown,
            "git remote https://***@h/o/r.git is unreachable: redirected to 'http://***@other/x' (see ssh://git:***@h2/r and https://***@h3)"
        );
    }
}

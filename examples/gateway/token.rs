//! An OAuth access token for an upstream that wants one (Claude on Vertex AI): from an
//! environment variable, or from a command the operator names (`gcloud auth
//! print-access-token`), run again before the token it gave expires.
//!
//! The token is a secret: it is never logged, its `Debug` shows only where it comes from, and
//! the router takes it out of any error body an upstream sends back.

use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Google's access tokens live an hour; a token from a command is fetched again after this.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(45 * 60);

/// The longest a token command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The most of a command's output read as a token.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Where an upstream's access token comes from.
pub enum AccessToken {
    /// Read once from the environment when the config was loaded.
    Fixed(HeaderValue),
    /// Printed by a command, cached for `refresh`.
    Command {
        argv: Vec<String>,
        refresh: Duration,
        cached: Mutex<Option<(HeaderValue, Instant)>>,
    },
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessToken::Fixed(_) => f.write_str("AccessToken::Fixed(<redacted>)"),
            AccessToken::Command { argv, refresh, .. } => f
                .debug_struct("AccessToken::Command")
                .field("program", &argv.first())
                .field("refresh", refresh)
                .finish_non_exhaustive(),
        }
    }
}

impl AccessToken {
    /// A token as given (from an environment variable); `None` if it cannot be a header.
    pub fn fixed(token: &str) -> Option<AccessToken> {
        Some(AccessToken::Fixed(bearer(token)?))
    }

    /// The token itself when it was given (not fetched), to redact it everywhere.
    pub fn given(&self) -> Option<&str> {
        match self {
            AccessToken::Fixed(value) => token_of(value),
            AccessToken::Command { .. } => None,
        }
    }

    /// A token printed by `argv`, fetched again after `refresh`.
    pub fn command(argv: Vec<String>, refresh: Duration) -> AccessToken {
        AccessToken::Command {
            argv,
            refresh,
            cached: Mutex::new(None),
        }
    }

    /// The `Authorization` value to send now: the cached token while it is fresh, else a new
    /// one from the command (callers at the same time wait for one run). The error says what
    /// went wrong without quoting the command's output.
    pub async fn header(&self) -> Result<HeaderValue, String> {
        match self {
            AccessToken::Fixed(value) => Ok(value.clone()),
            AccessToken::Command {
                argv,
                refresh,
                cached,
            } => {
                let mut cached = cached.lock().await;
                if let Some((value, at)) = &*cached {
                    if at.elapsed() < *refresh {
                        return Ok(value.clone());
                    }
                }
                let value = run(argv).await?;
                *cached = Some((value.clone(), Instant::now()));
                Ok(value)
            }
        }
    }
}

/// Runs the token command; its trimmed standard output is the token.
async fn run(argv: &[String]) -> Result<HeaderValue, String> {
    let (program, args) = argv
        .split_first()
        .ok_or("the access token command is empty")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child)
        .await
        .map_err(|_| {
            format!(
                "the access token command `{program}` ran longer than {} s",
                COMMAND_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("the access token command `{program}` could not run: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "the access token command `{program}` failed ({})",
            output.status
        ));
    }
    let token = std::str::from_utf8(&output.stdout)
        .ok()
        .filter(|_| output.stdout.len() <= MAX_TOKEN_BYTES)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("the access token command `{program}` printed no usable token"))?;
    bearer(token).ok_or_else(|| {
        format!("the access token command `{program}` printed a token unusable in a header")
    })
}

/// `Bearer {token}`, marked sensitive (hyper keeps it out of its own debug output).
fn bearer(token: &str) -> Option<HeaderValue> {
    if token.is_empty() || token.contains(char::is_whitespace) {
        return None;
    }
    let mut value = HeaderValue::try_from(format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The token inside an `Authorization: Bearer` value, to redact it.
pub fn token_of(value: &HeaderValue) -> Option<&str> {
    value.to_str().ok()?.strip_prefix("Bearer ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command printing tok-1, tok-2... one more each run, counted in a file of its own.
    fn counting_command(name: &str) -> (Vec<String>, std::path::PathBuf) {
        let counter = std::env::temp_dir().join(format!("h13-token-{name}-{}", std::process::id()));
        std::fs::write(&counter, "").unwrap();
        let script = format!(
            "echo x >> '{0}'; echo \"  tok-$(wc -l < '{0}' | tr -d ' ')\"",
            counter.display()
        );
        (vec!["sh".into(), "-c".into(), script], counter)
    }

    #[tokio::test]
    async fn a_command_token_is_cached_until_its_refresh_then_fetched_again() {
        let (argv, counter) = counting_command("cached");
        let token = AccessToken::command(argv, DEFAULT_REFRESH);
        assert_eq!(token.header().await.unwrap(), "Bearer tok-1");
        assert_eq!(token.header().await.unwrap(), "Bearer tok-1");
        // A token past its refresh is never sent again.
        let (argv, counter2) = counting_command("stale");
        let token = AccessToken::command(argv, Duration::ZERO);
        assert_eq!(token.header().await.unwrap(), "Bearer tok-1");
        assert_eq!(token.header().await.unwrap(), "Bearer tok-2");
        let _ = std::fs::remove_file(counter);
        let _ = std::fs::remove_file(counter2);
    }

    #[tokio::test]
    async fn a_failing_or_silent_command_is_an_error_that_quotes_no_output() {
        for argv in [
            vec![
                "sh".to_owned(),
                "-c".into(),
                "echo secret-ish; exit 3".into(),
            ],
            vec!["sh".to_owned(), "-c".into(), "true".into()],
            vec!["sh".to_owned(), "-c".into(), "echo 'a b'".into()],
            vec!["/nonexistent/token-command".to_owned()],
            vec![],
        ] {
            let err = AccessToken::command(argv.clone(), DEFAULT_REFRESH)
                .header()
                .await
                .unwrap_err();
            assert!(!err.contains("secret-ish"), "{argv:?}: {err}");
        }
        assert!(format!("{:?}", AccessToken::fixed("ya29.x").unwrap()).contains("redacted"));
    }
}

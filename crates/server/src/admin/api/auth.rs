//! The admin token: a random secret in the data directory (`admin.token`, mode 0600), made at the
//! node's first start and kept across restarts. The API's actions need it as
//! `Authorization: Bearer <token>`; with it, znode reads also show data the ACLs withhold from
//! anonymous readers. Whoever can read the data directory can act on the node, as with the data itself.
//!
//! Left out: several tokens, scopes, expiry (replace the file and restart to rotate it).

use super::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The token file's name in the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// The admin token, or why there is none.
pub struct Token {
    secret: Result<String, String>,
    path: PathBuf,
}

impl Token {
    /// Reads `dir/admin.token`, creating it (32 random bytes, hex, mode 0600) when it is missing. A
    /// failure leaves the actions disabled, with the reason in their answers.
    pub fn load_or_create(dir: &Path) -> Token {
        let path = dir.join(TOKEN_FILE);
        let secret = match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Ok(_) => Err(format!(
                "{} is empty: delete it and restart the node to make a new token",
                path.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        };
        match &secret {
            Ok(_) => tracing::info!(
                path = %path.display(),
                "admin API token (Authorization: Bearer <the file's content>) for its actions"
            ),
            Err(e) => tracing::warn!("admin API actions disabled: {e}"),
        }
        Token { secret, path }
    }

    /// A fixed token (tests).
    pub fn fixed(secret: &str) -> Token {
        Token {
            secret: Ok(secret.to_string()),
            path: PathBuf::from(TOKEN_FILE),
        }
    }

    /// Whether the request carries the token.
    pub fn granted(&self, headers: &HeaderMap) -> bool {
        match (&self.secret, bearer(headers)) {
            (Ok(secret), Some(given)) => same(secret.as_bytes(), given.as_bytes()),
            _ => false,
        }
    }

    /// `Ok` if the request carries the token; otherwise the error to answer, saying where the token is.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let secret = match &self.secret {
            Ok(s) => s,
            Err(why) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the admin actions are disabled: this node has no admin token",
                    why.clone(),
                ))
            }
        };
        let hint = format!(
            "send the header 'Authorization: Bearer <token>' with the content of {} (in the node's data directory)",
            self.path.display()
        );
        match bearer(headers) {
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this action needs the admin token",
                hint,
            )),
            Some(given) if same(secret.as_bytes(), given.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong admin token",
                hint,
            )),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn create(path: &Path) -> Result<String, String> {
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(secret.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(auth).unwrap(),
        );
        h
    }

    #[test]
    fn the_token_is_made_once_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let t = Token::load_or_create(dir.path());
        let secret = std::fs::read_to_string(dir.path().join(TOKEN_FILE)).unwrap();
        assert_eq!(secret.trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Token::load_or_create(dir.path());
        let h = with(&format!("Bearer {}", secret.trim()));
        assert!(t.granted(&h) && again.granted(&h), "kept across restarts");
        assert!(t.check(&h).is_ok());
        assert_eq!(
            t.check(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            t.check(&with("Bearer nope")).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(!t.granted(&with(secret.trim())), "the scheme is required");
    }

    #[test]
    fn an_unwritable_data_dir_disables_the_actions_with_a_reason() {
        let t = Token::load_or_create(Path::new("/nonexistent/roster/dir"));
        let e = t.check(&with("Bearer x")).unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.body.hint.contains("cannot create"), "{}", e.body.hint);
    }
}

//! SASL for clients: the server side of DIGEST-MD5 (RFC 2831) as ZooKeeper offers it, and the users
//! file it checks passwords against.
//!
//! The exchange rides on `sasl` packets (opcode 102, `GetSASLRequest` in, `SetSASLResponse` out), each
//! answered at once by the connection:
//! 1. the client sends an empty token; the server answers a challenge: realm `zk-sasl-md5` (the
//!    fixed name ZooKeeper's clients and servers use for DIGEST-MD5), a fresh nonce, `qop="auth"`,
//!    `charset=utf-8`, `algorithm=md5-sess`;
//! 2. the client sends its digest-response; the server checks nonce, realm, qop and the response
//!    hash against the user's password, and answers `rspauth=...`; the session now holds `sasl:<user>`.
//!
//! Anything else (a first token that is not empty, as from a mechanism Roster does not offer such as
//! PLAIN or GSSAPI; an unknown user; a wrong password; a malformed response) fails the login: the
//! connection answers `AuthFailed` and closes, as ZooKeeper does. The authorization id a client may
//! send is ignored: the session's identity is the authenticated user, as in ZooKeeper's
//! `SaslServerCallbackHandler` (which applies Kerberos name rules; a DIGEST-MD5 user name without `@`
//! or `/` passes them unchanged, and Roster uses the name as is).
//!
//! The users file is a JAAS file as ZooKeeper reads it: the `Server` section's `user_NAME="PASSWORD"`
//! options, so an operator can reuse theirs. It is read again at each login, so edits apply without a
//! restart. Left out: qop `auth-int`/`auth-conf` (integrity and confidentiality layers; use TLS),
//! GSSAPI/Kerberos, subsequent authentication, charsets other than UTF-8.

use md5::{Digest, Md5};
use std::collections::HashMap;
use std::path::Path;

/// The realm ZooKeeper fixes for DIGEST-MD5 (`SecurityUtils`' `zk-sasl-md5`).
pub const REALM: &str = "zk-sasl-md5";

/// Users and passwords, from a JAAS file's `Server` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Users(pub HashMap<String, String>);

impl Users {
    /// Reads and parses a JAAS file; the error says what is wrong and where.
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read SASL users file {}: {e}", path.display()))?;
        Users::parse(&text).map_err(|e| format!("SASL users file {}: {e}", path.display()))
    }

    /// Parses the `Server` section of a JAAS file: `Server { MODULE FLAG user_bob="secret" ...; };`.
    pub fn parse(text: &str) -> Result<Users, String> {
        let toks = tokens(text)?;
        let mut i = 0;
        let mut users = HashMap::new();
        let mut found = false;
        while i < toks.len() {
            let Tok::Word(name) = &toks[i] else {
                return Err(format!("expected a section name, found {:?}", toks[i]));
            };
            if toks.get(i + 1) != Some(&Tok::Sym('{')) {
                return Err(format!("expected '{{' after section {name}"));
            }
            i += 2;
            let this = name == "Server";
            found |= this;
            // Entries: MODULE FLAG (key=value)* ;  until '}'.
            loop {
                match toks.get(i) {
                    Some(Tok::Sym('}')) => {
                        i += 1;
                        break;
                    }
                    Some(Tok::Word(_)) => {}
                    other => {
                        return Err(format!(
                            "section {name}: expected a login module, found {other:?}"
                        ))
                    }
                }
                i += 2; // module class and control flag
                loop {
                    match (toks.get(i), toks.get(i + 1), toks.get(i + 2)) {
                        (Some(Tok::Sym(';')), _, _) => {
                            i += 1;
                            break;
                        }
                        (
                            Some(Tok::Word(k)),
                            Some(Tok::Sym('=')),
                            Some(Tok::Word(v) | Tok::Quoted(v)),
                        ) => {
                            if this {
                                if let Some(user) = k.strip_prefix("user_") {
                                    users.insert(user.to_string(), v.clone());
                                }
                            }
                            i += 3;
                        }
                        (t, _, _) => {
                            return Err(format!(
                                "section {name}: expected key=\"value\" or ';', found {t:?}"
                            ))
                        }
                    }
                }
            }
            if toks.get(i) == Some(&Tok::Sym(';')) {
                i += 1;
            }
        }
        if !found {
            return Err(
                "no Server section (ZooKeeper's JAAS section for the server side)".to_string(),
            );
        }
        Ok(Users(users))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Sym(char),
}

/// JAAS tokens: words, quoted strings, `{ } ; =`; `//` and `/* */` comments skipped.
fn tokens(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                loop {
                    match chars.next() {
                        Some('/') if prev == '*' => break,
                        Some(c) => prev = c,
                        None => return Err("unterminated /* comment".to_string()),
                    }
                }
            }
            '{' | '}' | ';' | '=' => out.push(Tok::Sym(c)),
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => s.push(c),
                            None => return Err("unterminated quoted string".to_string()),
                        },
                        Some(c) => s.push(c),
                        None => return Err("unterminated quoted string".to_string()),
                    }
                }
                out.push(Tok::Quoted(s));
            }
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '=' | '"') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(Tok::Word(s));
            }
        }
    }
    Ok(out)
}

/// Where one connection's DIGEST-MD5 login stands.
#[derive(Debug)]
pub enum DigestMd5 {
    /// Nothing received yet.
    Start,
    /// The challenge with this nonce was sent.
    Challenged {
        /// The nonce the challenge carried.
        nonce: String,
    },
    /// Logged in as this user.
    Done {
        /// The authenticated user.
        user: String,
    },
}

/// The answer to one SASL token.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Send this token back; the login goes on (or is already complete).
    Reply(Vec<u8>),
    /// Logged in: send this token back and add `sasl:<user>` to the session.
    Authenticated {
        /// The authenticated user.
        user: String,
        /// The token for the client (`rspauth=...`).
        reply: Vec<u8>,
    },
    /// The login failed, for this reason (logged; the client gets AuthFailed).
    Failed(String),
}

impl DigestMd5 {
    /// Evaluates the client's token; `users` is consulted only on the digest-response.
    pub fn step(&mut self, token: &[u8], users: impl FnOnce() -> Result<Users, String>) -> Step {
        match std::mem::replace(self, DigestMd5::Start) {
            DigestMd5::Start => {
                if !token.is_empty() {
                    return Step::Failed(
                        "first SASL token is not empty: the client uses a mechanism other than DIGEST-MD5, the only one Roster offers".to_string(),
                    );
                }
                let nonce = {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>())
                };
                let challenge = format!(
                    "realm=\"{REALM}\",nonce=\"{nonce}\",qop=\"auth\",charset=utf-8,algorithm=md5-sess"
                );
                *self = DigestMd5::Challenged { nonce };
                Step::Reply(challenge.into_bytes())
            }
            DigestMd5::Challenged { nonce } => match verify(token, &nonce, users) {
                Ok((user, rspauth)) => {
                    *self = DigestMd5::Done { user: user.clone() };
                    Step::Authenticated {
                        user,
                        reply: format!("rspauth={rspauth}").into_bytes(),
                    }
                }
                Err(e) => Step::Failed(e),
            },
            DigestMd5::Done { user } => {
                *self = DigestMd5::Done { user };
                if token.is_empty() {
                    Step::Reply(Vec::new())
                } else {
                    Step::Failed("SASL token after the login completed".to_string())
                }
            }
        }
    }
}

/// Parses `key=value,key="quoted value",...` (RFC 2831's directive list).
fn directives(token: &[u8]) -> Result<HashMap<String, String>, String> {
    let text =
        std::str::from_utf8(token).map_err(|_| "digest-response is not UTF-8".to_string())?;
    let mut out = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("directive {:?} has no value", key.trim()));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err("unterminated quoted value".to_string()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if out.insert(key.clone(), value.trim().to_string()).is_some() {
            return Err(format!("directive {key} appears twice"));
        }
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Checks a digest-response; returns the user and the `rspauth` value.
fn verify(
    token: &[u8],
    nonce: &str,
    users: impl FnOnce() -> Result<Users, String>,
) -> Result<(String, String), String> {
    let d = directives(token)?;
    let get = |k: &str| {
        d.get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("digest-response lacks {k}"))
    };
    let user = get("username")?;
    let cnonce = get("cnonce")?;
    let nc = get("nc")?;
    let uri = get("digest-uri")?;
    let response = get("response")?.to_ascii_lowercase();
    if get("nonce")? != nonce {
        return Err("digest-response has a nonce this server did not send".to_string());
    }
    let realm = d.get("realm").map(String::as_str).unwrap_or("");
    if realm != REALM {
        return Err(format!("digest-response realm {realm:?} is not {REALM:?}"));
    }
    let qop = d.get("qop").map(String::as_str).unwrap_or("auth");
    if qop != "auth" {
        return Err(format!("qop {qop:?} not offered (only auth)"));
    }
    let users = users()?;
    let Some(password) = users.0.get(user) else {
        return Err(format!("unknown SASL user {user:?}"));
    };
    let inner = md5(&[
        user.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ]);
    let mut a1: Vec<&[u8]> = vec![&inner, b":", nonce.as_bytes(), b":", cnonce.as_bytes()];
    if let Some(z) = d.get("authzid") {
        a1.push(b":");
        a1.push(z.as_bytes());
    }
    let ha1 = hex(&md5(&a1));
    let kd = |a2: &[u8]| {
        let ha2 = hex(&md5(&[a2, uri.as_bytes()]));
        hex(&md5(&[
            ha1.as_bytes(),
            b":",
            nonce.as_bytes(),
            b":",
            nc.as_bytes(),
            b":",
            cnonce.as_bytes(),
            b":",
            qop.as_bytes(),
            b":",
            ha2.as_bytes(),
        ]))
    };
    let expected = kd(b"AUTHENTICATE:");
    // Compared in full whatever the first difference, so timing does not reveal a prefix.
    let same = expected.len() == response.len()
        && expected
            .bytes()
            .zip(response.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(format!("wrong password for SASL user {user:?}"));
    }
    Ok((user.to_string(), kd(b":")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAAS: &str = r#"
        // ZooKeeper's server section
        Server {
            org.apache.zookeeper.server.auth.DigestLoginModule required
            user_super="adminsecret"
            user_bob="bob\"secret";
        };
        /* the client side, ignored */
        Client {
            org.apache.zookeeper.server.auth.DigestLoginModule required
            username="bob" password="x";
        };
    "#;

    #[test]
    fn jaas_server_section() {
        let u = Users::parse(JAAS).unwrap();
        assert_eq!(u.0.len(), 2);
        assert_eq!(u.0["super"], "adminsecret");
        assert_eq!(u.0["bob"], "bob\"secret");
        assert!(Users::parse("Client { m required; };").is_err());
        assert!(Users::parse("Server { m required user_a=\"x\" ").is_err());
        assert!(Users::parse("Server m").is_err());
        assert!(Users::parse("Server { m required user_a= ; };").is_err());
    }

    /// A client's side of the exchange, computed independently of `verify`'s code path.
    fn client_response(challenge: &str, user: &str, pw: &str, cnonce: &str) -> String {
        let d = directives(challenge.as_bytes()).unwrap();
        let nonce = &d["nonce"];
        let inner = md5(&[format!("{user}:{REALM}:{pw}").as_bytes()]);
        let mut a1 = inner.to_vec();
        a1.extend_from_slice(format!(":{nonce}:{cnonce}").as_bytes());
        let ha1 = hex(&md5(&[&a1]));
        let ha2 = hex(&md5(&[b"AUTHENTICATE:zookeeper/zk-sasl-md5"]));
        let resp = hex(&md5(&[format!(
            "{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"
        )
        .as_bytes()]));
        format!(
            "charset=utf-8,username=\"{user}\",realm=\"{REALM}\",nonce=\"{nonce}\",nc=00000001,cnonce=\"{cnonce}\",digest-uri=\"zookeeper/zk-sasl-md5\",maxbuf=65536,response={resp},qop=auth"
        )
    }

    fn users() -> Result<Users, String> {
        Users::parse(JAAS)
    }

    #[test]
    fn login_succeeds_with_the_right_password() {
        let mut s = DigestMd5::Start;
        let Step::Reply(ch) = s.step(b"", users) else {
            panic!("no challenge")
        };
        let ch = String::from_utf8(ch).unwrap();
        assert!(ch.contains("realm=\"zk-sasl-md5\"") && ch.contains("qop=\"auth\""));
        let r = client_response(&ch, "super", "adminsecret", "abc");
        match s.step(r.as_bytes(), users) {
            Step::Authenticated { user, reply } => {
                assert_eq!(user, "super");
                assert!(reply.starts_with(b"rspauth="));
                assert_eq!(reply.len(), 8 + 32);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.step(b"", users), Step::Reply(Vec::new()));
        assert!(matches!(s.step(b"x", users), Step::Failed(_)));
    }

    #[test]
    fn login_fails_on_bad_input() {
        let challenge = |s: &mut DigestMd5| match s.step(b"", users) {
            Step::Reply(c) => String::from_utf8(c).unwrap(),
            other => panic!("{other:?}"),
        };
        let mut s = DigestMd5::Start;
        let ch = challenge(&mut s);
        let r = client_response(&ch, "super", "wrong", "abc");
        assert!(
            matches!(s.step(r.as_bytes(), users), Step::Failed(e) if e.contains("wrong password"))
        );

        let mut s = DigestMd5::Start;
        let ch = challenge(&mut s);
        let r = client_response(&ch, "nobody", "x", "abc");
        assert!(matches!(s.step(r.as_bytes(), users), Step::Failed(e) if e.contains("unknown")));

        // Another mechanism: PLAIN sends credentials in its first token.
        let mut s = DigestMd5::Start;
        assert!(matches!(s.step(b"\0bob\0pw", users), Step::Failed(_)));

        // Garbage and a replayed nonce.
        for bad in [
            &b"\xff\xfe"[..],
            b"username",
            b"username=\"bob",
            b"a=1,a=2",
            b"",
        ] {
            let mut s = DigestMd5::Start;
            challenge(&mut s);
            assert!(matches!(s.step(bad, users), Step::Failed(_)), "{bad:?}");
        }
        let mut s = DigestMd5::Start;
        challenge(&mut s);
        let r = client_response(&ch, "super", "adminsecret", "abc");
        assert!(matches!(s.step(r.as_bytes(), users), Step::Failed(e) if e.contains("nonce")));

        // The users file cannot be read: the login fails with that reason.
        let mut s = DigestMd5::Start;
        let ch = challenge(&mut s);
        let r = client_response(&ch, "super", "adminsecret", "abc");
        assert!(
            matches!(s.step(r.as_bytes(), || Err("gone".to_string())), Step::Failed(e) if e == "gone")
        );
    }
}

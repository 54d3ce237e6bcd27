//! Who may do what: a caller, an action, a yes or no. Pure: the gateway
//! says which action a request is, the key store says who the caller is.

use serde::{Deserialize, Serialize};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: deploy, delete, invoke, read, storage.
    Admin,
    /// Invoke the functions its patterns match, and read their descriptions.
    Invoke,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Invoke => "invoke",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "invoke" => Ok(Role::Invoke),
            _ => Err(format!("role {s:?} is not one of admin, invoke")),
        }
    }
}

/// A key's rights: its role and the functions it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    /// Function-name patterns (`*` any run of characters, `?` one).
    pub functions: Vec<String>,
}

impl Grant {
    /// Whether the grant covers function `name`.
    pub fn covers(&self, name: &str) -> bool {
        self.functions.iter().any(|p| glob_match(p, name))
    }
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `--auth none`: anyone who reaches the loopback listener, with every
    /// right (they can deploy, so nothing could be kept from them).
    Local,
    /// `--auth sigv4` and no credentials.
    Anonymous,
    /// A verified key.
    Key { id: String, grant: Grant },
}

/// What a request does, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Liveness, readiness, V2 server metadata: open to every caller.
    Health,
    /// Invoke a function (the Invoke API, V2 `infer`).
    Invoke(String),
    /// Read one function's description (GetFunction, `/v1/functions/NAME`,
    /// V2 model metadata and readiness).
    Describe(String),
    /// List functions (the list shows what the caller may describe).
    List,
    /// Prometheus metrics.
    Metrics,
    Deploy(String),
    Delete(String),
    /// Instances, scale to zero, logs, dead letters and redrive.
    Operate(String),
    /// Invocation records.
    Records,
    /// Objects, topics and queues.
    Storage,
    /// A route the policy does not know: admins only (fail closed).
    Other,
}

impl Action {
    /// The name the audit log and error messages use.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Health => "health",
            Action::Invoke(_) => "invoke",
            Action::Describe(_) => "describe",
            Action::List => "list",
            Action::Metrics => "metrics",
            Action::Deploy(_) => "deploy",
            Action::Delete(_) => "delete",
            Action::Operate(_) => "operate",
            Action::Records => "records",
            Action::Storage => "storage",
            Action::Other => "other",
        }
    }

    /// The function it is about, if one.
    pub fn function(&self) -> Option<&str> {
        match self {
            Action::Invoke(f)
            | Action::Describe(f)
            | Action::Deploy(f)
            | Action::Delete(f)
            | Action::Operate(f) => Some(f),
            _ => None,
        }
    }
}

impl Caller {
    /// Whether the caller may do `action`.
    pub fn may(&self, action: &Action) -> bool {
        match self {
            Caller::Local => true,
            Caller::Anonymous => *action == Action::Health,
            Caller::Key { grant, .. } => match grant.role {
                Role::Admin => true,
                Role::Invoke => match action {
                    Action::Health | Action::List | Action::Metrics => true,
                    Action::Invoke(f) | Action::Describe(f) => grant.covers(f),
                    _ => false,
                },
            },
        }
    }

    /// Whether a function shows in the caller's listings.
    pub fn sees(&self, function: &str) -> bool {
        self.may(&Action::Describe(function.to_string()))
    }

    /// Whether the caller sees `env` values (secrets, often): only with
    /// every right.
    pub fn sees_env(&self) -> bool {
        match self {
            Caller::Local => true,
            Caller::Anonymous => false,
            Caller::Key { grant, .. } => grant.role == Role::Admin,
        }
    }

    /// The key id, or `-` without one.
    pub fn key_id(&self) -> &str {
        match self {
            Caller::Key { id, .. } => id,
            _ => "-",
        }
    }
}

/// Shell-style matching of a whole name: `*` matches any run of
/// characters, `?` exactly one, everything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it has taken up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: Role, functions: &[&str]) -> Caller {
        Caller::Key {
            id: "K".into(),
            grant: Grant {
                role,
                functions: functions.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    fn every_action(f: &str) -> Vec<Action> {
        let f = f.to_string();
        vec![
            Action::Health,
            Action::Invoke(f.clone()),
            Action::Describe(f.clone()),
            Action::List,
            Action::Metrics,
            Action::Deploy(f.clone()),
            Action::Delete(f.clone()),
            Action::Operate(f),
            Action::Records,
            Action::Storage,
            Action::Other,
        ]
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*", ""));
        assert!(glob_match("iris-*", "iris-logistic"));
        assert!(!glob_match("iris-*", "xiris-logistic"));
        assert!(glob_match("*-v?", "model-v2"));
        assert!(!glob_match("*-v?", "model-v10"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("echo", "echo"));
        assert!(!glob_match("echo", "echo2"));
        assert!(glob_match("**x", "yx"));
    }

    #[test]
    fn admin_and_local_may_do_everything() {
        for caller in [key(Role::Admin, &["nothing-matches"]), Caller::Local] {
            for a in every_action("f") {
                assert!(caller.may(&a), "{caller:?} {a:?}");
            }
        }
        assert!(key(Role::Admin, &[]).sees_env());
        assert!(Caller::Local.sees_env());
    }

    #[test]
    fn an_invoke_key_invokes_and_describes_its_functions_only() {
        let k = key(Role::Invoke, &["iris-*", "echo"]);
        for f in ["iris-logistic", "echo"] {
            assert!(k.may(&Action::Invoke(f.into())));
            assert!(k.may(&Action::Describe(f.into())));
            assert!(k.sees(f));
        }
        assert!(!k.may(&Action::Invoke("other".into())));
        assert!(!k.sees("other"));
        for a in [
            Action::Deploy("echo".into()),
            Action::Delete("echo".into()),
            Action::Operate("echo".into()),
            Action::Records,
            Action::Storage,
            Action::Other,
        ] {
            assert!(!k.may(&a), "{a:?}");
        }
        assert!(k.may(&Action::List) && k.may(&Action::Metrics) && k.may(&Action::Health));
        assert!(!k.sees_env());
    }

    #[test]
    fn anonymous_callers_only_see_health() {
        for a in every_action("f") {
            assert_eq!(Caller::Anonymous.may(&a), a == Action::Health, "{a:?}");
        }
        assert!(!Caller::Anonymous.sees_env());
        assert_eq!(Caller::Anonymous.key_id(), "-");
    }
}

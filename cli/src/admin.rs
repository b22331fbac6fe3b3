//! Identities and governance: `whoami`, `tenants`, `users`, `tokens` and
//! `audit` — their flags, the API calls behind them, and what they print.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use clap::{ArgGroup, Args, Subcommand};
use paddock_protocol::admin::{
    AuditList, CreateTenant, CreateToken, CreateUser, Role, TenantInfo, TenantList, TokenCreated,
    TokenInfo, TokenList, UpdateTenant, UserInfo, UserList, WhoAmI,
};
use reqwest::Method;

use crate::api::{display_base, Client, Target};
use crate::output;

/// The most audit events one request may ask for (the control plane's cap).
const MAX_AUDIT_LIMIT: u32 = 10_000;

#[derive(Debug, Subcommand)]
pub enum TenantsCmd {
    /// List every tenant (owners only).
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a tenant (owners only).
    Create {
        name: String,
        /// Keep terminal output this many days (default: forever).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        retention_days: Option<u32>,
        /// Print the tenant as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant's output retention (owners, or an admin of that tenant).
    #[command(group(ArgGroup::new("retention").required(true).args(["retention_days", "keep_forever"])))]
    Set {
        name: String,
        /// Keep terminal output this many days.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        retention_days: Option<u32>,
        /// Keep terminal output forever.
        #[arg(long)]
        keep_forever: bool,
        /// Print the tenant as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// List the tenant's users.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a user (tokens can then belong to it with `tokens create --user`).
    Create {
        name: String,
        #[arg(long)]
        email: Option<String>,
        /// Print the user as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// List the tenant's API tokens (never their secrets).
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an API token and print its secret, once.
    Create(CreateTokenArgs),
    /// Revoke an API token now; requests with it fail from then on.
    Revoke {
        /// The token's id (`paddock tokens list` shows them).
        id: String,
        /// Print the revoked token as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateTokenArgs {
    /// A label for people, e.g. `ci` or `alice-laptop`.
    pub name: String,
    /// owner, admin, operator, developer, agent or viewer.
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// The id of the user the token belongs to (`paddock users list`).
    #[arg(long = "user", value_name = "ID")]
    pub user_id: Option<String>,
    /// Lifetime, e.g. 30d, 12h, 90m or 3600s (default: never expires).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires: Option<Duration>,
    /// For `--role agent`: the agent (name or id) the token acts for.
    #[arg(long)]
    pub agent: Option<String>,
    /// Print the token and its secret as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses a role by name, e.g. `developer`.
pub fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(&text.trim().to_ascii_lowercase()).ok_or_else(|| {
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown role `{text}`: use one of {}", names.join(", "))
    })
}

/// Parses a duration: a whole number with an optional unit, `s` (the
/// default), `m`, `h`, `d` or `w`, e.g. `30d`, `12h`, `90m`, `3600s`, `3600`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "invalid duration `{text}`: use a whole number and a unit, e.g. 30d, 12h, 90m or 3600s"
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!(
            "invalid duration `{text}`: it must be longer than zero"
        ));
    }
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration `{text}`: too long"))
}

impl Client {
    pub async fn whoami(&self) -> Result<WhoAmI> {
        let req = self.request(Method::GET, &["v1", "whoami"])?;
        self.send_json(req, &Target::ControlPlane).await
    }

    pub async fn list_tenants(&self) -> Result<TenantList> {
        let req = self.request(Method::GET, &["v1", "tenants"])?;
        self.send_json(req, &Target::ControlPlane).await
    }

    pub async fn create_tenant(&self, body: &CreateTenant) -> Result<TenantInfo> {
        let req = self.request(Method::POST, &["v1", "tenants"])?.json(body);
        self.send_json(req, &Target::ControlPlane).await
    }

    pub async fn update_tenant(&self, tenant: &str, body: &UpdateTenant) -> Result<TenantInfo> {
        let req = self
            .request(Method::PATCH, &["v1", "tenants", tenant])?
            .json(body);
        self.send_json(req, &Target::Tenant(tenant.to_owned()))
            .await
    }

    pub async fn list_users(&self) -> Result<UserList> {
        let req = self.request(Method::GET, &["v1", "users"])?;
        self.send_json(req, &Target::ControlPlane).await
    }

    pub async fn create_user(&self, body: &CreateUser) -> Result<UserInfo> {
        let req = self.request(Method::POST, &["v1", "users"])?.json(body);
        self.send_json(req, &Target::ControlPlane).await
    }

    pub async fn list_tokens(&self) -> Result<TokenList> {
        let req = self.request(Method::GET, &["v1", "tokens"])?;
        self.send_json(req, &Target::ControlPlane).await
    }

    pub async fn create_token(&self, body: &CreateToken) -> Result<TokenCreated> {
        let req = self.request(Method::POST, &["v1", "tokens"])?.json(body);
        self.send_json(req, &Target::ControlPlane).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        let req = self.request(Method::DELETE, &["v1", "tokens", id])?;
        self.send_json(req, &Target::Token(id.to_owned())).await
    }

    pub async fn list_audit(&self, limit: Option<u32>) -> Result<AuditList> {
        let mut req = self.request(Method::GET, &["v1", "audit"])?;
        if let Some(limit) = limit {
            req = req.query(&[("limit", limit)]);
        }
        self.send_json(req, &Target::ControlPlane).await
    }
}

/// `paddock whoami`.
pub async fn whoami(client: &Client, json: bool) -> Result<i32> {
    let me = client.whoami().await?;
    if json {
        output::print_json(&me)?;
    } else {
        print!("{}", whoami_text(&me, client));
    }
    Ok(0)
}

fn whoami_text(me: &WhoAmI, client: &Client) -> String {
    let mut table = output::Table::new(vec!["", ""]).without_headers();
    table.push(vec![
        "token".into(),
        format!("{} ({})", me.token_name, me.token_id),
    ]);
    table.push(vec!["role".into(), me.role.as_str().into()]);
    let tenant = match client.tenant() {
        Some(_) => format!("{} (chosen with --tenant or PADDOCK_TENANT)", me.tenant_id),
        None => me.tenant_id.clone(),
    };
    table.push(vec!["tenant".into(), tenant]);
    table.push(vec!["url".into(), display_base(client.base())]);
    table.render()
}

/// `paddock tenants …`.
pub async fn tenants(client: &Client, cmd: TenantsCmd) -> Result<i32> {
    match cmd {
        TenantsCmd::List { json } => {
            let list = client.list_tenants().await?;
            if json {
                output::print_json(&list)?;
            } else if list.tenants.is_empty() {
                eprintln!("no tenants: create one with `paddock tenants create NAME`");
            } else {
                print!(
                    "{}",
                    output::tenants_table(&list.tenants, SystemTime::now())
                );
            }
        }
        TenantsCmd::Create {
            name,
            retention_days,
            json,
        } => {
            let tenant = client
                .create_tenant(&CreateTenant {
                    name,
                    retention_days,
                })
                .await?;
            if json {
                output::print_json(&tenant)?;
            } else {
                println!(
                    "created tenant {} (output kept {})",
                    tenant.id,
                    output::retention(tenant.retention_days)
                );
                println!(
                    "Give it an admin with `paddock --tenant {} tokens create NAME --role admin`.",
                    tenant.id
                );
            }
        }
        TenantsCmd::Set {
            name,
            retention_days,
            keep_forever,
            json,
        } => {
            let body = UpdateTenant {
                retention_days,
                keep_forever,
            };
            let tenant = client.update_tenant(&name, &body).await?;
            if json {
                output::print_json(&tenant)?;
            } else {
                println!(
                    "tenant {} now keeps output {}",
                    tenant.id,
                    output::retention(tenant.retention_days)
                );
            }
        }
    }
    Ok(0)
}

/// `paddock users …`.
pub async fn users(client: &Client, cmd: UsersCmd) -> Result<i32> {
    match cmd {
        UsersCmd::List { json } => {
            let list = client.list_users().await?;
            if json {
                output::print_json(&list)?;
            } else if list.users.is_empty() {
                eprintln!("no users: create one with `paddock users create NAME`");
            } else {
                print!("{}", output::users_table(&list.users, SystemTime::now()));
            }
        }
        UsersCmd::Create { name, email, json } => {
            let user = client.create_user(&CreateUser { name, email }).await?;
            if json {
                output::print_json(&user)?;
            } else {
                println!("created user {} ({})", user.name, user.id);
                println!(
                    "Give it a token with `paddock tokens create NAME --role developer --user {}`.",
                    user.id
                );
            }
        }
    }
    Ok(0)
}

/// `paddock tokens …`.
pub async fn tokens(client: &Client, cmd: TokensCmd) -> Result<i32> {
    match cmd {
        TokensCmd::List { json } => {
            let list = client.list_tokens().await?;
            if json {
                output::print_json(&list)?;
            } else if list.tokens.is_empty() {
                eprintln!("no tokens: create one with `paddock tokens create NAME --role ROLE`");
            } else {
                print!("{}", output::tokens_table(&list.tokens, SystemTime::now()));
            }
        }
        TokensCmd::Create(args) => {
            let json = args.json;
            let created = client.create_token(&create_token_body(args)).await?;
            if json {
                output::print_json(&created)?;
            } else {
                print!("{}", token_created_text(&created, client));
            }
        }
        TokensCmd::Revoke { id, json } => {
            let info = client.revoke_token(&id).await?;
            if json {
                output::print_json(&info)?;
            } else {
                println!("revoked token {} ({})", info.name, info.id);
            }
        }
    }
    Ok(0)
}

fn create_token_body(args: CreateTokenArgs) -> CreateToken {
    CreateToken {
        name: args.name,
        role: args.role,
        user_id: args.user_id,
        expires_in_secs: args.expires.map(|d| d.as_secs()),
        agent: args.agent,
    }
}

fn token_created_text(created: &TokenCreated, client: &Client) -> String {
    let info = &created.info;
    let expires = match &info.expires_at {
        Some(at) => format!("expires {at}"),
        None => "never expires".to_owned(),
    };
    let base = display_base(client.base());
    format!(
        "created token {} ({}), role {}, {expires}\n\
         token: {}\n\
         \n\
         The token is shown only once: store it now. Use it with:\n  \
         paddock login --url {base} --token {}\n\
         or export PADDOCK_URL={base} PADDOCK_TOKEN=<the token>\n",
        info.name,
        info.id,
        info.role.as_str(),
        created.token,
        created.token,
    )
}

/// `paddock audit`.
pub async fn audit(client: &Client, limit: Option<u32>, json: bool) -> Result<i32> {
    if let Some(limit) = limit {
        if limit == 0 || limit > MAX_AUDIT_LIMIT {
            bail!("--limit {limit} is out of range: use 1 to {MAX_AUDIT_LIMIT}");
        }
    }
    let list = client.list_audit(limit).await?;
    if json {
        output::print_json(&list)?;
    } else if list.events.is_empty() {
        eprintln!("no audit events yet in this tenant");
    } else {
        print!("{}", output::audit_table(&list.events));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use paddock_protocol::admin::TENANT_HEADER;

    use super::*;
    use crate::fake::FakeControlPlane;

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        let secs = |t| parse_duration(t).map(|d| d.as_secs());
        assert_eq!(secs("30d"), Ok(30 * 86_400));
        assert_eq!(secs("12h"), Ok(12 * 3600));
        assert_eq!(secs("90m"), Ok(90 * 60));
        assert_eq!(secs("3600s"), Ok(3600));
        assert_eq!(secs("3600"), Ok(3600));
        assert_eq!(secs("2w"), Ok(14 * 86_400));
        assert_eq!(secs(" 5m "), Ok(300));
        for bad in ["", "d", "1.5h", "-3d", "3 days", "3y", "h12"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("e.g. 30d"), "{bad}: {err}");
        }
        assert!(parse_duration("0s")
            .unwrap_err()
            .contains("longer than zero"));
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("18446744073709551615d")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn roles_parse_by_name_and_list_the_choices() {
        assert_eq!(parse_role("developer"), Ok(Role::Developer));
        assert_eq!(parse_role("Admin"), Ok(Role::Admin));
        let err = parse_role("root").unwrap_err();
        assert!(
            err.contains("owner, admin, operator, developer, agent, viewer"),
            "{err}"
        );
    }

    #[test]
    fn token_bodies_carry_the_lifetime_in_seconds() {
        let args = CreateTokenArgs {
            name: "ci".into(),
            role: Role::Agent,
            user_id: Some("usr_1".into()),
            expires: Some(Duration::from_secs(7200)),
            agent: Some("dev".into()),
            json: false,
        };
        assert_eq!(
            serde_json::to_value(create_token_body(args)).unwrap(),
            serde_json::json!({"name": "ci", "role": "agent", "user_id": "usr_1", "expires_in_secs": 7200, "agent": "dev"})
        );
    }

    fn whoami_body() -> &'static str {
        r#"{"token_id":"tok_1","token_name":"ci","role":"owner","tenant_id":"acme"}"#
    }

    #[tokio::test]
    async fn whoami_sends_the_token_and_the_tenant() {
        let fake = FakeControlPlane::start().await;
        let client = fake.client().clone().with_tenant(Some("acme".into()));
        let (me, req) = tokio::join!(
            client.whoami(),
            fake.answer(200, "application/json", whoami_body())
        );
        let me = me.unwrap();
        assert_eq!(me.role, Role::Owner);
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/v1/whoami");
        assert_eq!(req.header("authorization"), Some("Bearer test-token"));
        assert_eq!(req.header(TENANT_HEADER), Some("acme"));
        let text = whoami_text(&me, &client);
        assert!(
            text.starts_with("token   ci (tok_1)\nrole    owner\n"),
            "{text}"
        );
        assert!(
            text.contains("tenant  acme (chosen with --tenant"),
            "{text}"
        );

        // Without a tenant, no header.
        let plain = fake.client().clone();
        let (_, req) = tokio::join!(
            plain.whoami(),
            fake.answer(200, "application/json", whoami_body())
        );
        assert_eq!(req.header(TENANT_HEADER), None);
    }

    #[tokio::test]
    async fn tokens_are_created_revoked_and_refused_with_hints() {
        let fake = FakeControlPlane::start().await;
        let client = fake.client();
        let info = r#"{"id":"tok_9","tenant_id":"acme","name":"ci","role":"developer","created_at":"2026-11-26T03:00:00Z"}"#;
        let body = CreateToken {
            name: "ci".into(),
            role: Role::Developer,
            user_id: None,
            expires_in_secs: Some(60),
            agent: None,
        };
        let answer = format!(r#"{{"token":"pdk_secret","info":{info}}}"#);
        let (created, req) = tokio::join!(
            client.create_token(&body),
            fake.answer(201, "application/json", &answer)
        );
        let created = created.unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/v1/tokens");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&req.body).unwrap(),
            serde_json::json!({"name": "ci", "role": "developer", "expires_in_secs": 60})
        );
        let text = token_created_text(&created, client);
        assert!(text.contains("token: pdk_secret\n"), "{text}");
        assert!(text.contains("shown only once"), "{text}");
        assert!(text.contains("never expires"), "{text}");

        let (revoked, req) = tokio::join!(
            client.revoke_token("tok_9"),
            fake.answer(200, "application/json", info)
        );
        assert_eq!(revoked.unwrap().id, "tok_9");
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("DELETE", "/v1/tokens/tok_9")
        );

        let (err, _) = tokio::join!(
            client.revoke_token("tok_x"),
            fake.answer(
                404,
                "application/json",
                r#"{"error":{"code":"not_found","message":"no token tok_x"}}"#
            )
        );
        let err = err.unwrap_err().to_string();
        assert!(err.contains("paddock tokens list"), "{err}");

        let (err, _) = tokio::join!(
            client.list_tokens(),
            fake.answer(
                403,
                "application/json",
                r#"{"error":{"code":"forbidden","message":"this needs manage_tokens"}}"#
            )
        );
        let err = err.unwrap_err().to_string();
        assert!(err.contains("manage_tokens"), "{err}");
        assert!(err.contains("paddock whoami"), "{err}");
    }

    #[tokio::test]
    async fn audit_asks_for_the_limit_given() {
        let fake = FakeControlPlane::start().await;
        let (list, req) = tokio::join!(
            fake.client().list_audit(Some(5)),
            fake.answer(200, "application/json", r#"{"events":[]}"#)
        );
        assert!(list.unwrap().events.is_empty());
        assert_eq!(req.path, "/v1/audit?limit=5");
        assert!(audit(fake.client(), Some(0), false).await.is_err());
    }
}

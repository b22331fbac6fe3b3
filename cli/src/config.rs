//! Where `paddock` gets its control plane URL, API token and tenant: flags,
//! then `PADDOCK_*` environment variables, then the user's config file
//! (written by `paddock login`), then defaults. Also `login` and `logout`,
//! the two commands that write that file.

use std::ffi::OsString;
use std::fmt;
use std::io::{ErrorKind, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::api::{display_base, parse_base_url, Client};

/// The control plane a fresh `control-plane up` listens on.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7700";

const NO_TOKEN: &str = "no API token: run `paddock login --url URL --token TOKEN`, or set PADDOCK_TOKEN (`control-plane up` prints the PADDOCK_URL=... and PADDOCK_TOKEN=... lines to export; the token is also in its data dir's owner.token), or pass --token";

/// The user's config file: `config.toml` in `$XDG_CONFIG_HOME/paddock`, else
/// in `~/.config/paddock`. Every key is optional.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The tenant an owner acts on by default (written by hand, kept by `login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A PEM file of CAs trusted besides the platform roots (written by
    /// `login` when one was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

impl fmt::Debug for FileConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tenant", &self.tenant)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// What the command line said, before the environment and the file.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub url: Option<String>,
    pub token: Option<String>,
    pub tenant: Option<String>,
    pub ca_file: Option<String>,
}

/// The settings in force after every layer.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub url: String,
    pub token: Option<String>,
    pub tenant: Option<String>,
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tenant", &self.tenant)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Settings {
    /// Flags, then the environment (`env` looks a variable up), then the
    /// file, then the defaults. Blank values count as unset.
    pub fn resolve(
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
        file: &FileConfig,
    ) -> Result<Settings> {
        let pick = |flag: &Option<String>, var: &str, from_file: &Option<String>| {
            [flag.clone(), env(var), from_file.clone()]
                .into_iter()
                .flatten()
                .map(|v| v.trim().to_owned())
                .find(|v| !v.is_empty())
        };
        let tenant = pick(&flags.tenant, "PADDOCK_TENANT", &file.tenant);
        if let Some(tenant) = &tenant {
            if !tenant.chars().all(|c| c.is_ascii_graphic()) {
                bail!("invalid tenant `{tenant}`: a tenant name is printable ASCII without spaces; check --tenant, PADDOCK_TENANT or the config file's `tenant`");
            }
        }
        Ok(Settings {
            url: pick(&flags.url, "PADDOCK_URL", &file.url).unwrap_or_else(|| DEFAULT_URL.into()),
            token: pick(&flags.token, "PADDOCK_TOKEN", &file.token),
            tenant,
            ca_file: pick(&flags.ca_file, "PADDOCK_CA_FILE", &file.ca_file).map(PathBuf::from),
        })
    }

    /// A client of the control plane these settings name.
    pub fn client(&self) -> Result<Client> {
        let base = parse_base_url(&self.url)?;
        let token = self.token.clone().ok_or_else(|| anyhow!(NO_TOKEN))?;
        Ok(Client::with_ca_file(base, token, self.ca_file.as_deref())?
            .with_tenant(self.tenant.clone()))
    }
}

/// The process environment, as [`Settings::resolve`] reads it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Where the config file lives, from `XDG_CONFIG_HOME` or `HOME` as `env`
/// gives them; `None` when neither is set.
pub fn config_path(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dir) = absolute("XDG_CONFIG_HOME") {
        return Some(dir.join("paddock").join("config.toml"));
    }
    absolute("HOME").map(|home| home.join(".config").join("paddock").join("config.toml"))
}

/// The config file's location for this process.
pub fn default_config_path() -> Option<PathBuf> {
    config_path(&|name| std::env::var_os(name))
}

/// Reads the config file; a file that does not exist is an empty one.
pub fn load(path: &Path) -> Result<FileConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(err) => {
            return Err(anyhow!(err).context(format!(
                "could not read the config file {}: check its permissions, or delete it and run `paddock login`",
                path.display()
            )))
        }
    };
    warn_if_readable_by_others(path);
    toml::from_str(&text).map_err(|err| {
        anyhow!(
            "the config file {} is not valid ({}): its keys are url, token, tenant and ca_file; fix it, or delete it and run `paddock login`",
            path.display(),
            err.to_string().trim()
        )
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: {} holds an API token but other users may read it: run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Writes the config file readable by its owner only (mode 0600, in a 0700
/// directory), replacing it whole so that no reader sees half a file.
pub fn save(path: &Path, config: &FileConfig) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("the config file path {} has no directory", path.display()))?;
    create_private_dir(dir)?;
    let text = toml::to_string(config).context("could not encode the config file")?;
    let tmp = dir.join(".config.toml.tmp");
    let cant = |what: &str| {
        format!(
            "could not {what} {}: check that you may write to {}",
            tmp.display(),
            dir.display()
        )
    };
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => return Err(anyhow!(err).context(cant("remove the leftover"))),
    }
    let mut file = private_file(&tmp).with_context(|| cant("create"))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| cant("write"))?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| {
        format!(
            "could not replace {}: check that you may write to {}",
            path.display(),
            dir.display()
        )
    })
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("could not create the config directory {}", dir.display()))?;
    // The directory is paddock's own: tighten it if it was made before.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("could not make {} private (mode 0700)", dir.display()))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("could not create the config directory {}", dir.display()))
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn require_path(path: Option<&Path>) -> Result<&Path> {
    path.ok_or_else(|| {
        anyhow!("cannot tell where the config file goes: set HOME or XDG_CONFIG_HOME")
    })
}

/// `paddock login`: checks the token with the control plane, then stores the
/// URL and the token in the config file. The token comes from `--token` or
/// PADDOCK_TOKEN, else from the first line of stdin (never from the file).
pub async fn login(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    path: Option<&Path>,
) -> Result<i32> {
    let path = require_path(path)?;
    let mut file = load(path)?;
    let mut settings = Settings::resolve(flags, env, &file)?;
    let explicit = [flags.token.clone(), env("PADDOCK_TOKEN")]
        .into_iter()
        .flatten()
        .map(|t| t.trim().to_owned())
        .find(|t| !t.is_empty());
    settings.token = Some(match explicit {
        Some(token) => token,
        None => token_from_stdin()?,
    });
    let client = settings.client()?;
    let me = client.whoami().await.context("the token was not stored")?;
    let url = display_base(client.base());
    file.url = Some(url.clone());
    file.token = settings.token.clone();
    // A CA given now is needed by every later command: keep it, by a path
    // that does not depend on the current directory.
    let explicit_ca = [flags.ca_file.clone(), env("PADDOCK_CA_FILE")]
        .into_iter()
        .flatten()
        .find(|ca| !ca.trim().is_empty());
    if let Some(ca) = explicit_ca {
        let absolute = std::path::absolute(ca.trim())
            .with_context(|| format!("could not resolve the CA file path {ca}"))?;
        file.ca_file = Some(absolute.display().to_string());
    }
    save(path, &file)?;
    println!(
        "logged in to {url} as token {} ({}), role {}, tenant {}",
        me.token_name,
        me.token_id,
        me.role.as_str(),
        me.tenant_id
    );
    println!("saved to {}", path.display());
    Ok(0)
}

/// The token piped to `paddock login`; a terminal is refused so that the
/// token is never echoed on the screen.
fn token_from_stdin() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("no token to log in with: pass --token TOKEN, set PADDOCK_TOKEN, or pipe it in (`paddock login --url URL < token-file`)");
    }
    let mut text = String::new();
    stdin
        .lock()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .context("could not read the token from stdin")?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("stdin held no token: pipe the token in, or pass --token TOKEN"))
}

/// `paddock logout`: removes the token from the config file, keeping the rest.
pub fn logout(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<i32> {
    let path = require_path(path)?;
    let mut file = load(path)?;
    if file.token.take().is_none() {
        eprintln!("no token stored in {}: nothing to do", path.display());
    } else {
        save(path, &file)?;
        eprintln!("removed the token from {}", path.display());
    }
    if env("PADDOCK_TOKEN").is_some_and(|t| !t.trim().is_empty()) {
        eprintln!("note: PADDOCK_TOKEN is still set in this environment and is still used: `unset PADDOCK_TOKEN`");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn file(url: &str, token: &str, tenant: &str) -> FileConfig {
        FileConfig {
            url: Some(url.into()),
            token: Some(token.into()),
            tenant: Some(tenant.into()),
            ca_file: None,
        }
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file_which_beats_defaults() {
        let flags = Flags {
            url: Some("http://flag:1".into()),
            token: Some("flag-token".into()),
            tenant: Some("flag-tenant".into()),
            ca_file: None,
        };
        let env = env_of(&[
            ("PADDOCK_URL", "http://env:2"),
            ("PADDOCK_TOKEN", "env-token"),
            ("PADDOCK_TENANT", "env-tenant"),
        ]);
        let stored = file("http://file:3", "file-token", "file-tenant");
        let all = Settings::resolve(&flags, &env, &stored).unwrap();
        assert_eq!(all.url, "http://flag:1");
        assert_eq!(all.token.as_deref(), Some("flag-token"));
        assert_eq!(all.tenant.as_deref(), Some("flag-tenant"));

        let no_flags = Settings::resolve(&Flags::default(), &env, &stored).unwrap();
        assert_eq!(no_flags.url, "http://env:2");
        assert_eq!(no_flags.token.as_deref(), Some("env-token"));
        assert_eq!(no_flags.tenant.as_deref(), Some("env-tenant"));

        // Blank variables count as unset.
        let blank = env_of(&[("PADDOCK_URL", ""), ("PADDOCK_TOKEN", "  ")]);
        let from_file = Settings::resolve(&Flags::default(), &blank, &stored).unwrap();
        assert_eq!(from_file.url, "http://file:3");
        assert_eq!(from_file.token.as_deref(), Some("file-token"));
        assert_eq!(from_file.tenant.as_deref(), Some("file-tenant"));

        let defaults =
            Settings::resolve(&Flags::default(), &blank, &FileConfig::default()).unwrap();
        assert_eq!(defaults.url, DEFAULT_URL);
        assert_eq!(defaults.token, None);
        assert_eq!(defaults.tenant, None);
        let err = defaults.client().unwrap_err().to_string();
        assert!(err.contains("paddock login"), "{err}");
    }

    #[test]
    fn tenants_that_cannot_be_a_header_are_refused() {
        let flags = Flags {
            tenant: Some("two words".into()),
            ..Flags::default()
        };
        let err = Settings::resolve(&flags, &env_of(&[]), &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tenant"), "{err}");
    }

    #[test]
    fn the_config_path_follows_xdg_then_home() {
        let os = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            config_path(&os(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")])),
            Some(PathBuf::from("/x/paddock/config.toml"))
        );
        // A relative XDG_CONFIG_HOME is invalid by the spec and ignored.
        assert_eq!(
            config_path(&os(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.config/paddock/config.toml"))
        );
        assert_eq!(config_path(&os(&[])), None);
    }

    #[test]
    fn the_file_is_written_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_path(&|name| {
            (name == "XDG_CONFIG_HOME").then(|| dir.path().as_os_str().to_owned())
        })
        .unwrap();
        assert_eq!(load(&path).unwrap(), FileConfig::default());
        let stored = file("http://h:1", "secret", "acme");
        save(&path, &stored).unwrap();
        assert_eq!(load(&path).unwrap(), stored);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
            // A file made readable by others is replaced by a private one.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            save(&path, &FileConfig::default()).unwrap();
            assert_eq!(mode(&path), 0o600);
        }
        assert_eq!(load(&path).unwrap(), FileConfig::default());
        assert!(!std::fs::read_to_string(&path).unwrap().contains("secret"));
    }

    #[test]
    fn logout_keeps_everything_but_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paddock").join("config.toml");
        save(&path, &file("http://h:1", "secret", "acme")).unwrap();
        logout(Some(&path), &env_of(&[])).unwrap();
        let left = load(&path).unwrap();
        assert_eq!(left.token, None);
        assert_eq!(left.url.as_deref(), Some("http://h:1"));
        assert_eq!(left.tenant.as_deref(), Some("acme"));
        // Again: nothing to remove is not an error.
        assert_eq!(logout(Some(&path), &env_of(&[])).unwrap(), 0);
    }

    #[test]
    fn broken_files_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "url = \"http://h:1\"\ntokn = \"x\"\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("tokn"), "{err}");
        std::fs::write(&path, "url = ").unwrap();
        assert!(load(&path).is_err());
    }

    #[tokio::test]
    async fn login_stores_a_token_only_once_the_control_plane_accepts_it() {
        let fake = crate::fake::FakeControlPlane::start().await;
        let url = display_base(fake.client().base());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paddock").join("config.toml");
        // The stored tenant is kept and sent with the check.
        save(
            &path,
            &FileConfig {
                tenant: Some("acme".into()),
                ..FileConfig::default()
            },
        )
        .unwrap();
        let flags = Flags {
            url: Some(url.clone()),
            token: Some("bad".into()),
            tenant: None,
            ca_file: None,
        };
        let refused = r#"{"error":{"code":"unauthorized","message":"invalid, expired or revoked API token"}}"#;
        let no_env = env_of(&[]);
        let (result, req) = tokio::join!(
            login(&flags, &no_env, Some(&path)),
            fake.answer(401, "application/json", refused)
        );
        let err = format!("{:#}", result.unwrap_err());
        assert!(err.contains("not stored"), "{err}");
        assert_eq!(req.path, "/v1/whoami");
        assert_eq!(req.header("x-paddock-tenant"), Some("acme"));
        assert_eq!(load(&path).unwrap().token, None);

        // The environment's token is used when no flag gives one.
        let flags = Flags {
            url: Some(url.clone()),
            ..Flags::default()
        };
        let me = r#"{"token_id":"tok_1","token_name":"ci","role":"admin","tenant_id":"acme"}"#;
        let env = env_of(&[("PADDOCK_TOKEN", " good ")]);
        let (result, req) = tokio::join!(
            login(&flags, &env, Some(&path)),
            fake.answer(200, "application/json", me)
        );
        assert_eq!(result.unwrap(), 0);
        assert_eq!(req.header("authorization"), Some("Bearer good"));
        assert_eq!(load(&path).unwrap(), file(&url, "good", "acme"));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let stored = file("http://h:1", "secret", "acme");
        assert!(!format!("{stored:?}").contains("secret"));
        let settings = Settings::resolve(&Flags::default(), &env_of(&[]), &stored).unwrap();
        assert!(!format!("{settings:?}").contains("secret"));
    }
}

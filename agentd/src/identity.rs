//! The user sessions run as. In a container agentd runs as root and starts
//! every session (and every `exec`) under an unprivileged uid/gid, so a
//! session can neither read agentd's environment (its token) through
//! `/proc`, nor signal or trace agentd.
//!
//! PTY sessions are spawned by portable-pty, which offers no hook to change
//! the user, so their command is wrapped: the child runs agentd itself as
//! `agentd __paddock-session-exec UID GID PROGRAM ARGS…` (after portable-pty
//! has made the PTY its controlling terminal), which drops its groups, gid
//! and uid and then execs the program — see [`session_exec_main`].

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use nix::unistd::{execv, setgid, setgroups, setuid, Gid, Uid, User};

/// The first argument that makes the agentd binary act as the wrapper.
pub const SESSION_EXEC_ARG: &str = "__paddock-session-exec";

/// Who sessions run as, when that is not agentd's own user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub uid: u32,
    pub gid: u32,
    /// From the password database, when the uid has an entry there.
    home: Option<PathBuf>,
    name: Option<String>,
    /// The agentd binary, run as the wrapper of PTY sessions.
    agentd_exe: PathBuf,
}

impl SessionUser {
    /// The user `uid`, in group `gid` or else the uid's primary group from
    /// the password database, or else the group numbered like the uid.
    pub fn resolve(uid: u32, gid: Option<u32>) -> std::io::Result<SessionUser> {
        let entry = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let gid = gid
            .or_else(|| entry.as_ref().map(|user| user.gid.as_raw()))
            .unwrap_or(uid);
        Ok(SessionUser {
            uid,
            gid,
            home: entry.as_ref().map(|user| user.dir.clone()),
            name: entry.map(|user| user.name),
            agentd_exe: std::env::current_exe()?,
        })
    }

    /// Sets `HOME`, `USER` and `LOGNAME` to the session user's (agentd's
    /// own would point a session at root's home).
    pub(crate) fn apply_env(&self, env: &mut BTreeMap<OsString, OsString>) {
        if let Some(home) = &self.home {
            env.insert("HOME".into(), home.clone().into_os_string());
        }
        if let Some(name) = &self.name {
            env.insert("USER".into(), name.into());
            env.insert("LOGNAME".into(), name.into());
        }
    }

    /// The program and arguments that run `program args` as this user.
    pub(crate) fn wrap(&self, program: PathBuf, args: &[String]) -> (PathBuf, Vec<OsString>) {
        let mut wrapped: Vec<OsString> = vec![
            SESSION_EXEC_ARG.into(),
            self.uid.to_string().into(),
            self.gid.to_string().into(),
            program.into_os_string(),
        ];
        wrapped.extend(args.iter().map(OsString::from));
        (self.agentd_exe.clone(), wrapped)
    }
}

/// The wrapper's whole work, given the arguments after
/// [`SESSION_EXEC_ARG`]: `UID GID PROGRAM ARGS…`. Returns only on failure,
/// with a message for the session's terminal.
pub fn session_exec_main(args: &[OsString]) -> String {
    let [uid, gid, program, rest @ ..] = args else {
        return format!("usage: agentd {SESSION_EXEC_ARG} UID GID PROGRAM [ARGS...]");
    };
    let number = |text: &OsString, what: &str| {
        text.to_str()
            .and_then(|t| t.parse::<u32>().ok())
            .ok_or_else(|| format!("{what} is not a number: {text:?}"))
    };
    let (uid, gid) = match (number(uid, "uid"), number(gid, "gid")) {
        (Ok(uid), Ok(gid)) => (uid, gid),
        (Err(err), _) | (_, Err(err)) => return err,
    };
    // Groups first: once the uid is dropped they can no longer be changed.
    if let Err(err) = setgroups(&[]) {
        return format!("agentd: could not drop supplementary groups: {err}");
    }
    if let Err(err) = setgid(Gid::from_raw(gid)) {
        return format!("agentd: could not switch to gid {gid}: {err}");
    }
    if let Err(err) = setuid(Uid::from_raw(uid)) {
        return format!("agentd: could not switch to uid {uid}: {err}");
    }
    let c_string = |arg: &OsString| CString::new(arg.clone().into_vec());
    let argv: Result<Vec<CString>, _> =
        std::iter::once(program).chain(rest).map(c_string).collect();
    let argv = match argv {
        Ok(argv) => argv,
        Err(_) => return "agentd: an argument contains a NUL byte".to_owned(),
    };
    match execv(&argv[0], &argv) {
        Ok(never) => match never {},
        Err(err) => format!(
            "agentd: could not run {}: {err}",
            String::from_utf8_lossy(program.as_bytes())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_command_names_the_user_then_the_program() {
        let user = SessionUser {
            uid: 1000,
            gid: 1001,
            home: Some("/home/agent".into()),
            name: Some("agent".into()),
            agentd_exe: "/usr/local/bin/agentd".into(),
        };
        let (program, args) = user.wrap("/bin/sh".into(), &["-c".into(), "id -u".into()]);
        assert_eq!(program, PathBuf::from("/usr/local/bin/agentd"));
        assert_eq!(
            args,
            [
                "__paddock-session-exec",
                "1000",
                "1001",
                "/bin/sh",
                "-c",
                "id -u"
            ]
            .map(OsString::from)
        );
        let mut env = BTreeMap::new();
        env.insert(OsString::from("HOME"), OsString::from("/root"));
        user.apply_env(&mut env);
        assert_eq!(env[&OsString::from("HOME")], "/home/agent");
        assert_eq!(env[&OsString::from("USER")], "agent");
    }

    #[test]
    fn the_wrapper_refuses_malformed_arguments() {
        assert!(session_exec_main(&[]).starts_with("usage"));
        let args = ["x", "1", "/bin/true"].map(OsString::from);
        assert!(session_exec_main(&args).contains("uid is not a number"));
    }

    #[test]
    fn a_uid_without_a_passwd_entry_keeps_its_number_as_group() {
        let user = SessionUser::resolve(4_000_000, None).unwrap();
        assert_eq!((user.uid, user.gid), (4_000_000, 4_000_000));
        let user = SessionUser::resolve(4_000_000, Some(7)).unwrap();
        assert_eq!(user.gid, 7);
    }
}

//! One process on a pseudo-terminal: spawning it with a scrubbed environment,
//! and the blocking reader, writer and reaper threads that bridge it to tokio.
//!
//! Everything that blocks (PTY reads and writes, `waitpid`) runs on named
//! threads and talks to the async side through bounded channels, so nothing
//! here ever blocks the runtime. The exit status comes from our own
//! `waitpid`, not portable-pty's, because that one reports signals as text.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use filedescriptor::{pollfd, FileDescriptor, POLLIN};
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal as NixSignal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use paddock_protocol::{ExitStatus, SessionId, Signal, TermSize, MAX_DATA_PAYLOAD};
use portable_pty::{native_pty_system, CommandBuilder, MasterPty, PtySize};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::identity::SessionUser;

/// The prefix of agentd's own settings; none of them reaches a child.
pub(crate) const AGENTD_ENV_PREFIX: &str = "PADDOCK_AGENTD_";

/// How much one PTY read may return: exactly one data frame's payload.
const READ_BUF: usize = MAX_DATA_PAYLOAD;

/// Reads that follow each other within this long belong to one burst.
const BURST_GAP: Duration = Duration::from_millis(2);

/// A burst this long is a flood (`cat` of a big file, a build log), not
/// interaction: from here on each chunk gathers what keeps arriving, in
/// pauses of [`FLOOD_PAUSE`], for up to [`FLOOD_HOLD`], so a flood travels
/// in chunks of up to [`READ_BUF`] rather than one per `write` of the
/// program (often one line), which would cost a wake-up, a frame, a
/// message and a store row each. Keystroke echo, prompts and screen
/// redraws stay below it and go out at once.
const FLOOD_BURST: usize = 32 * 1024;

/// In a flood, how long output gathers between reads. The kernel buffers
/// only about 20 KB of PTY output before the program's writes block, and
/// hands out at most [`PTY_READ_MAX`] per read: a pause this short keeps
/// the program writing at any speed this machine reaches while each read
/// comes back full.
const FLOOD_PAUSE: Duration = Duration::from_micros(200);

/// After a full read, how long to wait for the kernel to refill its buffer.
const FLOOD_REFILL: Duration = Duration::from_millis(1);

/// How long a flood's chunk is held at most before it goes out.
const FLOOD_HOLD: Duration = Duration::from_millis(2);

/// The most a Linux PTY read returns (the line discipline's buffer).
const PTY_READ_MAX: usize = 4096;

/// Output chunks queued between the reader thread and the session task.
/// When full the reader thread blocks, so the PTY stops being drained and
/// the child eventually blocks on write: back-pressure, never loss.
const OUTPUT_QUEUE: usize = 16;

/// Input chunks queued for the writer thread. When full (the program does
/// not read its terminal) further input is refused and dropped with a log;
/// the connection is never held up by one stuck session.
const INPUT_QUEUE: usize = 64;

/// What to start, as asked by the control plane.
#[derive(Debug, Clone)]
pub(crate) struct SpawnSpec {
    /// The program; the default shell when absent.
    pub command: Option<String>,
    pub args: Vec<String>,
    /// Relative to the workdir, or absolute; the workdir when absent.
    pub cwd: Option<String>,
    /// Merged over agentd's own environment.
    pub env: BTreeMap<String, String>,
    pub size: TermSize,
}

/// What every spawn shares: where sessions start and what they inherit.
#[derive(Debug, Clone)]
pub(crate) struct SpawnContext {
    pub workdir: PathBuf,
    pub default_shell: PathBuf,
    /// agentd's own environment, captured once at start; the base of every
    /// child's environment after [`child_env`] has scrubbed it. Passed in
    /// rather than read here so tests need not mutate the process env.
    pub parent_env: Vec<(OsString, OsString)>,
    /// Who sessions run as when not agentd's own user (`--session-uid`).
    pub session_user: Option<SessionUser>,
}

/// Whether `key` is one of agentd's own settings (its token among them).
pub(crate) fn is_agentd_var(key: &OsStr) -> bool {
    key.as_bytes().starts_with(AGENTD_ENV_PREFIX.as_bytes())
}

/// The environment a child starts with: agentd's own, minus every
/// `PADDOCK_AGENTD_*` variable, with `TERM=xterm-256color`, then the
/// request's variables on top. agentd's settings are removed even when the
/// request names them, so the sandbox token can never leak into a session.
pub(crate) fn child_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    requested: &BTreeMap<String, String>,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = parent.into_iter().collect();
    env.insert("TERM".into(), "xterm-256color".into());
    env.extend(
        requested
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env.retain(|key, _| !is_agentd_var(key));
    env
}

/// agentd's environment with the session user's `HOME`, `USER` and
/// `LOGNAME`, before [`child_env`] scrubs it and adds the request's.
fn session_base_env(ctx: &SpawnContext) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = ctx.parent_env.iter().cloned().collect();
    if let Some(user) = &ctx.session_user {
        user.apply_env(&mut env);
    }
    env
}

/// The directory a session starts in; it must exist.
fn resolve_cwd(cwd: Option<&str>, workdir: &Path) -> anyhow::Result<PathBuf> {
    let dir = match cwd {
        None => workdir.to_path_buf(),
        Some(cwd) => workdir.join(cwd),
    };
    match std::fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => Ok(dir),
        Ok(_) => bail!("not a directory: {}", dir.display()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("no such directory: {}", dir.display())
        }
        Err(err) => bail!("cannot use directory {}: {err}", dir.display()),
    }
}

/// Checks that `path` can be executed, naming it as the request did.
fn check_executable(path: &Path, shown: &str) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => bail!("is a directory: {shown}"),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => bail!("permission denied: {shown}"),
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("no such file or directory: {shown}")
        }
        Err(err) => bail!("cannot run {shown}: {err}"),
    }
}

/// Finds the program the way a shell would: a name with a slash is a path
/// (relative to the session's cwd), a bare name is looked up in `PATH`.
/// Done before spawning so a typo comes back as a clear message.
pub(crate) fn resolve_program(
    program: &str,
    cwd: &Path,
    path: Option<&OsStr>,
) -> anyhow::Result<PathBuf> {
    if program.is_empty() {
        bail!("empty command");
    }
    if program.contains('/') {
        let resolved = cwd.join(program);
        check_executable(&resolved, program)?;
        return Ok(resolved);
    }
    for dir in std::env::split_paths(path.unwrap_or_default()) {
        let candidate = cwd.join(dir).join(program);
        if check_executable(&candidate, program).is_ok() {
            return Ok(candidate);
        }
    }
    bail!("command not found: {program}")
}

/// Builds the command a session runs, with the environment of [`child_env`].
pub(crate) fn build_command(
    spec: &SpawnSpec,
    ctx: &SpawnContext,
) -> anyhow::Result<CommandBuilder> {
    let cwd = resolve_cwd(spec.cwd.as_deref(), &ctx.workdir)?;
    let env = child_env(session_base_env(ctx), &spec.env);
    let program = match &spec.command {
        Some(command) => resolve_program(
            command,
            &cwd,
            env.get(OsStr::new("PATH")).map(|p| p.as_os_str()),
        )?,
        None => {
            let shell = &ctx.default_shell;
            check_executable(shell, &shell.display().to_string())?;
            shell.clone()
        }
    };
    let mut cmd = match &ctx.session_user {
        None => {
            let mut cmd = CommandBuilder::new(program);
            cmd.args(&spec.args);
            cmd
        }
        Some(user) => {
            let (wrapper, args) = user.wrap(program, &spec.args);
            let mut cmd = CommandBuilder::new(wrapper);
            cmd.args(&args);
            cmd
        }
    };
    cmd.cwd(&cwd);
    // The builder starts from agentd's live environment; replace it whole.
    cmd.env_clear();
    for (key, value) in &env {
        cmd.env(key, value);
    }
    Ok(cmd)
}

/// Whether the process has been reaped. Signals are sent only while it has
/// not, under this lock, so a recycled pid can never be signalled.
type Reaped = Arc<Mutex<bool>>;

fn lock(reaped: &Reaped) -> MutexGuard<'_, bool> {
    // A poisoned flag is still a valid bool.
    reaped.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a signal could not be delivered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignalError {
    #[error("the process has already exited")]
    Exited,
    #[error("could not send the signal: {0}")]
    Os(#[from] Errno),
}

/// A running process on its own PTY. Dropping it closes the master and the
/// input channel (ending the writer thread); it neither kills nor reaps.
pub(crate) struct Pty {
    pid: Pid,
    reaped: Reaped,
    master: Mutex<Box<dyn MasterPty + Send>>,
    /// Input bytes for the writer thread; see [`INPUT_QUEUE`].
    tx_input: mpsc::Sender<Vec<u8>>,
}

/// The async ends of a PTY's output and exit, consumed by its session task.
pub(crate) struct PtyOutput {
    /// Output chunks in order; closed at EOF (every slave fd closed).
    pub rx_output: mpsc::Receiver<Vec<u8>>,
    /// The exit status, once the process has been reaped.
    pub rx_exit: oneshot::Receiver<ExitStatus>,
}

fn pty_size(size: TermSize) -> PtySize {
    PtySize {
        rows: size.rows,
        cols: size.cols,
        pixel_width: 0,
        pixel_height: 0,
    }
}

fn to_nix(signal: Signal) -> NixSignal {
    match signal {
        Signal::Hup => NixSignal::SIGHUP,
        Signal::Int => NixSignal::SIGINT,
        Signal::Quit => NixSignal::SIGQUIT,
        Signal::Kill => NixSignal::SIGKILL,
        Signal::Usr1 => NixSignal::SIGUSR1,
        Signal::Usr2 => NixSignal::SIGUSR2,
        Signal::Term => NixSignal::SIGTERM,
    }
}

/// Signals the process group led by `pid`; portable-pty makes every child a
/// session leader, so its group holds the whole job. Falls back to the
/// process alone if the group cannot be signalled.
fn signal_group(pid: Pid, signal: NixSignal) -> Result<(), Errno> {
    killpg(pid, signal).or_else(|_| kill(pid, signal))
}

impl Pty {
    /// Starts `spec` on a new PTY. Blocking (fork, exec, path checks): call
    /// it from `spawn_blocking`.
    pub(crate) fn spawn(
        id: SessionId,
        spec: &SpawnSpec,
        ctx: &SpawnContext,
    ) -> anyhow::Result<(Pty, PtyOutput)> {
        let cmd = build_command(spec, ctx)?;
        let pair = native_pty_system()
            .openpty(pty_size(spec.size))
            .context("could not open a pty")?;
        // Take both ends before spawning so nothing can fail after the child exists
        // but before its reaper does.
        let reader = reader_of(&*pair.master)?;
        let writer = pair
            .master
            .take_writer()
            .context("could not write the pty")?;
        let child = pair
            .slave
            .spawn_command(cmd)
            .map_err(|err| anyhow::anyhow!("{err:#}"))?;
        // Our copy of the slave must go, or reads of the master never see EOF.
        drop(pair.slave);
        let raw_pid = child
            .process_id()
            .context("the spawned process has no pid")?;
        // Dropping the std Child neither kills nor reaps; our reaper owns the pid now.
        drop(child);
        let pid = Pid::from_raw(raw_pid as i32);

        let reaped = Reaped::default();
        let (tx_exit, rx_exit) = oneshot::channel();
        if let Err(err) = spawn_reaper(id, pid, reaped.clone(), tx_exit) {
            // Without a reaper nobody would ever collect the child: end it here.
            let _ = signal_group(pid, NixSignal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(err).context("could not start the reaper thread");
        }
        let (tx_output, rx_output) = mpsc::channel(OUTPUT_QUEUE);
        let (tx_input, rx_input) = mpsc::channel(INPUT_QUEUE);
        let pty = Pty {
            pid,
            reaped,
            master: Mutex::new(pair.master),
            tx_input,
        };
        // From here on the reaper collects the child whatever fails; kill it on error.
        let started =
            spawn_reader(id, reader, tx_output).and_then(|()| spawn_writer(id, writer, rx_input));
        if let Err(err) = started {
            let _ = pty.signal(Signal::Kill);
            return Err(err).context("could not start the pty threads");
        }
        Ok((pty, PtyOutput { rx_output, rx_exit }))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Whether the process has been reaped.
    pub(crate) fn has_exited(&self) -> bool {
        *lock(&self.reaped)
    }

    /// Sends `signal` to the process group, unless the process is gone.
    pub(crate) fn signal(&self, signal: Signal) -> Result<(), SignalError> {
        let reaped = lock(&self.reaped);
        if *reaped {
            return Err(SignalError::Exited);
        }
        // Held while signalling: the reaper cannot reap (and free the pid) meanwhile.
        signal_group(self.pid, to_nix(signal))?;
        Ok(())
    }

    pub(crate) fn resize(&self, size: TermSize) -> anyhow::Result<()> {
        let master = self.master.lock().unwrap_or_else(|e| e.into_inner());
        master.resize(pty_size(size))
    }

    /// Queues input for the program without waiting; see [`INPUT_QUEUE`].
    pub(crate) fn input(&self, bytes: Vec<u8>) -> Result<(), mpsc::error::TrySendError<Vec<u8>>> {
        self.tx_input.try_send(bytes)
    }
}

/// The reader thread's own descriptor of the master: a duplicate, so it
/// stays valid (for reads and polls) however long the thread outlives the
/// [`Pty`].
fn reader_of(master: &(dyn MasterPty + Send)) -> anyhow::Result<FileDescriptor> {
    /// The master's descriptor, valid while `master` is borrowed.
    struct Master(RawFd);
    impl AsRawFd for Master {
        fn as_raw_fd(&self) -> RawFd {
            self.0
        }
    }
    let fd = master
        .as_raw_fd()
        .context("the pty master has no file descriptor")?;
    FileDescriptor::dup(&Master(fd)).context("could not duplicate the pty master")
}

/// Whether `reader` has something to read within `wait`.
fn readable(reader: &FileDescriptor, wait: Duration) -> bool {
    let mut fds = [pollfd {
        fd: reader.as_raw_fd(),
        events: POLLIN,
        revents: 0,
    }];
    matches!(filedescriptor::poll(&mut fds, Some(wait)), Ok(n) if n > 0)
}

/// Reads one chunk of output, telling interaction from a flood.
struct ChunkReader {
    reader: FileDescriptor,
    buf: Vec<u8>,
    /// Bytes read in the current burst, and when the last read returned.
    burst: usize,
    last_read: Option<Instant>,
}

impl ChunkReader {
    fn new(reader: FileDescriptor) -> Self {
        ChunkReader {
            reader,
            buf: vec![0u8; READ_BUF],
            burst: 0,
            last_read: None,
        }
    }

    fn read(&mut self, at: usize) -> io::Result<usize> {
        loop {
            match self.reader.read(&mut self.buf[at..]) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// The next chunk; empty at EOF. In a flood, what keeps arriving after
    /// the first read joins it (see [`FLOOD_BURST`]).
    fn next_chunk(&mut self) -> io::Result<&[u8]> {
        let mut filled = self.read(0)?;
        let now = Instant::now();
        if self.last_read.is_some_and(|last| now - last > BURST_GAP) {
            self.burst = 0;
        }
        if filled > 0 && self.burst + filled >= FLOOD_BURST {
            // Read on while reads come back full (a backlog: the kernel
            // refills its buffer at once); when a read comes back short,
            // the program is slower than us: pause so the next read is
            // full too. Until the chunk is full, the hold is over, or
            // nothing more comes.
            let started = Instant::now();
            let mut last = filled;
            loop {
                if self.buf.len() - filled < PTY_READ_MAX || started.elapsed() >= FLOOD_HOLD {
                    break;
                }
                let wait = if last >= PTY_READ_MAX - 1 {
                    FLOOD_REFILL
                } else {
                    thread::sleep(FLOOD_PAUSE);
                    Duration::ZERO
                };
                if !readable(&self.reader, wait) {
                    break;
                }
                match self.read(filled) {
                    Ok(n) if n > 0 => {
                        filled += n;
                        last = n;
                    }
                    // EOF or EIO at the end: deliver what was read; the
                    // next read sees it again.
                    _ => break,
                }
            }
        }
        self.burst += filled;
        self.last_read = Some(Instant::now());
        Ok(&self.buf[..filled])
    }
}

/// Reads the master until EOF (EIO on Linux once every slave fd is closed).
fn spawn_reader(
    id: SessionId,
    reader: FileDescriptor,
    tx_output: mpsc::Sender<Vec<u8>>,
) -> io::Result<()> {
    thread::Builder::new()
        .name(format!("pty-read-{id}"))
        .spawn(move || {
            let mut reader = ChunkReader::new(reader);
            loop {
                match reader.next_chunk() {
                    Ok([]) => break,
                    Ok(chunk) => {
                        if tx_output.blocking_send(chunk.to_vec()).is_err() {
                            // The session is gone; nobody wants the rest.
                            break;
                        }
                    }
                    Err(err) => {
                        debug!(session.id = %id, error = %err, "pty read ended");
                        break;
                    }
                }
            }
        })
        .map(drop)
}

/// Writes queued input to the master until the session drops its sender.
fn spawn_writer(
    id: SessionId,
    mut writer: Box<dyn Write + Send>,
    mut rx_input: mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    thread::Builder::new()
        .name(format!("pty-write-{id}"))
        .spawn(move || {
            while let Some(bytes) = rx_input.blocking_recv() {
                if let Err(err) = writer.write_all(&bytes).and_then(|()| writer.flush()) {
                    debug!(session.id = %id, error = %err, "pty write failed");
                    break;
                }
            }
        })
        .map(drop)
}

/// Waits for the child and reaps it, reporting how it ended.
///
/// It first waits without reaping (`WNOWAIT`), then reaps under the
/// `reaped` lock, so [`Pty::signal`] never races with the pid being freed.
fn spawn_reaper(
    id: SessionId,
    pid: Pid,
    reaped: Reaped,
    tx_exit: oneshot::Sender<ExitStatus>,
) -> io::Result<()> {
    thread::Builder::new()
        .name(format!("pty-wait-{id}"))
        .spawn(move || {
            // Any error but EINTR is left for waitpid below to report.
            let exited = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
            while let Err(Errno::EINTR) = waitid(Id::Pid(pid), exited) {}
            let mut guard = lock(&reaped);
            let status = loop {
                match waitpid(pid, None) {
                    Ok(WaitStatus::Exited(_, code)) => break ExitStatus::code(code),
                    Ok(WaitStatus::Signaled(_, signal, _)) => {
                        break ExitStatus::signal(signal as i32)
                    }
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(err) => {
                        debug!(session.id = %id, error = %err, "waitpid failed");
                        break ExitStatus {
                            code: None,
                            signal: None,
                        };
                    }
                }
            };
            *guard = true;
            drop(guard);
            // The session may be gone already (dropped or shut down).
            let _ = tx_exit.send(status);
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn context(dir: &Path, parent_env: Vec<(OsString, OsString)>) -> SpawnContext {
        SpawnContext {
            workdir: dir.to_path_buf(),
            default_shell: PathBuf::from("/bin/sh"),
            parent_env,
            session_user: None,
        }
    }

    fn plain_env() -> Vec<(OsString, OsString)> {
        vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())]
    }

    fn spec(command: &str, args: &[&str]) -> SpawnSpec {
        SpawnSpec {
            command: Some(command.to_owned()),
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: None,
            env: BTreeMap::new(),
            size: TermSize::DEFAULT,
        }
    }

    /// Collects output until EOF, then the exit status.
    async fn finish(mut out: PtyOutput) -> (Vec<u8>, ExitStatus) {
        let mut bytes = Vec::new();
        tokio::time::timeout(DEADLINE, async {
            while let Some(chunk) = out.rx_output.recv().await {
                bytes.extend_from_slice(&chunk);
            }
        })
        .await
        .expect("pty reached EOF in time");
        let status = tokio::time::timeout(DEADLINE, out.rx_exit)
            .await
            .expect("process exited in time")
            .expect("reaper reported");
        (bytes, status)
    }

    /// Reads output until it contains `needle`.
    async fn read_until(out: &mut PtyOutput, needle: &str) -> String {
        let mut seen = Vec::new();
        tokio::time::timeout(DEADLINE, async {
            while !String::from_utf8_lossy(&seen).contains(needle) {
                let chunk = out.rx_output.recv().await.expect("output before EOF");
                seen.extend_from_slice(&chunk);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&seen)));
        String::from_utf8_lossy(&seen).into_owned()
    }

    #[tokio::test]
    async fn output_and_exit_code_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), plain_env());
        let (_pty, out) = Pty::spawn(
            SessionId(1),
            &spec("/bin/sh", &["-c", "printf hello; exit 3"]),
            &ctx,
        )
        .unwrap();
        let (bytes, status) = finish(out).await;
        assert_eq!(String::from_utf8_lossy(&bytes), "hello");
        assert_eq!(status, ExitStatus::code(3));
    }

    /// A flood of one-line writes comes out whole and gathered into chunks
    /// of several PTY reads; the line printed before it comes out alone,
    /// at once.
    #[tokio::test]
    async fn a_flood_is_read_in_full_chunks_without_losing_a_byte() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), plain_env());
        let lines = 40_000;
        let script = format!("echo start; sleep 0.3; seq -f '%060.0f' 1 {lines}");
        let (_pty, mut out) =
            Pty::spawn(SessionId(9), &spec("/bin/sh", &["-c", &script]), &ctx).unwrap();
        let first = tokio::time::timeout(DEADLINE, out.rx_output.recv())
            .await
            .expect("output in time")
            .expect("some output");
        assert_eq!(
            first, b"start\r\n",
            "the line before the flood was held back"
        );
        let mut chunks = Vec::new();
        tokio::time::timeout(DEADLINE, async {
            while let Some(chunk) = out.rx_output.recv().await {
                chunks.push(chunk);
            }
        })
        .await
        .expect("pty reached EOF in time");
        let bytes: Vec<u8> = chunks.concat();
        let want: String = (1..=lines).map(|i| format!("{i:060}\r\n")).collect();
        assert!(
            bytes == want.as_bytes(),
            "the flood came out altered ({} of {} bytes)",
            bytes.len(),
            want.len()
        );
        // Without gathering no chunk can hold more than one PTY read.
        let largest = chunks.iter().map(Vec::len).max().unwrap_or(0);
        assert!(
            largest >= 4 * PTY_READ_MAX,
            "{} chunks for {} bytes, the largest {largest}: the flood was not gathered",
            chunks.len(),
            bytes.len()
        );
    }

    #[tokio::test]
    async fn a_signal_reaches_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), plain_env());
        let (pty, out) = Pty::spawn(SessionId(2), &spec("sleep", &["30"]), &ctx).unwrap();
        pty.signal(Signal::Term).unwrap();
        let (_, status) = finish(out).await;
        assert_eq!(status, ExitStatus::signal(15));
        assert!(pty.has_exited());
        assert!(matches!(pty.signal(Signal::Term), Err(SignalError::Exited)));
    }

    #[tokio::test]
    async fn resize_is_seen_by_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), plain_env());
        // The shell waits for a line, so the resize lands before `stty` runs.
        let (pty, mut out) = Pty::spawn(
            SessionId(3),
            &spec("/bin/sh", &["-c", "read x; stty size"]),
            &ctx,
        )
        .unwrap();
        pty.resize(TermSize {
            cols: 123,
            rows: 45,
        })
        .unwrap();
        pty.input(b"go\r".to_vec()).unwrap();
        read_until(&mut out, "45 123").await;
    }

    #[tokio::test]
    async fn input_reaches_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), plain_env());
        let mut shell = spec("/bin/sh", &[]);
        shell.command = None;
        let (pty, mut out) = Pty::spawn(SessionId(4), &shell, &ctx).unwrap();
        pty.input(b"echo h''i\r".to_vec()).unwrap();
        // The echoed command line reads `h''i`; only the output reads `hi`.
        read_until(&mut out, "hi\r\n").await;
        pty.input(b"exit 5\r".to_vec()).unwrap();
        let (_, status) = finish(out).await;
        assert_eq!(status, ExitStatus::code(5));
    }

    #[tokio::test]
    async fn agentd_settings_never_reach_a_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut parent = plain_env();
        parent.push(("PADDOCK_AGENTD_TOKEN".into(), "secret-token".into()));
        parent.push(("PADDOCK_AGENTD_WORKDIR".into(), "/tmp/x".into()));
        parent.push(("KEEP_ME".into(), "kept".into()));
        parent.push(("TERM".into(), "dumb".into()));
        let ctx = context(dir.path(), parent);
        let mut env_spec = spec("env", &[]);
        env_spec.env.insert("FROM_REQUEST".into(), "yes".into());
        env_spec
            .env
            .insert("PADDOCK_AGENTD_CONTROL_PLANE".into(), "smuggled".into());
        let (_pty, out) = Pty::spawn(SessionId(5), &env_spec, &ctx).unwrap();
        let (bytes, status) = finish(out).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(status.success(), "{status}: {text}");
        assert!(!text.contains("PADDOCK_AGENTD_"), "{text}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(text.contains("KEEP_ME=kept"), "{text}");
        assert!(text.contains("FROM_REQUEST=yes"), "{text}");
        assert!(text.contains("TERM=xterm-256color"), "{text}");
    }

    #[test]
    fn a_requested_term_wins() {
        let mut requested = BTreeMap::new();
        requested.insert("TERM".to_owned(), "vt100".to_owned());
        let env = child_env([("TERM".into(), "dumb".into())], &requested);
        assert_eq!(env.get(OsStr::new("TERM")).unwrap(), "vt100");
    }

    #[tokio::test]
    async fn relative_cwd_is_under_the_workdir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let ctx = context(dir.path(), plain_env());
        let mut pwd = spec("pwd", &[]);
        pwd.cwd = Some("sub".into());
        let (_pty, out) = Pty::spawn(SessionId(6), &pwd, &ctx).unwrap();
        let (bytes, _) = finish(out).await;
        assert!(String::from_utf8_lossy(&bytes).trim_end().ends_with("/sub"));
    }

    #[test]
    fn spawn_failures_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), plain_env());
        let err = |spec: SpawnSpec| match Pty::spawn(SessionId(7), &spec, &ctx) {
            Ok(_) => panic!("spawned"),
            Err(err) => format!("{err:#}"),
        };
        assert_eq!(
            err(spec("/bin/nope", &[])),
            "no such file or directory: /bin/nope"
        );
        assert_eq!(
            err(spec("no-such-program-here", &[])),
            "command not found: no-such-program-here"
        );
        let mut missing_cwd = spec("/bin/sh", &[]);
        missing_cwd.cwd = Some("missing".into());
        assert!(err(missing_cwd).starts_with("no such directory: "));
    }
}

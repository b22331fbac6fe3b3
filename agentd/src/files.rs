//! File tools confined to the sandbox's work directory: read (a byte
//! range), write, list, stat, mkdir, remove and move.
//!
//! Every path goes through [`Workspace::resolve`]: lexically normalised
//! against the work directory, then resolved through every symlink that
//! exists (dangling ones included) and checked to still be under the
//! canonical work directory. `..` escapes, absolute paths elsewhere and
//! symlinks pointing out are refused with `path_escape`. A symlink swapped
//! in between the check and the use is not caught; the sandbox boundary,
//! not this check, is what contains a hostile process.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use base64::Engine;
use paddock_protocol::tools::{
    Encoding, FileContent, FileDone, FileInfo, FileKind, FileList, FileListing, FileMkdir,
    FileMove, FileRead, FileRemove, FileWrite, FileWritten,
};
use paddock_protocol::{
    ErrorCode, MAX_CONTROL_FRAME, MAX_FILE_READ, MAX_FILE_WRITE, MAX_LIST_DEPTH, MAX_LIST_ENTRIES,
};

use crate::tools::ToolError;

/// How many symlinks one path may pass through (as Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: u32 = 40;
/// Room left in a text frame for everything around a file's content.
const FRAME_SLACK: usize = 16 * 1024;

/// The sandbox's work directory, the root every tool path is relative to.
#[derive(Debug, Clone)]
pub(crate) struct Workspace {
    root: PathBuf,
}

/// Whether the last component of a path is resolved when it is a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Resolve it: the operation acts on what the link points to.
    Yes,
    /// Keep it: the operation acts on the link itself (stat, remove, move).
    No,
}

fn io_error(what: &str, shown: &str, err: io::Error) -> ToolError {
    let code = match err.kind() {
        io::ErrorKind::NotFound => ErrorCode::NotFound,
        io::ErrorKind::AlreadyExists => ErrorCode::Conflict,
        io::ErrorKind::PermissionDenied => ErrorCode::Forbidden,
        _ => ErrorCode::ToolFailed,
    };
    ToolError::new(code, format!("could not {what} {shown}: {err}"))
}

fn is_missing(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc_enotdir())
}

fn libc_enotdir() -> i32 {
    nix::errno::Errno::ENOTDIR as i32
}

/// Removes `.` and resolves `..` without touching the file system; `..` at
/// the root stays at the root.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => out.push(component.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
        }
    }
    out
}

/// The real path of `path` (absolute, normalised): every existing component
/// resolved through symlinks, dangling ones too; components that do not
/// exist yet are appended as they are.
fn resolve_real(path: &Path, hops: &mut u32) -> io::Result<PathBuf> {
    match fs::canonicalize(path) {
        Ok(real) => Ok(real),
        Err(err) if is_missing(&err) => {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(err);
            };
            let meta = fs::symlink_metadata(path);
            if matches!(&meta, Ok(meta) if meta.file_type().is_symlink()) {
                // A dangling symlink: where it would create something matters.
                *hops += 1;
                if *hops > MAX_SYMLINKS {
                    return Err(io::Error::other("too many levels of symbolic links"));
                }
                let target = fs::read_link(path)?;
                let real_parent = resolve_real(parent, hops)?;
                return resolve_real(&normalize(&real_parent.join(target)), hops);
            }
            Ok(resolve_real(parent, hops)?.join(name))
        }
        Err(err) => Err(err),
    }
}

impl Workspace {
    /// `root` must be canonical (agentd canonicalises its work directory at start).
    pub(crate) fn new(root: PathBuf) -> Self {
        Workspace { root }
    }

    #[cfg(test)]
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path a tool path names, refused with `path_escape` if it
    /// leads outside the work directory. An empty path is the work directory.
    pub(crate) fn resolve(&self, path: &str, follow: Follow) -> Result<PathBuf, ToolError> {
        let escape = |how: &str| {
            ToolError::new(
                ErrorCode::PathEscape,
                format!(
                    "{path:?} {how} outside the workspace {}",
                    self.root.display()
                ),
            )
        };
        let given = Path::new(path);
        let lexical = normalize(&self.root.join(given));
        if !lexical.starts_with(&self.root) {
            return Err(escape("is"));
        }
        let mut hops = 0;
        let real = match follow {
            Follow::Yes => resolve_real(&lexical, &mut hops),
            Follow::No => match (lexical.parent(), lexical.file_name()) {
                (Some(parent), Some(name)) if lexical != self.root => {
                    resolve_real(parent, &mut hops).map(|parent| parent.join(name))
                }
                _ => Ok(lexical.clone()),
            },
        }
        .map_err(|err| io_error("resolve", &format!("{path:?}"), err))?;
        if !real.starts_with(&self.root) {
            return Err(escape("resolves (through a symlink)"));
        }
        Ok(real)
    }

    /// `path` relative to the work directory, for replies (`.` for the root).
    pub(crate) fn relative(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".to_owned(),
            Ok(rel) => rel.display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }

    pub(crate) fn read(&self, req: &FileRead) -> Result<FileContent, ToolError> {
        let path = self.resolve(&req.path, Follow::Yes)?;
        let shown = &req.path;
        let mut file = File::open(&path).map_err(|e| io_error("open", shown, e))?;
        let meta = file.metadata().map_err(|e| io_error("stat", shown, e))?;
        if meta.is_dir() {
            return Err(ToolError::bad_request(format!(
                "{shown} is a directory; use file_list"
            )));
        }
        let size = meta.len();
        let want = req
            .len
            .unwrap_or(MAX_FILE_READ as u64)
            .min(MAX_FILE_READ as u64);
        let offset = req.offset.min(size);
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io_error("seek in", shown, e))?;
        let mut bytes = Vec::new();
        file.take(want)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error("read", shown, e))?;
        let len = bytes.len() as u64;
        let (content, encoding) = encode_content(bytes);
        Ok(FileContent {
            content,
            encoding,
            offset,
            len,
            size,
            eof: offset + len >= size,
        })
    }

    pub(crate) fn write(&self, req: &FileWrite) -> Result<FileWritten, ToolError> {
        let bytes = match req.encoding {
            Encoding::Utf8 => req.content.as_bytes().to_vec(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&req.content)
                .map_err(|err| ToolError::bad_request(format!("content is not base64: {err}")))?,
        };
        if bytes.len() > MAX_FILE_WRITE {
            return Err(ToolError::bad_request(format!(
                "content of {} bytes exceeds the limit of {MAX_FILE_WRITE}",
                bytes.len()
            )));
        }
        let path = self.resolve(&req.path, Follow::Yes)?;
        let shown = &req.path;
        if req.create_dirs {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| io_error("create the parent of", shown, e))?;
            }
        }
        let mut options = OpenOptions::new();
        options.write(true).create(true);
        if req.append {
            options.append(true);
        } else {
            options.truncate(true);
        }
        if let Some(mode) = req.mode {
            options.mode(mode);
        }
        let mut file = options
            .open(&path)
            .map_err(|e| io_error("open", shown, e))?;
        file.write_all(&bytes)
            .map_err(|e| io_error("write", shown, e))?;
        if let Some(mode) = req.mode {
            // The mode given at creation is masked by the umask, and an
            // existing file keeps its own: set it explicitly.
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| io_error("chmod", shown, e))?;
        }
        let size = file
            .metadata()
            .map_err(|e| io_error("stat", shown, e))?
            .len();
        Ok(FileWritten {
            path: self.relative(&path),
            size,
        })
    }

    pub(crate) fn list(&self, req: &FileList) -> Result<FileListing, ToolError> {
        let dir = self.resolve(&req.path, Follow::Yes)?;
        let depth = req.depth.clamp(1, MAX_LIST_DEPTH);
        let meta = fs::metadata(&dir).map_err(|e| io_error("list", &req.path, e))?;
        if !meta.is_dir() {
            return Err(ToolError::bad_request(format!(
                "{:?} is not a directory",
                req.path
            )));
        }
        let mut listing = FileListing {
            entries: Vec::new(),
            truncated: false,
        };
        self.walk(&dir, depth, &mut listing)
            .map_err(|e| io_error("list", &req.path, e))?;
        Ok(listing)
    }

    /// Depth-first, sorted by name; symlinked directories are listed, not entered.
    fn walk(&self, dir: &Path, depth: u32, listing: &mut FileListing) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        names.sort();
        for path in names {
            if listing.entries.len() >= MAX_LIST_ENTRIES {
                listing.truncated = true;
                return Ok(());
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let info = self.info(&path, &meta);
            let descend = info.kind == FileKind::Dir && depth > 1;
            listing.entries.push(info);
            if descend {
                // An unreadable subdirectory is listed but not entered.
                let _ = self.walk(&path, depth - 1, listing);
            }
        }
        Ok(())
    }

    fn info(&self, path: &Path, meta: &Metadata) -> FileInfo {
        let file_type = meta.file_type();
        let kind = if file_type.is_symlink() {
            FileKind::Symlink
        } else if file_type.is_dir() {
            FileKind::Dir
        } else if file_type.is_file() {
            FileKind::File
        } else {
            FileKind::Other
        };
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        FileInfo {
            path: self.relative(path),
            kind,
            size: meta.len(),
            mode: meta.mode() & 0o7777,
            modified_ms,
            target: if kind == FileKind::Symlink {
                fs::read_link(path).ok().map(|t| t.display().to_string())
            } else {
                None
            },
        }
    }

    pub(crate) fn stat(&self, path: &str) -> Result<FileInfo, ToolError> {
        let real = self.resolve(path, Follow::No)?;
        let meta = fs::symlink_metadata(&real).map_err(|e| io_error("stat", path, e))?;
        Ok(self.info(&real, &meta))
    }

    pub(crate) fn mkdir(&self, req: &FileMkdir) -> Result<FileDone, ToolError> {
        let path = self.resolve(&req.path, Follow::Yes)?;
        let made = if req.parents {
            fs::create_dir_all(&path)
        } else {
            fs::create_dir(&path)
        };
        made.map_err(|e| io_error("create", &req.path, e))?;
        if let Some(mode) = req.mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| io_error("chmod", &req.path, e))?;
        }
        Ok(FileDone {
            path: self.relative(&path),
        })
    }

    pub(crate) fn remove(&self, req: &FileRemove) -> Result<FileDone, ToolError> {
        let path = self.resolve(&req.path, Follow::No)?;
        if path == self.root {
            return Err(ToolError::bad_request(
                "refusing to remove the workspace root",
            ));
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| io_error("remove", &req.path, e))?;
        let removed = if meta.is_dir() {
            if req.recursive {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_dir(&path)
            }
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| io_error("remove", &req.path, e))?;
        Ok(FileDone {
            path: self.relative(&path),
        })
    }

    pub(crate) fn rename(&self, req: &FileMove) -> Result<FileDone, ToolError> {
        let from = self.resolve(&req.from, Follow::No)?;
        let to = self.resolve(&req.to, Follow::No)?;
        if from == self.root || to == self.root {
            return Err(ToolError::bad_request(
                "refusing to move the workspace root",
            ));
        }
        fs::symlink_metadata(&from).map_err(|e| io_error("move", &req.from, e))?;
        if !req.overwrite && fs::symlink_metadata(&to).is_ok() {
            return Err(ToolError::new(
                ErrorCode::Conflict,
                format!("{:?} exists; set overwrite to replace it", req.to),
            ));
        }
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(|e| io_error("create the parent of", &req.to, e))?;
        }
        fs::rename(&from, &to).map_err(|e| io_error("move", &req.from, e))?;
        Ok(FileDone {
            path: self.relative(&to),
        })
    }
}

/// File bytes as JSON-safe text: UTF-8 as is when it is valid and its JSON
/// escaping fits a frame, base64 otherwise (which always fits).
fn encode_content(bytes: Vec<u8>) -> (String, Encoding) {
    match String::from_utf8(bytes) {
        Ok(text) if json_len(&text) + FRAME_SLACK <= MAX_CONTROL_FRAME => (text, Encoding::Utf8),
        Ok(text) => (
            base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
            Encoding::Base64,
        ),
        Err(err) => (
            base64::engine::general_purpose::STANDARD.encode(err.as_bytes()),
            Encoding::Base64,
        ),
    }
}

/// The length of `text` as a JSON string.
pub(crate) fn json_len(text: &str) -> usize {
    text.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
        + 2
}

#[cfg(test)]
mod tests;

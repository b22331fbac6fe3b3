use std::os::unix::fs::symlink;

use super::*;

fn workspace() -> (tempfile::TempDir, Workspace) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    (dir, Workspace::new(root))
}

fn escape_refused(result: Result<impl std::fmt::Debug, ToolError>) {
    match result {
        Err(err) => assert_eq!(err.code, ErrorCode::PathEscape, "{err:?}"),
        Ok(ok) => panic!("escape allowed: {ok:?}"),
    }
}

fn write_req(path: &str, content: &str) -> FileWrite {
    FileWrite {
        path: path.to_owned(),
        content: content.to_owned(),
        encoding: Encoding::Utf8,
        mode: None,
        create_dirs: true,
        append: false,
    }
}

fn read_req(path: &str) -> FileRead {
    FileRead {
        path: path.to_owned(),
        offset: 0,
        len: None,
    }
}

#[test]
fn escapes_are_refused() {
    let (_dir, ws) = workspace();
    symlink("/etc", ws.root().join("etc-link")).unwrap();
    // A dangling link pointing out: writing through it would create a file outside.
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path().join("new"), ws.root().join("dangling")).unwrap();

    escape_refused(ws.read(&read_req("../x")));
    escape_refused(ws.read(&read_req("a/../../x")));
    escape_refused(ws.read(&read_req("/etc/passwd")));
    escape_refused(ws.read(&read_req("etc-link/passwd")));
    escape_refused(ws.read(&read_req("etc-link")));
    escape_refused(ws.write(&write_req("../evil", "x")));
    escape_refused(ws.write(&write_req("etc-link/evil", "x")));
    escape_refused(ws.write(&write_req("dangling", "x")));
    escape_refused(ws.list(&FileList {
        path: "etc-link".to_owned(),
        depth: 1,
    }));
    escape_refused(ws.mkdir(&FileMkdir {
        path: "etc-link/sub".to_owned(),
        parents: true,
        mode: None,
    }));
    escape_refused(ws.rename(&FileMove {
        from: "etc-link/passwd".to_owned(),
        to: "stolen".to_owned(),
        overwrite: false,
    }));
    escape_refused(ws.remove(&FileRemove {
        path: "../".to_owned(),
        recursive: true,
    }));
    assert!(!outside.path().join("new").exists());
    // The message says what was refused.
    let err = ws.read(&read_req("etc-link/passwd")).unwrap_err();
    assert!(err.message.contains("etc-link/passwd"), "{}", err.message);
    // The link itself may be inspected and removed: that touches nothing outside.
    let info = ws.stat("etc-link").unwrap();
    assert_eq!(info.kind, FileKind::Symlink);
    assert_eq!(info.target.as_deref(), Some("/etc"));
    ws.remove(&FileRemove {
        path: "etc-link".to_owned(),
        recursive: false,
    })
    .unwrap();
    assert!(Path::new("/etc/passwd").exists());
}

#[test]
fn absolute_paths_inside_and_links_inside_are_fine() {
    let (_dir, ws) = workspace();
    ws.write(&write_req("a/b.txt", "hello")).unwrap();
    let absolute = ws.root().join("a/b.txt").display().to_string();
    assert_eq!(ws.read(&read_req(&absolute)).unwrap().content, "hello");
    symlink("a", ws.root().join("alias")).unwrap();
    assert_eq!(ws.read(&read_req("alias/b.txt")).unwrap().content, "hello");
    assert_eq!(
        ws.read(&read_req("a/../a/./b.txt")).unwrap().content,
        "hello"
    );
}

#[test]
fn write_read_ranges_and_binary_content() {
    let (_dir, ws) = workspace();
    let written = ws
        .write(&FileWrite {
            mode: Some(0o750),
            ..write_req("deep/dir/run.sh", "#!/bin/sh\necho hi\n")
        })
        .unwrap();
    assert_eq!(written.path, "deep/dir/run.sh");
    assert_eq!(written.size, 18);
    let meta = fs::metadata(ws.root().join("deep/dir/run.sh")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o750);
    ws.write(&FileWrite {
        append: true,
        ..write_req("deep/dir/run.sh", "exit 0\n")
    })
    .unwrap();
    let range = ws
        .read(&FileRead {
            path: "deep/dir/run.sh".to_owned(),
            offset: 10,
            len: Some(4),
        })
        .unwrap();
    assert_eq!(range.content, "echo");
    assert_eq!(
        (range.offset, range.len, range.size, range.eof),
        (10, 4, 25, false)
    );
    let tail = ws
        .read(&FileRead {
            path: "deep/dir/run.sh".to_owned(),
            offset: 18,
            len: None,
        })
        .unwrap();
    assert_eq!(tail.content, "exit 0\n");
    assert!(tail.eof);

    let binary = base64::engine::general_purpose::STANDARD.encode([0u8, 159, 146, 150, 255]);
    ws.write(&FileWrite {
        encoding: Encoding::Base64,
        ..write_req("blob.bin", &binary)
    })
    .unwrap();
    let read = ws.read(&read_req("blob.bin")).unwrap();
    assert_eq!(read.encoding, Encoding::Base64);
    assert_eq!(read.content, binary);
    let err = ws
        .write(&FileWrite {
            encoding: Encoding::Base64,
            ..write_req("bad.bin", "not base64!")
        })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    let missing = ws.read(&read_req("nope.txt")).unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);
}

#[test]
fn list_stat_mkdir_move_remove() {
    let (_dir, ws) = workspace();
    ws.write(&write_req("src/main.rs", "fn main() {}\n"))
        .unwrap();
    ws.write(&write_req("src/util/mod.rs", "")).unwrap();
    ws.write(&write_req("README", "hi")).unwrap();
    ws.mkdir(&FileMkdir {
        path: "empty/nested".to_owned(),
        parents: true,
        mode: None,
    })
    .unwrap();

    let shallow = ws
        .list(&FileList {
            path: String::new(),
            depth: 1,
        })
        .unwrap();
    let names: Vec<_> = shallow.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["README", "empty", "src"]);
    let deep = ws
        .list(&FileList {
            path: "src".to_owned(),
            depth: 3,
        })
        .unwrap();
    let names: Vec<_> = deep.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["src/main.rs", "src/util", "src/util/mod.rs"]);
    assert_eq!(deep.entries[1].kind, FileKind::Dir);

    let info = ws.stat("src/main.rs").unwrap();
    assert_eq!((info.kind, info.size), (FileKind::File, 13));
    assert!(info.modified_ms > 0);

    ws.rename(&FileMove {
        from: "README".to_owned(),
        to: "docs/README.md".to_owned(),
        overwrite: false,
    })
    .unwrap();
    assert!(ws.root().join("docs/README.md").exists());
    ws.write(&write_req("other", "x")).unwrap();
    let clash = ws
        .rename(&FileMove {
            from: "other".to_owned(),
            to: "docs/README.md".to_owned(),
            overwrite: false,
        })
        .unwrap_err();
    assert_eq!(clash.code, ErrorCode::Conflict);

    let not_empty = ws
        .remove(&FileRemove {
            path: "src".to_owned(),
            recursive: false,
        })
        .unwrap_err();
    assert_eq!(not_empty.code, ErrorCode::ToolFailed, "{not_empty:?}");
    ws.remove(&FileRemove {
        path: "src".to_owned(),
        recursive: true,
    })
    .unwrap();
    assert!(!ws.root().join("src").exists());
    let root = ws
        .remove(&FileRemove {
            path: ".".to_owned(),
            recursive: true,
        })
        .unwrap_err();
    assert_eq!(root.code, ErrorCode::BadRequest);
    assert!(ws.root().exists());
}

#[test]
fn text_that_would_not_fit_a_frame_goes_as_base64() {
    // NUL bytes escape to six characters each in JSON.
    let text = "\0".repeat(MAX_FILE_READ);
    let (content, encoding) = encode_content(text.into_bytes());
    assert_eq!(encoding, Encoding::Base64);
    assert!(content.len() < MAX_CONTROL_FRAME);
    let (content, encoding) = encode_content(b"plain\n".to_vec());
    assert_eq!((content.as_str(), encoding), ("plain\n", Encoding::Utf8));
}

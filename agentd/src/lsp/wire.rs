//! The LSP vocabulary agentd speaks: the client capabilities it announces,
//! how a server wants changes sent, `file://` URIs, and positions counted
//! in UTF-16 code units applied to document text.

use std::path::Path;
use std::str::FromStr;

use lsp_types::{
    ClientCapabilities, CompletionClientCapabilities, DocumentSymbolClientCapabilities,
    GeneralClientCapabilities, GotoCapability, HoverClientCapabilities, MarkupKind,
    PositionEncodingKind, PublishDiagnosticsClientCapabilities, TextDocumentClientCapabilities,
    TextDocumentIdentifier, TextDocumentPositionParams, TextDocumentSyncClientCapabilities, Uri,
    WindowClientCapabilities, WorkspaceClientCapabilities, WorkspaceSymbolClientCapabilities,
};
use paddock_protocol::tools::{Position, TextChange};
use serde_json::Value;

use crate::tools::ToolError;

/// How a server wants document changes, from its `textDocumentSync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sync {
    None,
    Full,
    Incremental,
}

/// A `file://` URI for an absolute path, percent-encoding all but unreserved bytes.
pub(crate) fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file://");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(byte as char);
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

pub(super) fn lsp_uri(uri: &str) -> Result<Uri, ToolError> {
    Uri::from_str(uri).map_err(|err| ToolError::bad_request(format!("bad URI {uri}: {err}")))
}

pub(super) fn lsp_position(position: Position) -> lsp_types::Position {
    lsp_types::Position {
        line: position.line,
        character: position.character,
    }
}

pub(super) fn lsp_range(range: paddock_protocol::tools::Range) -> lsp_types::Range {
    lsp_types::Range {
        start: lsp_position(range.start),
        end: lsp_position(range.end),
    }
}

/// The byte offset of an LSP position in `text`, clamped to its line and end.
pub(super) fn offset_of(text: &str, position: Position) -> usize {
    let mut line_start = 0;
    for _ in 0..position.line {
        match text[line_start..].find('\n') {
            Some(i) => line_start += i + 1,
            None => return text.len(),
        }
    }
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let mut units = 0u32;
    for (i, c) in text[line_start..line_end].char_indices() {
        if units >= position.character {
            return line_start + i;
        }
        units += c.len_utf16() as u32;
    }
    line_end
}

pub(super) fn apply_change(text: &mut String, change: &TextChange) {
    match change.range {
        None => text.clone_from(&change.text),
        Some(range) => {
            let start = offset_of(text, range.start);
            let end = offset_of(text, range.end).max(start);
            text.replace_range(start..end, &change.text);
        }
    }
}

pub(super) fn sync_kind(capabilities: &Value) -> Sync {
    let sync = &capabilities["textDocumentSync"];
    let kind = sync.as_u64().or_else(|| sync["change"].as_u64());
    match kind {
        Some(1) => Sync::Full,
        Some(2) => Sync::Incremental,
        _ => Sync::None,
    }
}

pub(super) fn client_capabilities() -> ClientCapabilities {
    let goto = Some(GotoCapability {
        dynamic_registration: Some(false),
        link_support: Some(true),
    });
    ClientCapabilities {
        workspace: Some(WorkspaceClientCapabilities {
            apply_edit: Some(false),
            workspace_folders: Some(true),
            configuration: Some(true),
            symbol: Some(WorkspaceSymbolClientCapabilities {
                dynamic_registration: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }),
        text_document: Some(TextDocumentClientCapabilities {
            synchronization: Some(TextDocumentSyncClientCapabilities {
                dynamic_registration: Some(false),
                will_save: Some(false),
                will_save_wait_until: Some(false),
                did_save: Some(false),
            }),
            completion: Some(CompletionClientCapabilities {
                dynamic_registration: Some(false),
                ..Default::default()
            }),
            hover: Some(HoverClientCapabilities {
                dynamic_registration: Some(false),
                content_format: Some(vec![MarkupKind::Markdown, MarkupKind::PlainText]),
            }),
            references: Some(lsp_types::ReferenceClientCapabilities {
                dynamic_registration: Some(false),
            }),
            document_symbol: Some(DocumentSymbolClientCapabilities {
                dynamic_registration: Some(false),
                hierarchical_document_symbol_support: Some(true),
                ..Default::default()
            }),
            definition: goto,
            declaration: goto,
            publish_diagnostics: Some(PublishDiagnosticsClientCapabilities {
                related_information: Some(true),
                version_support: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }),
        window: Some(WindowClientCapabilities {
            work_done_progress: Some(false),
            ..Default::default()
        }),
        general: Some(GeneralClientCapabilities {
            position_encodings: Some(vec![PositionEncodingKind::UTF16]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn position_params(
    uri: &str,
    position: Position,
) -> Result<TextDocumentPositionParams, ToolError> {
    Ok(TextDocumentPositionParams {
        text_document: TextDocumentIdentifier { uri: lsp_uri(uri)? },
        position: lsp_position(position),
    })
}

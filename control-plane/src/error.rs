//! The HTTP API's one error type: a stable JSON body for clients, the cause
//! logged once on the server for internal failures only.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_protocol::api::{ErrorBody, ErrorDetail};
use paddock_protocol::ErrorCode;

use crate::hub::HubError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal() -> Self {
        Self::new(
            ErrorCode::Internal,
            "internal error; see the control plane's log",
        )
    }

    pub fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict
            | ErrorCode::SandboxDisconnected
            | ErrorCode::DriverExists
            | ErrorCode::SessionEnded => StatusCode::CONFLICT,
            ErrorCode::SpawnFailed | ErrorCode::ToolFailed | ErrorCode::AuthFailed => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorCode::PathEscape => StatusCode::BAD_REQUEST,
            ErrorCode::QuotaExceeded | ErrorCode::BudgetExceeded | ErrorCode::LimitExceeded => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::AgentRestricted => StatusCode::FORBIDDEN,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NonFastForward | ErrorCode::Cancelled => StatusCode::CONFLICT,
            ErrorCode::UnsupportedVersion => StatusCode::BAD_REQUEST,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Internal | ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::DuplicateName(name) => ApiError::new(
                ErrorCode::Conflict,
                format!("a sandbox named `{name}` already exists; choose another name"),
            ),
            other => {
                tracing::error!(error = %other, "storage failure");
                ApiError::internal()
            }
        }
    }
}

impl From<HubError> for ApiError {
    fn from(err: HubError) -> Self {
        match err {
            HubError::Disconnected(id) => ApiError::new(
                ErrorCode::SandboxDisconnected,
                format!("sandbox {id} is not connected; is its agentd running?"),
            ),
            HubError::Timeout(id) => ApiError::new(
                ErrorCode::Timeout,
                format!("sandbox {id} did not answer in time"),
            ),
            HubError::Refused { code, message } => ApiError::new(code, message),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        // A body cut by the body limit (one sent without a length).
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            crate::admission::count_refusal(crate::admission::limit::BODY_SIZE);
            return crate::admission::too_large(None);
        }
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<crate::governance::GovernanceError> for ApiError {
    fn from(err: crate::governance::GovernanceError) -> Self {
        use crate::governance::GovernanceError;
        match err {
            GovernanceError::Refused(refusal) => {
                let code = match refusal.code() {
                    "quota_exceeded" => ErrorCode::QuotaExceeded,
                    "budget_exceeded" => ErrorCode::BudgetExceeded,
                    _ => ErrorCode::AgentRestricted,
                };
                ApiError::new(code, refusal.to_string())
            }
            GovernanceError::Invalid(message) => ApiError::bad_request(message),
            GovernanceError::Store(err) => err.into(),
        }
    }
}
